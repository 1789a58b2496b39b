//! The two outside tools `rapr bench cost` counts with, and the parsers of what they write:
//! `strace -c -f` attached to a running process (system calls over a fixed run), and callgrind
//! driven by `callgrind_control` (user-space instructions over a fixed run). Both are Debian
//! packages, installed when missing as the baselines are (`debian`). Kept apart from the scenario so the parsers
//! are unit-tested on the tools' real output shapes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Finds `tool` where Debian puts it, installing `package` when missing (as the baselines).
pub fn ensure_tool(tool: &str, package: &str) -> Result<(), String> {
    super::debian::ensure(package, &[&format!("/usr/bin/{tool}"), &format!("/usr/local/bin/{tool}")]).map(|_| ())
}

/// The valgrind command line a measured process runs under: callgrind with instrumentation
/// off until `callgrind_control -i on` (so start-up and warm-up run at near native speed),
/// one output file per process id (`%p`; taskset and valgrind keep the id of the process).
///
/// `--instr-atstart=no` rather than `--collect-atstart=no`: with collection off at start,
/// nothing is ever counted unless a `--toggle-collect` function runs, and `callgrind_control`
/// cannot switch collection on; switching instrumentation on starts counting at once.
pub fn callgrind_wrapper(dir: &Path) -> Vec<String> {
    vec!["valgrind".into(), "--tool=callgrind".into(), "--instr-atstart=no".into(), format!("--callgrind-out-file={}/callgrind.%p.out", dir.display())]
}

/// Sends one `callgrind_control` command (`-i on`, `-z`, `-d`, ...) to `pid`.
pub fn callgrind_control(pid: u32, args: &[&str]) -> Result<(), String> {
    let out = Command::new("callgrind_control").args(args).arg(pid.to_string()).output().map_err(|e| format!("callgrind_control: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("not detected") {
        return Err(format!("callgrind_control {} {pid}: {}{}", args.join(" "), text.trim(), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// Dumps `pid`'s counts since the last dump or zeroing, and returns the dump's total `Ir`.
/// Each dump is a new part file (`callgrind.<pid>.out.<n>`): the newest one is read, once it
/// holds its totals line.
pub async fn callgrind_dump(dir: &Path, pid: u32) -> Result<u64, String> {
    let before = newest_part(dir, pid).map(|(n, _)| n).unwrap_or(0);
    callgrind_control(pid, &["-d"])?;
    let start = Instant::now();
    loop {
        if let Some((n, path)) = newest_part(dir, pid).filter(|(n, _)| *n > before) {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if let Some(ir) = callgrind_total(&text) {
                return Ok(ir);
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!("callgrind dump {n} of {pid} has no totals line"));
            }
        } else if start.elapsed() > Duration::from_secs(30) {
            return Err(format!("callgrind wrote no dump for {pid} in {}", dir.display()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The highest-numbered part file of `pid`'s callgrind output.
fn newest_part(dir: &Path, pid: u32) -> Option<(u32, PathBuf)> {
    let prefix = format!("callgrind.{pid}.out.");
    std::fs::read_dir(dir).ok()?.flatten().filter_map(|e| e.file_name().to_str()?.strip_prefix(&prefix)?.parse::<u32>().ok().map(|n| (n, e.path()))).max_by_key(|(n, _)| *n)
}

/// The total instruction count (`Ir`, the first event) of a callgrind output file: its
/// `totals:` line, or `summary:` when a version writes only that.
pub fn callgrind_total(text: &str) -> Option<u64> {
    let first = |prefix: &str| text.lines().find_map(|l| l.strip_prefix(prefix)).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok());
    first("totals:").or_else(|| first("summary:"))
}

/// `strace -c -f` attached to a running process, counting its system calls (every thread).
pub struct Strace {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Strace {
    /// Attaches to `pid` (output in `<dir>/strace-<name>.txt`) and waits until every thread is
    /// attached, so the run that follows is counted whole.
    pub async fn attach(dir: &Path, name: &str, pid: u32) -> Result<Strace, String> {
        let out = dir.join(format!("strace-{name}.txt"));
        let err = dir.join(format!("strace-{name}.err"));
        let log = std::fs::File::create(&err).map_err(|e| format!("{}: {e}", err.display()))?;
        let child = Command::new("strace").args(["-c", "-f", "-o"]).arg(&out).args(["-p", &pid.to_string()]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn().map_err(|e| format!("strace: {e}"))?;
        let mut s = Strace { child, out, err };
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&s.err).unwrap_or_default();
            if text.contains("attached") {
                return Ok(s);
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                return Err(format!("strace -p {pid} exited ({status}): {}", text.trim()));
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(format!("strace did not attach to {pid}: {}", text.trim()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Detaches (SIGINT makes strace write its summary) and returns the total calls.
    pub async fn finish(mut self) -> Result<u64, String> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).map_err(|e| e.to_string())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).map_err(|e| format!("stopping strace: {e}"))?;
        let start = Instant::now();
        while self.child.try_wait().map_err(|e| e.to_string())?.is_none() {
            if start.elapsed() > Duration::from_secs(30) {
                return Err("strace did not exit after SIGINT".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let text = std::fs::read_to_string(&self.out).map_err(|e| format!("{}: {e}", self.out.display()))?;
        strace_total_calls(&text).ok_or_else(|| format!("no total line in {}:\n{text}", self.out.display()))
    }
}

impl Drop for Strace {
    fn drop(&mut self) {
        // An attached strace left behind would keep the process traced: kill it (it detaches).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The total number of calls in a `strace -c` summary: the `calls` column (the fourth) of the
/// `total` line; the `errors` column before the name is empty when nothing failed.
pub fn strace_total_calls(text: &str) -> Option<u64> {
    let line = text.lines().rev().find(|l| l.split_whitespace().last() == Some("total"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strace_summary_total_calls() {
        let text = "% time     seconds  usecs/call     calls    errors syscall\n\
                    ------ ----------- ----------- --------- --------- ----------------\n\
                    \x20 1.52    0.001121           6       161           write\n\
                    \x20 0.24    0.000180           1       100           fcntl\n\
                    ------ ----------- ----------- --------- --------- ----------------\n\
                    100.00    0.073792          32      2284       145 total\n";
        assert_eq!(strace_total_calls(text), Some(2284));
        let no_errors = "100.00    0.000300           3       100           total\n";
        assert_eq!(strace_total_calls(no_errors), Some(100));
        assert_eq!(strace_total_calls("strace: attach: ptrace(PTRACE_SEIZE, 1): Operation not permitted\n"), None);
    }

    #[test]
    fn callgrind_totals_line() {
        let text = "version: 1\ncreator: callgrind-3.19.0\npid: 24999\ncmd:  ./rapr bench-echo\npart: 1\n\nevents: Ir\n\nfl=(1)\nfn=(1)\n0 3\nsummary: 47032567\n\n\ntotals: 47032570\n";
        assert_eq!(callgrind_total(text), Some(47032570));
        assert_eq!(callgrind_total("events: Ir\nsummary: 8246\n"), Some(8246));
        assert_eq!(callgrind_total("events: Ir\n"), None);
    }

    #[test]
    fn callgrind_output_per_process_id() {
        let w = callgrind_wrapper(Path::new("/tmp/b"));
        assert_eq!(w[..3], ["valgrind", "--tool=callgrind", "--instr-atstart=no"]);
        assert_eq!(w[3], "--callgrind-out-file=/tmp/b/callgrind.%p.out");
    }
}
