//! `rapr stop --app-id X`: sends SIGTERM to the `rapr run` hosting app X, which stops its app
//! and drains its sidecar (see run.rs); waits until that run has exited.

use std::time::{Duration, Instant};

use clap::Args;

use super::init::rapr_home;
use super::runs::find;

/// Flags of `rapr stop`.
#[derive(Debug, Clone, Args)]
pub struct StopArgs {
    /// App ids to stop (repeatable or comma separated).
    #[arg(long = "app-id", short = 'a', required = true, value_delimiter = ',')]
    pub app_id: Vec<String>,
}

/// `rapr stop`; returns the exit code (1 if any app could not be stopped).
pub async fn run_stop(args: &StopArgs) -> i32 {
    let home = rapr_home();
    let mut code = 0;
    for id in &args.app_id {
        let Some(rec) = find(&home, id) else {
            eprintln!("❌  failed to stop app id {id}: couldn't find app id {id}");
            code = 1;
            continue;
        };
        let Ok(pid) = i32::try_from(rec.cli_pid) else { continue };
        if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM) {
            eprintln!("❌  failed to stop app id {id}: {e}");
            code = 1;
            continue;
        }
        let start = Instant::now();
        // The run removes its record as its last step; a zombie pid alone does not count as running.
        let running = || find(&home, id).is_some_and(|r| r.cli_pid == rec.cli_pid);
        while running() && start.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if running() {
            eprintln!("❌  app id {id} did not stop within 30s (pid {})", rec.cli_pid);
            code = 1;
        } else {
            println!("✅  app stopped successfully: {id}");
        }
    }
    code
}
