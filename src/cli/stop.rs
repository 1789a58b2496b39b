//! `rapr stop`: stops apps that `rapr run` started, as `dapr stop` does.
//!
//! - `--app-id X`: when X is one app of a `rapr run -f`, only X and its sidecar stop; the run is
//!   asked over its control socket (run_control.rs) and its other apps keep running. Otherwise
//!   the `rapr run` hosting X gets SIGTERM, which stops its app and drains its sidecar (run.rs).
//! - `--run-file FILE` (`-f`, a file or a folder holding `dapr.yaml`): the run started from that
//!   file gets SIGTERM, which stops all of its apps.
//!
//! - `--control-plane`: the embedded control plane `rapr run` started (control_plane.rs).
//!
//! Either way `rapr stop` returns once the stopped apps' records are gone (a run removes an
//! app's record as the last step of stopping it), or fails after 30 s.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use crate::config::rapr_home;
use super::run_control::request_stop;
use super::run_file::resolve;
use super::runs::{find, list, RunRecord};

/// How long `rapr stop` waits for an app to be gone.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// Flags of `rapr stop`.
#[derive(Debug, Clone, Args)]
pub struct StopArgs {
    /// App ids to stop (repeatable or comma separated).
    #[arg(long = "app-id", short = 'a', value_delimiter = ',', required_unless_present_any = ["run_file", "control_plane"])]
    pub app_id: Vec<String>,
    /// Stop every app of the run started from this run file (or folder holding `dapr.yaml`).
    #[arg(long = "run-file", short = 'f', conflicts_with = "app_id")]
    pub run_file: Option<PathBuf>,
    /// Stop the embedded control plane `rapr run` started (after the apps named, if any).
    #[arg(long = "control-plane")]
    pub control_plane: bool,
    /// The embedded control plane's directory (as given to `rapr run --data-dir`).
    #[arg(long = "data-dir", env = "RAPR_CONTROL_PLANE_DIR")]
    pub data_dir: Option<PathBuf>,
}

fn sigterm(pid: u32) -> Result<(), String> {
    let pid = i32::try_from(pid).map_err(|_| format!("invalid pid {pid}"))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM).map_err(|e| e.to_string())
}

/// Waits until none of `recs` is listed any more (a record of the same id under another pid is
/// another run and does not count).
async fn gone(recs: &[RunRecord]) -> bool {
    let home = rapr_home();
    let start = Instant::now();
    loop {
        let live = list(&home);
        if !recs.iter().any(|r| live.iter().any(|l| l.app_id == r.app_id && l.cli_pid == r.cli_pid)) {
            return true;
        }
        if start.elapsed() >= STOP_DEADLINE {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops one app; `Err` says why not.
async fn stop_app(id: &str) -> Result<(), String> {
    let rec = find(&rapr_home(), id).ok_or_else(|| format!("couldn't find app id {id}"))?;
    match &rec.control {
        Some(socket) => request_stop(socket, id).await.map_err(|e| e.to_string())?,
        None => sigterm(rec.cli_pid)?,
    }
    if gone(std::slice::from_ref(&rec)).await {
        Ok(())
    } else {
        Err(format!("app id {id} did not stop within {}s (pid {})", STOP_DEADLINE.as_secs(), rec.cli_pid))
    }
}

/// Stops every app started from `file`.
async fn stop_run_file(file: &std::path::Path) -> Result<Vec<String>, String> {
    let name = resolve(file).display().to_string();
    let recs: Vec<RunRecord> = list(&rapr_home()).into_iter().filter(|r| r.run_template_path.as_deref() == Some(name.as_str())).collect();
    if recs.is_empty() {
        return Err(format!("couldn't find apps with run file {name}"));
    }
    let mut pids: Vec<u32> = recs.iter().map(|r| r.cli_pid).collect();
    pids.sort_unstable();
    pids.dedup();
    for pid in pids {
        sigterm(pid)?;
    }
    if gone(&recs).await {
        Ok(recs.into_iter().map(|r| r.app_id).collect())
    } else {
        Err(format!("the apps of {name} did not stop within {}s", STOP_DEADLINE.as_secs()))
    }
}

/// `rapr stop`; returns the exit code (1 if any app, or the control plane, could not be stopped).
pub async fn run_stop(args: &StopArgs) -> i32 {
    let code = stop_apps(args).await;
    if !args.control_plane {
        return code;
    }
    match super::control_plane::stop(&super::control_plane::dir(args.data_dir.as_deref())).await {
        Ok(Some(pid)) => {
            println!("✅  control plane stopped (pid {pid})");
            code
        }
        Ok(None) => {
            println!("no control plane running");
            code
        }
        Err(e) => {
            eprintln!("❌  failed to stop the control plane: {e}");
            1
        }
    }
}

async fn stop_apps(args: &StopArgs) -> i32 {
    if let Some(file) = &args.run_file {
        return match stop_run_file(file).await {
            Ok(ids) => {
                for id in ids {
                    println!("✅  app stopped successfully: {id}");
                }
                0
            }
            Err(e) => {
                eprintln!("❌  failed to stop apps with run file {}: {e}", file.display());
                1
            }
        };
    }
    let mut code = 0;
    for id in &args.app_id {
        match stop_app(id).await {
            Ok(()) => println!("✅  app stopped successfully: {id}"),
            Err(e) => {
                eprintln!("❌  failed to stop app id {id}: {e}");
                code = 1;
            }
        }
    }
    code
}
