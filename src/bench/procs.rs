//! The processes `rapr bench` starts and measures: sidecars, the echo app, nginx. Each is pinned
//! to the system-under-test cores (with `taskset`) while the generator keeps its own core, is read
//! for CPU time (user and system), context switches and RSS from /proc, and is killed when dropped
//! so a failed run leaves nothing. `Pinning` can also put a wrapper (valgrind, for `bench cost`)
//! between `taskset` and the program.

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
    /// A command line every measured program runs under (empty: none), e.g. callgrind.
    pub wrapper: Vec<String>,
}

impl Pinning {
    /// Generator on core 0, everything measured on the others, when there are at least two
    /// cores and `taskset` exists; otherwise nothing is pinned.
    pub fn detect(disabled: bool) -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let taskset = Command::new("taskset").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
        if disabled || cores < 2 || !taskset {
            return Pinning { load: None, sut: None, wrapper: Vec::new() };
        }
        let sut = if cores == 2 { "1".to_string() } else { format!("1-{}", cores - 1) };
        Pinning { load: Some(0), sut: Some(sut), wrapper: Vec::new() }
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

    /// A command for `program`, run under `taskset` on the measured cores when pinning, and
    /// under the wrapper if any (`taskset` and valgrind both keep the process id).
    pub fn command(&self, program: &Path) -> Command {
        let mut line: Vec<std::ffi::OsString> = Vec::new();
        if let Some(list) = &self.sut {
            line.extend(["taskset".into(), "-c".into(), list.into()]);
        }
        line.extend(self.wrapper.iter().map(Into::into));
        line.push(program.into());
        let mut c = Command::new(&line[0]);
        c.args(&line[1..]);
        c
    }

    /// How long a started process may take to get ready: a wrapped one (valgrind) starts
    /// many times slower.
    pub fn startup_deadline(&self, normal: Duration) -> Duration {
        if self.wrapper.is_empty() {
            normal
        } else {
            normal * 20
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

    /// CPU time and context switches so far, with the process's descendants.
    pub fn counters(&self) -> Counters {
        counters(self.pid())
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

/// (minor, major) page faults of `pid` so far (/proc/<pid>/stat; zero if gone): how many pages
/// it touched for the first time, the binary's included.
pub fn page_faults(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return (0, 0) };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let at = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (at(7), at(9))
}

/// utime + stime of `pid` (zero if gone).
pub fn cpu_time(pid: u32) -> Duration {
    let (user, sys) = cpu_split(pid);
    user + sys
}

/// (utime, stime) of `pid`, every thread included (zero if gone).
pub fn cpu_split(pid: u32) -> (Duration, Duration) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after its closing ')' are fixed.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return (Duration::ZERO, Duration::ZERO) };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().filter(|v| *v > 0).unwrap_or(100) as u64;
    let at = |i: usize| Duration::from_nanos(fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 1_000_000_000 / hz);
    (at(11), at(12))
}

/// CPU time and context switches of a process and its live descendants.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    /// User CPU time.
    pub user: Duration,
    /// System (kernel) CPU time.
    pub sys: Duration,
    /// Voluntary + involuntary context switches, summed over every thread.
    pub switches: u64,
}

/// `pid`'s counters plus those of every process it started (a forking server's workers).
/// Threads or children that exit within a window take their counts with them: the measured
/// servers keep theirs for their lifetime.
pub fn counters(pid: u32) -> Counters {
    let mut c = Counters::default();
    for p in with_descendants(pid) {
        let (user, sys) = cpu_split(p);
        c.user += user;
        c.sys += sys;
        c.switches += thread_switches(p);
    }
    c
}

/// `pid` and its descendants, from /proc/<pid>/task/<tid>/children.
fn with_descendants(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() && out.len() < 1024 {
        let p = out[i];
        i += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else { continue };
        for t in tasks.flatten() {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(kids.split_whitespace().filter_map(|k| k.parse::<u32>().ok()).filter(|k| !out.contains(k)).collect::<Vec<_>>());
        }
    }
    out
}

/// Context switches of every thread of `pid` (/proc/<pid>/task/*/status).
fn thread_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks.flatten().map(|t| switches_in_status(&std::fs::read_to_string(t.path().join("status")).unwrap_or_default())).sum()
}

/// voluntary + nonvoluntary context switches in a /proc status text.
pub fn switches_in_status(status: &str) -> u64 {
    status
        .lines()
        .filter_map(|l| l.strip_prefix("voluntary_ctxt_switches:").or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:")))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .sum()
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

/// CPU, context switches and memory of a set of processes over a measured window.
pub struct Usage {
    start: Instant,
    before: Vec<Counters>,
}

/// What `Usage::finish` reports for each process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcUsage {
    /// CPU time over the window as a percentage of one core.
    pub cpu_pct: f64,
    /// The user-space part of `cpu_pct`.
    pub user_pct: f64,
    /// The kernel part of `cpu_pct`.
    pub sys_pct: f64,
    /// Context switches per second over the window.
    pub switches_per_s: f64,
    /// RSS at the end of the window, KiB.
    pub rss_kib: u64,
}

impl Usage {
    /// Starts measuring `procs`.
    pub fn begin(procs: &[&Proc]) -> Usage {
        Usage { start: Instant::now(), before: procs.iter().map(|p| p.counters()).collect() }
    }

    /// Per-process CPU% (user, system), context-switch rate and RSS since `begin`. Rates, not
    /// totals: the report divides them by the request rate of the same window, which is per
    /// request even when this window started a tick after the load's measured one.
    pub fn finish(&self, procs: &[&Proc]) -> Vec<ProcUsage> {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        procs
            .iter()
            .zip(&self.before)
            .map(|(p, before)| {
                let now = p.counters();
                let pct = |a: Duration, b: Duration| a.saturating_sub(b).as_secs_f64() / secs * 100.0;
                let (user_pct, sys_pct) = (pct(now.user, before.user), pct(now.sys, before.sys));
                ProcUsage { cpu_pct: user_pct + sys_pct, user_pct, sys_pct, switches_per_s: now.switches.saturating_sub(before.switches) as f64 / secs, rss_kib: p.rss_kib() }
            })
            .collect()
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
        let c = counters(me);
        assert!(c.user > Duration::ZERO && c.switches > 0, "{c:?}");
    }

    #[test]
    fn switches_sum_both_kinds() {
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t150\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(switches_in_status(status), 157);
        assert_eq!(switches_in_status(""), 0);
    }

    #[test]
    fn a_wrapper_goes_between_taskset_and_the_program() {
        let pin = Pinning { load: Some(0), sut: Some("1".into()), wrapper: vec!["valgrind".into(), "-q".into()] };
        let c = pin.command(Path::new("/bin/rapr"));
        assert_eq!(c.get_program(), "taskset");
        let args: Vec<_> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args, ["-c", "1", "valgrind", "-q", "/bin/rapr"]);
    }
}
