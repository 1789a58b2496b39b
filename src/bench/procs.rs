//! The processes `rapr bench` starts and measures: sidecars, the echo app, nginx. Each is pinned
//! to the system-under-test cores (with `taskset`) while the generator keeps its own core, is read
//! for CPU time and RSS from /proc, and is killed when dropped so a failed run leaves nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which cores the generator and the system under test run on.
#[derive(Debug, Clone)]
pub struct Pinning {
    /// The generator's core (`None`: not pinned).
    pub load: Option<usize>,
    /// `taskset -c` list for the system under test (`None`: not pinned).
    pub sut: Option<String>,
}

impl Pinning {
    /// Generator on core 0, everything measured on the others, when there are at least two
    /// cores and `taskset` exists; otherwise nothing is pinned.
    pub fn detect(disabled: bool) -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let taskset = Command::new("taskset").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
        if disabled || cores < 2 || !taskset {
            return Pinning { load: None, sut: None };
        }
        let sut = if cores == 2 { "1".to_string() } else { format!("1-{}", cores - 1) };
        Pinning { load: Some(0), sut: Some(sut) }
    }

    /// Pins the calling thread (and the threads it starts later) to the generator's core.
    pub fn pin_generator(&self) {
        if let Some(core) = self.load {
            let mut set = nix::sched::CpuSet::new();
            if set.set(core).is_ok() {
                let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
            }
        }
    }

    /// A command for `program`, run under `taskset` on the measured cores when pinning.
    pub fn command(&self, program: &Path) -> Command {
        match &self.sut {
            Some(list) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(list).arg(program);
                c
            }
            None => Command::new(program),
        }
    }
}

/// A started process, killed on drop.
pub struct Proc {
    /// What it is, for messages.
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with its output in `<dir>/<name>.log`.
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Result<Proc, String> {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().map_err(|e| format!("starting {name}: {e}"))?;
        Ok(Proc { name: name.to_string(), child, log })
    }

    /// The process id (`taskset` execs the program, so it is the program's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of its output, for error messages.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Fails with its output if it has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(format!("{} exited ({status}):\n{}", self.name, self.tail())),
            _ => Ok(()),
        }
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// User + system CPU time so far.
    pub fn cpu(&self) -> Duration {
        cpu_time(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmRSS of `pid` in KiB (0 if gone).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}

/// (RssAnon, RssFile, Pss) of `pid` in KiB: the process's own memory, the mapped binary and
/// libraries (shared by every process running them), and its proportional share of both.
pub fn memory_split(pid: u32) -> (u64, u64, u64) {
    let field = |text: &str, name: &str| text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    (field(&status, "RssAnon:"), field(&status, "RssFile:"), field(&rollup, "Pss:"))
}

/// utime + stime of `pid` (zero if gone).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after its closing ')' are fixed.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return Duration::ZERO };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok())).sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().filter(|v| *v > 0).unwrap_or(100) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// `N` distinct free TCP ports on loopback from the crate's one allocator (`net_ports`: never the
/// same twice in this process, never from the kernel's ephemeral range).
pub fn free_ports<const N: usize>() -> Result<[u16; N], String> {
    crate::net_ports::free_ports().map_err(|e| format!("no free port: {e}"))
}

/// Runs `start` again (up to 3 times) when it failed because a port it picked was taken in the
/// meantime: a port is free when picked, but any outgoing connection may get it before the
/// process binds it.
pub async fn retry_in_use<T, F, Fut>(mut start: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut attempt = 0;
    loop {
        match start().await {
            Err(e) if attempt < 2 && crate::net_ports::is_addr_in_use(&e) => attempt += 1,
            other => return other,
        }
    }
}

/// Waits until something accepts on `port`, failing with the process's output if it exits.
pub async fn wait_port(p: &mut Proc, port: u16, deadline: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).await.is_ok() {
            return Ok(());
        }
        p.check_alive()?;
        if start.elapsed() > deadline {
            return Err(format!("{} did not listen on {port} within {deadline:?}:\n{}", p.name, p.tail()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `GET http://127.0.0.1:{port}{path}` answers 2xx; returns how long it took.
pub async fn wait_http_ok(p: &mut Proc, port: u16, path: &str, deadline: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}{path}");
    loop {
        if let Ok(r) = client.get(&url).send().await {
            if r.status().is_success() {
                return Ok(start.elapsed());
            }
        }
        p.check_alive()?;
        if start.elapsed() > deadline {
            return Err(format!("{} was not ready ({url}) within {deadline:?}:\n{}", p.name, p.tail()));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// CPU and memory of a set of processes over a measured window.
pub struct Usage {
    start: Instant,
    cpu: Vec<Duration>,
}

/// What `Usage::finish` reports for each process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcUsage {
    /// CPU time over the window as a percentage of one core.
    pub cpu_pct: f64,
    /// RSS at the end of the window, KiB.
    pub rss_kib: u64,
}

impl Usage {
    /// Starts measuring `procs`.
    pub fn begin(procs: &[&Proc]) -> Usage {
        Usage { start: Instant::now(), cpu: procs.iter().map(|p| p.cpu()).collect() }
    }

    /// Per-process CPU% and RSS since `begin`.
    pub fn finish(&self, procs: &[&Proc]) -> Vec<ProcUsage> {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        procs.iter().zip(&self.cpu).map(|(p, before)| ProcUsage { cpu_pct: (p.cpu().saturating_sub(*before)).as_secs_f64() / secs * 100.0, rss_kib: p.rss_kib() }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_rss_and_cpu() {
        let me = std::process::id();
        assert!(rss_kib(me) > 0);
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(t.elapsed());
        }
        assert!(cpu_time(me) > Duration::ZERO);
    }
}
