//! The embedded control plane of `rapr run` (issue 14 A.8): a `rapr control-plane` daemon on
//! daprd's default placement port (50005, `--placement-port` / `RAPR_PLACEMENT_PORT`), its data
//! in `~/.rapr/control-plane` (or `--data-dir`), as `dapr init` leaves its placement container
//! running for every `dapr run`.
//!
//! The daemon's record (`control-plane.json`: pid and addresses) is the one truth about it:
//! - `rapr run` takes the directory's lock (`control-plane.lock`), uses the recorded daemon when
//!   its process is alive and healthy, and otherwise starts one and waits for its record, still
//!   under the lock, so two runs starting at once start one daemon.
//! - The daemon (`rapr control-plane --record FILE`) writes the record once it serves and checks
//!   it twice a second: removed, or naming another process, it stops. So deleting the directory
//!   stops it, and a test's private directory never leaves a daemon behind.
//! - `rapr stop --control-plane` stops the recorded daemon (SIGTERM, then SIGKILL after 10 s).
//!
//! It runs in its own process group, so Ctrl-C in the terminal of the `rapr run` that started it
//! leaves it running; it stays until `rapr stop --control-plane`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::runs::alive;
use crate::config::rapr_home;
use crate::placement::server::PlacementArgs;

const RECORD: &str = "control-plane.json";
const LOCK: &str = "control-plane.lock";
const LOG: &str = "control-plane.log";
/// How long `rapr run` waits for a daemon it started to serve.
const START_DEADLINE: Duration = Duration::from_secs(15);
/// How long `rapr stop --control-plane` waits after SIGTERM before SIGKILL.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// How often the daemon checks its record.
const RECORD_CHECK: Duration = Duration::from_millis(500);

/// The running daemon, as its record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneRecord {
    pub pid: u32,
    /// The placement address sidecars dial (`host:port`).
    pub placement: String,
    /// The health server (`host:port`).
    pub healthz: String,
    /// Start time, seconds since the Unix epoch.
    pub started: u64,
}

/// Flags of `rapr control-plane`.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlPlaneArgs {
    #[command(flatten)]
    pub placement: PlacementArgs,
    /// Write this process's record here once it serves, and stop when the file is removed or
    /// names another process (how `rapr run` keeps its embedded control plane).
    #[arg(long = "record", hide = true)]
    pub record: Option<PathBuf>,
}

/// The embedded control plane's directory: `--data-dir`, else `~/.rapr/control-plane`.
pub fn dir(data_dir: Option<&Path>) -> PathBuf {
    data_dir.map(Path::to_path_buf).unwrap_or_else(|| rapr_home().join("control-plane"))
}

fn read_record(path: &Path) -> Option<ControlPlaneRecord> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Written whole or not at all (a reader never sees half a record).
fn write_record(path: &Path, rec: &ControlPlaneRecord) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", rec.pid));
    std::fs::write(&tmp, serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, path)
}

async fn healthy(healthz: &str) -> bool {
    let url = format!("http://{healthz}/healthz");
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(1)).build();
    match client {
        Ok(c) => c.get(url).send().await.is_ok_and(|r| r.status().is_success()),
        Err(_) => false,
    }
}

/// `host` as a client dials it: a wildcard listen address is reached on loopback.
fn dial_host(listen: &str) -> &str {
    match listen {
        "" | "0.0.0.0" | "::" | "[::]" => "127.0.0.1",
        h => h,
    }
}

/// `rapr control-plane`: every control-plane service (today placement) in this process; the
/// exit code.
pub async fn run_control_plane(args: ControlPlaneArgs) -> i32 {
    let stop = CancellationToken::new();
    let keeper = args.record.clone().map(|path| {
        let p = &args.placement;
        let rec = ControlPlaneRecord {
            pid: std::process::id(),
            placement: format!("{}:{}", dial_host(&p.listen_address), p.port),
            healthz: format!("{}:{}", dial_host(&p.healthz_listen_address), p.healthz_port),
            started: super::runs::now(),
        };
        tokio::spawn(keep_record(path, rec, stop.clone()))
    });
    let code = match crate::placement::server::serve(args.placement, stop.clone(), true).await {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("rapr control-plane: {e}");
            1
        }
    };
    stop.cancel();
    if let (Some(k), Some(path)) = (keeper, &args.record) {
        let _ = k.await;
        if read_record(path).is_some_and(|r| r.pid == std::process::id()) {
            let _ = std::fs::remove_file(path);
        }
    }
    code
}

/// Writes the record once the services answer, then stops the process when it is gone.
async fn keep_record(path: PathBuf, rec: ControlPlaneRecord, stop: CancellationToken) {
    while !healthy(&rec.healthz).await {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    if let Err(e) = write_record(&path, &rec) {
        tracing::error!(path = %path.display(), error = %e, "cannot write the control plane's record; stopping");
        stop.cancel();
        return;
    }
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RECORD_CHECK) => {}
        }
        if read_record(&path).is_none_or(|r| r.pid != rec.pid) {
            tracing::info!(path = %path.display(), "the control plane's record was removed or replaced; stopping");
            stop.cancel();
            return;
        }
    }
}

/// Holds the directory's lock until dropped.
async fn lock(dir: &Path) -> Result<std::fs::File, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(LOCK);
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot lock {}: {e}", path.display()))
}

/// The daemon of `dir`, started when there is none (or its process is gone); its record.
pub async fn ensure(dir: &Path, placement_port: u16) -> Result<ControlPlaneRecord, String> {
    let _lock = lock(dir).await?;
    let record = dir.join(RECORD);
    if let Some(rec) = read_record(&record) {
        if alive(rec.pid) && healthy(&rec.healthz).await {
            if !rec.placement.ends_with(&format!(":{placement_port}")) {
                tracing::debug!(placement = %rec.placement, "the running control plane keeps its own placement port");
            }
            return Ok(rec);
        }
        let _ = std::fs::remove_file(&record);
    }
    let healthz = super::launch::free_port().map_err(|e| format!("cannot find a free port: {e}"))?;
    let log_path = dir.join(LOG);
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the rapr binary: {e}"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["control-plane", "--placement-port", &placement_port.to_string(), "--healthz-port", &healthz.to_string()])
        .args(["--listen-address", "127.0.0.1", "--healthz-listen-address", "127.0.0.1", "--enable-metrics=false"])
        .arg("--raft-logstore-path")
        .arg(dir.join("placement"))
        .arg("--record")
        .arg(&record)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
        .stderr(Stdio::from(log));
    // Its own process group: a Ctrl-C meant for the run does not reach it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start rapr control-plane: {e}"))?;
    let start = Instant::now();
    loop {
        if let Some(rec) = read_record(&record).filter(|r| r.pid == child.id()) {
            super::status::info(&format!("Started the embedded control plane: placement on {} (pid {}, {})", rec.placement, rec.pid, dir.display()));
            // Not waited for: it outlives this run (reaped by init once this process exits).
            drop(child);
            return Ok(rec);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let logs = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = logs.lines().rev().take(5).collect();
            return Err(format!("rapr control-plane exited ({status}): {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | ")));
        }
        if start.elapsed() > START_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("rapr control-plane did not serve within {START_DEADLINE:?} (log: {})", log_path.display()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops the daemon of `dir`; its pid, or `None` when none was running.
pub async fn stop(dir: &Path) -> Result<Option<u32>, String> {
    if !dir.join(RECORD).exists() {
        return Ok(None);
    }
    let _lock = lock(dir).await?;
    let record = dir.join(RECORD);
    let Some(rec) = read_record(&record) else { return Ok(None) };
    if !alive(rec.pid) {
        let _ = std::fs::remove_file(&record);
        return Ok(None);
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(rec.pid).map_err(|_| format!("invalid pid {}", rec.pid))?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).map_err(|e| format!("cannot signal pid {}: {e}", rec.pid))?;
    let start = Instant::now();
    while alive(rec.pid) {
        if start.elapsed() > STOP_DEADLINE {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_file(&record);
    Ok(Some(rec.pid))
}

/// Points every launch without a placement address at the embedded control plane, starting it
/// when needed. A control plane that cannot start (its port taken by another program, say)
/// leaves the apps without actors, with a warning, as a `dapr run` without placement would be.
pub async fn attach(launches: &mut [super::launch::AppLaunch], data_dir: Option<&Path>, placement_port: u16) {
    if launches.iter().all(|l| l.flags.placement_host_address.is_some()) {
        return;
    }
    match ensure(&dir(data_dir), placement_port).await {
        Ok(rec) => {
            for l in launches.iter_mut().filter(|l| l.flags.placement_host_address.is_none()) {
                l.flags.placement_host_address = Some(rec.placement.clone());
            }
        }
        Err(e) => super::status::warning(&format!(
            "the embedded control plane is not running ({e}); actors are unavailable. Start one with `rapr control-plane` and pass --placement-host-address"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_a_torn_one_reads_as_none() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(RECORD);
        let rec = ControlPlaneRecord { pid: 42, placement: "127.0.0.1:50005".into(), healthz: "127.0.0.1:1".into(), started: 1 };
        write_record(&path, &rec).unwrap();
        assert_eq!(read_record(&path), Some(rec));
        std::fs::write(&path, "{\"pid\": 4").unwrap();
        assert_eq!(read_record(&path), None);
    }

    #[test]
    fn this_process_is_alive_and_an_exited_child_is_not() {
        assert!(alive(std::process::id()));
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        std::thread::sleep(Duration::from_millis(300));
        assert!(!alive(pid), "an exited child not yet reaped (a zombie)");
        c.wait().unwrap();
        assert!(!alive(pid));
    }

    #[test]
    fn a_wildcard_listen_address_is_dialled_on_loopback() {
        assert_eq!(dial_host(""), "127.0.0.1");
        assert_eq!(dial_host("0.0.0.0"), "127.0.0.1");
        assert_eq!(dial_host("10.0.0.2"), "10.0.0.2");
    }
}
