//! A `rapr run -f` once its file is planned (run_file.rs): starts the apps one after another, each
//! with its own sidecar, and watches them until every app has exited. The run's exit code is the
//! first non-zero one.
//!
//! Stopping follows the Dapr CLI:
//! - `rapr stop --app-id X` stops app X and its sidecar only; the other apps keep running. The
//!   request arrives over the run's control socket (run_control.rs).
//! - SIGINT, SIGTERM or `rapr stop -f FILE` stop every app, then every sidecar.
//! - A failed launch stops the apps already started and starts no more.
//! - Unlike the CLI, an app that exits stops its own sidecar, and the run ends once every app
//!   has (the CLI keeps each daprd until a signal); the run's exit code is the first non-zero
//!   one of its apps.
//!
//! The closing lines are the CLI's, naming the app since several share the console:
//! `Exited App <id> successfully` (exit 0 or stopped), `The App process of <id> exited with
//! error code: N`, `Exited Dapr <id> successfully`.
//!
//! One loop owns every app's stop switch and answers stop requests. Launches run on their own
//! task and hand each started app to the loop, so a stop request or a signal is served even
//! while a sidecar is still starting. Each app runs on its own task, which stops the app, then
//! its sidecar, then removes the app's record (so `rapr list` no longer shows it).

use std::collections::HashMap;
use std::future::pending;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::config::rapr_home;
use super::app_process::AppExit;
use super::launch::{launch, AppLaunch, Ended, RunningApp};
use super::sidecar_host::SidecarEnd;
use super::status;
use super::run_control::{ControlRequest, ControlSocket};
use super::runs::control_path;
use crate::sidecar::Signals;

/// What the launching task reports to the loop.
enum Launch {
    Started(Box<RunningApp>),
    Failed(String),
}

/// Starts the apps in order until one fails or the run is stopping.
async fn launch_all(launches: Vec<AppLaunch>, stopping: watch::Receiver<bool>, started: mpsc::Sender<Launch>) {
    for l in launches {
        if *stopping.borrow() {
            return;
        }
        let (event, failed) = match launch(l).await {
            Ok(app) => (Launch::Started(Box::new(app)), false),
            Err(e) => (Launch::Failed(e), true),
        };
        // The loop keeps its receiver until this task has ended, so the app is never lost here.
        if started.send(event).await.is_err() || failed {
            return;
        }
    }
    if !*stopping.borrow() {
        status::success("You're up and running! Both Dapr and your app logs will appear here.\n");
    }
}

/// Runs one app until it exits or is stopped (alone, or with the whole run), then stops its
/// sidecar; returns its id and exit code.
async fn supervise(mut app: RunningApp, mut all: watch::Receiver<bool>, alone: oneshot::Receiver<()>) -> (String, i32) {
    // A dropped sender is not a stop request.
    let all = async move {
        if all.wait_for(|s| *s).await.is_err() {
            pending::<()>().await;
        }
    };
    let alone = async move {
        if alone.await.is_err() {
            pending::<()>().await;
        }
    };
    let ended = app
        .wait(async move {
            tokio::select! {
                _ = all => {}
                _ = alone => {}
            }
        })
        .await;
    let id = app.app_id.clone();
    if let Ended::Sidecar(SidecarEnd::Failed) = ended {
        status::failure(&format!("The daprd process of {id} exited with error code: 1"));
    }
    // A code the app exited with; a signal is ours (a stop) unless the app died on its own.
    let code = match (ended, app.stop_app().await) {
        (Ended::App(AppExit::Signal(s)), _) => 128 + s,
        (_, Some(AppExit::Code(c))) => c,
        _ => 0,
    };
    if app.has_app() {
        if code == 0 {
            status::success(&format!("Exited App {id} successfully"));
        } else {
            status::failure(&format!("The App process of {id} exited with error code: {code}"));
        }
    }
    match app.stop_sidecar().await {
        SidecarEnd::Clean => status::success(&format!("Exited Dapr {id} successfully")),
        SidecarEnd::Failed => status::failure(&format!("Error exiting Dapr {id}")),
    }
    (id, code)
}

/// Runs every app of the plan; returns the run's exit code.
pub async fn run(mut launches: Vec<AppLaunch>, mut signals: Signals) -> i32 {
    let (requests_tx, mut requests) = mpsc::channel::<ControlRequest>(16);
    let control = match ControlSocket::bind(control_path(&rapr_home(), std::process::id()), requests_tx) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "no control socket: `rapr stop --app-id` will stop the whole run");
            None
        }
    };
    for l in &mut launches {
        l.record.control = control.as_ref().map(|c| c.path().to_path_buf());
    }
    let (stop_all, all_stopped) = watch::channel(false);
    let (started_tx, mut started) = mpsc::channel(1);
    let launcher = tokio::spawn(launch_all(launches, all_stopped.clone(), started_tx));
    let mut running: JoinSet<(String, i32)> = JoinSet::new();
    // App id -> its stop switch (taken once flipped); an entry lives as long as its app's task.
    let mut switches: HashMap<String, Option<oneshot::Sender<()>>> = HashMap::new();
    let (mut launching, mut stopping, mut code) = (true, false, 0);
    loop {
        if !launching && running.is_empty() {
            break;
        }
        tokio::select! {
            event = started.recv(), if launching => match event {
                Some(Launch::Started(app)) => {
                    let (switch, flipped) = oneshot::channel();
                    switches.insert(app.app_id.clone(), Some(switch));
                    running.spawn(supervise(*app, all_stopped.clone(), flipped));
                }
                Some(Launch::Failed(e)) => {
                    status::failure(&format!("Error starting Dapr and app: {e}"));
                    code = 1;
                    stopping = true;
                    stop_all.send_replace(true);
                }
                None => launching = false,
            },
            Some(done) = running.join_next() => {
                let c = match done {
                    Ok((app_id, c)) => {
                        switches.remove(&app_id);
                        c
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "an app's task failed");
                        1
                    }
                };
                if code == 0 && c != 0 {
                    code = c;
                }
            }
            Some(req) = requests.recv() => {
                let hosted = match switches.get_mut(&req.app_id) {
                    Some(switch) => {
                        if let Some(s) = switch.take() {
                            let _ = s.send(());
                        }
                        true
                    }
                    None => false,
                };
                let _ = req.reply.send(hosted);
            }
            _ = signals.recv(), if !stopping => {
                println!();
                status::info("Received signal to stop Dapr and app processes. Shutting down Dapr and app processes.");
                stopping = true;
                stop_all.send_replace(true);
            }
        }
    }
    let _ = launcher.await;
    drop(control);
    code
}
