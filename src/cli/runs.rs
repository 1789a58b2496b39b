//! The registry of `rapr run`s on this machine: one small JSON record per app under
//! `$RAPR_HOME/run/<appid>.json`, written when the app starts and removed when it exits.
//!
//! `rapr list` reads it. `rapr stop` asks the run to stop the app over the run's control socket
//! when the record names one (`rapr run -f`, which hosts several apps: see run_control.rs), else
//! signals the pid it names. A run killed with SIGKILL leaves its record behind; readers skip
//! (and delete) records whose pid is gone.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One running app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// App id.
    pub app_id: String,
    /// Sidecar HTTP port.
    pub http_port: u16,
    /// Sidecar gRPC port.
    pub grpc_port: u16,
    /// App port (0: none).
    pub app_port: u16,
    /// Sidecar metrics port (0: none).
    #[serde(default)]
    pub metrics_port: u16,
    /// The app's command line.
    pub command: String,
    /// Pid of the `rapr run` that hosts the sidecar (the one `rapr stop` signals).
    pub cli_pid: u32,
    /// Pid of the sidecar: the `rapr run` itself, which hosts it.
    #[serde(default)]
    pub daprd_pid: u32,
    /// Pid of the app process (0: sidecar only).
    pub app_pid: u32,
    /// Start time, seconds since the Unix epoch.
    pub created: u64,
    /// The sidecar's request body limit in bytes.
    #[serde(default)]
    pub max_request_body_size: u64,
    /// The sidecar's HTTP header read buffer in bytes.
    #[serde(default)]
    pub http_read_buffer_size: u64,
    /// The run file the app came from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_template_path: Option<String>,
    /// The run file's `name`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_template_name: Option<String>,
    /// The app's log file (`rapr run -f`, appLogDestination file or fileAndConsole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_log_path: Option<String>,
    /// The sidecar's log file (`rapr run -f`, daprdLogDestination file or fileAndConsole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daprd_log_path: Option<String>,
    /// The control socket of the run hosting the app, when it can stop one app alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<PathBuf>,
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The folder of records.
pub fn runs_dir(home: &Path) -> PathBuf {
    home.join("run")
}

/// The control socket of the run whose pid is `pid`.
pub fn control_path(home: &Path, pid: u32) -> PathBuf {
    runs_dir(home).join(format!("{pid}.sock"))
}

fn record_path(home: &Path, app_id: &str) -> PathBuf {
    // App ids are DNS-like names; anything else is replaced so the id cannot leave the folder.
    let safe: String = app_id.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    runs_dir(home).join(format!("{safe}.json"))
}

/// Whether `pid` names a live process (a zombie, exited but not yet reaped, is not).
pub fn alive(pid: u32) -> bool {
    let Ok(p) = i32::try_from(pid) else { return false };
    let exists = match nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    };
    // `/proc/<pid>/stat`: "pid (comm) S ...", the state after the last ')'.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    exists && !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
}

/// Removes its record when dropped (the app exited, or its run failed).
pub struct RunGuard {
    path: PathBuf,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `rec` (replacing a record of the same app id) and returns the guard that removes it.
pub fn register(home: &Path, rec: &RunRecord) -> std::io::Result<RunGuard> {
    std::fs::create_dir_all(runs_dir(home))?;
    let path = record_path(home, &rec.app_id);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(RunGuard { path })
}

/// Records of live runs, sorted by app id; stale ones are deleted on the way.
pub fn list(home: &Path) -> Vec<RunRecord> {
    let Ok(entries) = std::fs::read_dir(runs_dir(home)) else { return vec![] };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let Ok(text) = std::fs::read(&path) else { continue };
        match serde_json::from_slice::<RunRecord>(&text) {
            Ok(rec) if alive(rec.cli_pid) => out.push(rec),
            Ok(_) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(_) => continue,
        }
    }
    out.sort_by(|a, b| a.app_id.cmp(&b.app_id));
    out
}

/// The live record of `app_id`, if any.
pub fn find(home: &Path, app_id: &str) -> Option<RunRecord> {
    list(home).into_iter().find(|r| r.app_id == app_id)
}

/// Age as the Dapr CLI prints it (`age.GetAge`): `12s` up to a minute, `5m` up to an hour,
/// `3h` up to a day, then `2d`.
pub fn age(created: u64, now: u64) -> String {
    let s = now.saturating_sub(created);
    match s {
        0..=60 => format!("{s}s"),
        61..=3600 => format!("{}m", s / 60),
        3601..=86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, pid: u32) -> RunRecord {
        RunRecord { app_id: id.into(), http_port: 1, grpc_port: 2, app_port: 0, command: "sh".into(), cli_pid: pid, daprd_pid: pid, app_pid: pid, created: 0, ..Default::default() }
    }

    #[test]
    fn records_come_and_go() {
        let home = tempfile::tempdir().unwrap();
        let guard = register(home.path(), &rec("a", std::process::id())).unwrap();
        assert_eq!(list(home.path()), vec![rec("a", std::process::id())]);
        drop(guard);
        assert!(list(home.path()).is_empty());
    }

    #[test]
    fn dead_pids_are_skipped_and_cleaned() {
        let home = tempfile::tempdir().unwrap();
        let guard = register(home.path(), &rec("dead", i32::MAX as u32)).unwrap();
        assert!(list(home.path()).is_empty());
        assert!(!record_path(home.path(), "dead").exists());
        drop(guard);
    }

    #[test]
    fn ages() {
        assert_eq!(age(100, 105), "5s");
        assert_eq!(age(0, 150), "2m");
        assert_eq!(age(0, 7200), "2h");
        assert_eq!(age(0, 200_000), "2d");
    }
}
