//! The app process of `rapr run`, as the Dapr CLI 1.18 starts and stops it.
//!
//! - It runs in a process group of its own (`setpgid`), so a stop reaches everything it started:
//!   `sh -c`, `npm start` or `go run` leave the real app as a grandchild, which a signal to the
//!   direct child alone would leak. A stop sends SIGTERM to the group, waits up to 5 s for the
//!   group to be gone, then sends SIGKILL (the CLI's `killProcessGroup`). The group is also
//!   cleared after the app exits on its own, so a background job it left does not outlive it.
//! - One app (`rapr run -- CMD`) inherits the terminal's stdin, stdout and stderr: no pipe, no
//!   prefix. CLI 1.17 dropped both because a pipe makes the Python workflow SDK hang.
//! - Apps of a run file (`rapr run -f`) are piped, each line prefixed `== APP - <id> == ` and
//!   written to the console, the app's log file, or both (`appLogDestination`), as the CLI does.

use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// How long a stopped group has between SIGTERM and SIGKILL (the CLI's grace period).
const GRACE: Duration = Duration::from_secs(5);

/// Where the app's output goes.
#[derive(Debug, Clone)]
pub enum AppOutput {
    /// The terminal's own stdin, stdout and stderr (one app).
    Inherit,
    /// Each line prefixed, to the console and/or a log file (an app of a run file).
    Prefixed {
        /// The prefix, `== APP - <id> == `.
        prefix: String,
        /// Also on the console.
        console: bool,
        /// The app's log file, if any.
        file: Option<Arc<File>>,
    },
}

/// How the app ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppExit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

impl AppExit {
    fn of(status: std::io::Result<ExitStatus>) -> Self {
        use std::os::unix::process::ExitStatusExt as _;
        match status {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(c), _) => AppExit::Code(c),
                (None, Some(sig)) => AppExit::Signal(sig),
                (None, None) => AppExit::Code(1),
            },
            Err(e) => {
                tracing::warn!(error = %e, "waiting for the app failed");
                AppExit::Code(1)
            }
        }
    }

    /// The exit code `rapr run` returns for it: the app's own, or 128 + the signal as a shell
    /// reports it.
    pub fn code(self) -> i32 {
        match self {
            AppExit::Code(c) => c,
            AppExit::Signal(s) => 128 + s,
        }
    }

    /// The CLI's line for an app that ended on its own (`Exited App successfully` only for 0).
    pub fn report(self) {
        match self {
            AppExit::Code(0) => super::status::success("Exited App successfully"),
            AppExit::Code(c) => super::status::failure(&format!("The App process exited with error code: {c}")),
            AppExit::Signal(s) => super::status::failure(&format!("The App process was terminated by signal: {}", signal_name(s))),
        }
    }
}

/// Go's name for a signal (`syscall.Signal.String()`), as the CLI prints it.
fn signal_name(sig: i32) -> String {
    match Signal::try_from(sig) {
        Ok(Signal::SIGTERM) => "terminated".into(),
        Ok(Signal::SIGKILL) => "killed".into(),
        Ok(Signal::SIGINT) => "interrupt".into(),
        Ok(Signal::SIGHUP) => "hangup".into(),
        Ok(Signal::SIGQUIT) => "quit".into(),
        Ok(Signal::SIGABRT) => "aborted".into(),
        Ok(Signal::SIGSEGV) => "segmentation fault".into(),
        Ok(Signal::SIGPIPE) => "broken pipe".into(),
        _ => format!("signal {sig}"),
    }
}

/// A started app.
pub struct AppProcess {
    child: Child,
    pgid: Option<Pid>,
    pipes: Vec<JoinHandle<()>>,
    exit: Option<AppExit>,
}

/// What to start.
pub struct AppSpec<'a> {
    /// Program and arguments.
    pub command: &'a [String],
    /// Environment added to rapr's own.
    pub env: &'a [(String, String)],
    /// Working directory.
    pub dir: Option<&'a PathBuf>,
    /// Where its output goes.
    pub output: &'a AppOutput,
}

async fn pipe(stream: impl AsyncRead + Unpin, prefix: String, console: bool, to_stderr: bool, file: Option<Arc<File>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = format!("{prefix}{line}\n");
        if console {
            // One write per line: lines of concurrent apps never interleave.
            let _ = if to_stderr { std::io::stderr().lock().write_all(line.as_bytes()) } else { std::io::stdout().lock().write_all(line.as_bytes()) };
        }
        if let Some(f) = &file {
            let _ = (&**f).write_all(line.as_bytes());
        }
    }
}

impl AppProcess {
    /// Starts the app in a process group of its own.
    pub fn spawn(spec: AppSpec<'_>) -> std::io::Result<Self> {
        let (program, args) = spec.command.split_first().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no command"))?;
        let mut cmd = Command::new(program);
        cmd.args(args).envs(spec.env.iter().map(|(k, v)| (k, v))).process_group(0).kill_on_drop(false);
        if let Some(d) = spec.dir {
            cmd.current_dir(d);
        }
        match spec.output {
            AppOutput::Inherit => {
                cmd.stdin(Stdio::inherit()).stdout(Stdio::inherit()).stderr(Stdio::inherit());
            }
            AppOutput::Prefixed { .. } => {
                cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
            }
        }
        let mut child = cmd.spawn()?;
        let pgid = child.id().and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw);
        let mut pipes = Vec::new();
        if let AppOutput::Prefixed { prefix, console, file } = spec.output {
            pipes.extend(child.stdout.take().map(|s| tokio::spawn(pipe(s, prefix.clone(), *console, false, file.clone()))));
            pipes.extend(child.stderr.take().map(|s| tokio::spawn(pipe(s, prefix.clone(), *console, true, file.clone()))));
        }
        Ok(Self { child, pgid, pipes, exit: None })
    }

    /// The app's pid (its group's id).
    pub fn pid(&self) -> u32 {
        self.pgid.map(|p| p.as_raw().unsigned_abs()).unwrap_or(0)
    }

    /// Resolves when the app exits on its own; cancel-safe.
    pub async fn wait(&mut self) -> AppExit {
        if let Some(e) = self.exit {
            return e;
        }
        let e = AppExit::of(self.child.wait().await);
        self.exit = Some(e);
        e
    }

    /// Stops the app's whole group: SIGTERM, up to 5 s, then SIGKILL. Returns how the app
    /// ended (it may have exited before). Also clears a group whose leader already exited.
    pub async fn stop(&mut self) -> AppExit {
        if let Some(pgid) = self.pgid {
            let _ = killpg(pgid, Signal::SIGTERM);
            let start = Instant::now();
            loop {
                // The leader is reaped here, so a zombie leader never keeps the group "alive".
                if self.exit.is_none() {
                    if let Ok(Some(s)) = self.child.try_wait() {
                        self.exit = Some(AppExit::of(Ok(s)));
                    }
                }
                if self.exit.is_some() && !group_alive(pgid) {
                    break;
                }
                if start.elapsed() >= GRACE {
                    let _ = killpg(pgid, Signal::SIGKILL);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let e = self.wait().await;
        for t in self.pipes.drain(..) {
            let _ = t.await;
        }
        e
    }
}

fn group_alive(pgid: Pid) -> bool {
    match killpg(pgid, None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_lines() {
        assert_eq!(AppExit::Code(3).code(), 3);
        assert_eq!(AppExit::Signal(9).code(), 137);
        assert_eq!(signal_name(15), "terminated");
        assert_eq!(signal_name(9), "killed");
    }

    #[tokio::test]
    async fn a_stop_reaches_the_background_children_of_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 100 & echo $! > {}; wait", pidfile.display());
        let cmd = vec!["sh".to_string(), "-c".to_string(), script];
        let mut app = AppProcess::spawn(AppSpec { command: &cmd, env: &[], dir: None, output: &AppOutput::Prefixed { prefix: String::new(), console: false, file: None } }).unwrap();
        let mut sleeper = None;
        for _ in 0..100 {
            if let Some(p) = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
                sleeper = Some(p);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let sleeper = Pid::from_raw(sleeper.expect("the shell wrote its child's pid"));
        assert!(nix::sys::signal::kill(sleeper, None).is_ok());
        let exit = app.stop().await;
        assert_eq!(exit, AppExit::Signal(15), "sh ends by the SIGTERM");
        // The sleeper was in the group: it got SIGTERM too (and, orphaned, was reaped by init).
        let mut gone = false;
        for _ in 0..50 {
            if nix::sys::signal::kill(sleeper, None).is_err() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(gone, "the background child of the shell outlived the stop");
    }
}
