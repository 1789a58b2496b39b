//! The composition root: wires one sidecar from the subsystems and ties it to the process.
//!
//! ```text
//! sidecar/            the root (depends on everything below; nothing depends on it)
//! ├── RuntimeRoot     root.rs: supervision root; loads resources (load.rs), starts the
//! │   │               components, composes the Facades and the routers, binds the gateway
//! │   ├── ComponentSupervisor -> ComponentHost*        (components/)
//! │   ├── AppHealthMonitor                             (invoke/, via invocation.rs)
//! │   └── ApiGateway  gateway.rs: listeners and graceful drain
//! ├── api/            Facades (one per building block) and the HTTP / gRPC adapters
//! ├── components/     registry, hosts, directory, one folder per category
//! ├── invoke/, resiliency/
//! ├── config/         pure parsing of flags and resources (no I/O)
//! └── runtime/        leaf utilities: call, restart, failpoints, shutdown, metrics, telemetry
//! ```
//! A new building block adds its facade to `api::Facades`, its routes to the adapters and, if it
//! serves sidecar-to-sidecar calls, its router to the internal router composed in root.rs.

pub mod gateway;
pub mod invocation;
pub mod load;
pub mod placement;
pub mod reload;
pub mod root;
pub mod serve;

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};

use crate::components::registry::Registry;
use crate::config::SidecarArgs;
use crate::runtime::shutdown::{RestartHandle, ShutdownHandle};
use root::{RuntimeRoot, RuntimeRootArgs, RuntimeRootMsg};

/// A started sidecar inside this OS process.
///
/// Its runtime (the `RuntimeRoot` tree) lives in a task of its own, `life`, that also restarts
/// it in place when a [`RestartHandle`] asks (daprd's SIGHUP reload: a `Resiliency`,
/// `HTTPEndpoint` or `Configuration` edited on disk, or SIGHUP itself): the old tree drains and
/// stops, then a new one starts from the same flags, re-reading every resource.
pub struct Sidecar {
    /// The current root (replaced on each reload).
    root: tokio::sync::watch::Receiver<ActorRef<RuntimeRootMsg>>,
    life: tokio::task::JoinHandle<()>,
    /// Trigger for a graceful shutdown.
    pub shutdown: ShutdownHandle,
    /// Trigger for an in-place reload.
    pub restart: RestartHandle,
}

/// Errors starting a sidecar.
#[derive(Debug, thiserror::Error)]
#[error("the sidecar failed to start: {0}")]
pub struct StartError(String);

/// What a reload starts the runtime again from.
#[derive(Clone)]
struct Launch {
    flags: SidecarArgs,
    api_token: Option<String>,
    registry: Arc<Registry>,
    shutdown: ShutdownHandle,
    restart: RestartHandle,
}

impl Launch {
    async fn spawn(&self) -> Result<(ActorRef<RuntimeRootMsg>, tokio::task::JoinHandle<()>), StartError> {
        let args = RuntimeRootArgs {
            flags: self.flags.clone(),
            api_token: self.api_token.clone(),
            shutdown: self.shutdown.clone(),
            restart: self.restart.clone(),
            registry: Arc::clone(&self.registry),
        };
        Actor::spawn(None, RuntimeRoot, args).await.map_err(|e| StartError(startup_reason(e)))
    }
}

/// The runtime's life: runs the root until shutdown, restarting it on each reload request.
async fn live(launch: Launch, mut root: ActorRef<RuntimeRootMsg>, mut handle: tokio::task::JoinHandle<()>, current: tokio::sync::watch::Sender<ActorRef<RuntimeRootMsg>>) {
    loop {
        tokio::select! {
            _ = launch.shutdown.requested() => {
                // `--dapr-block-shutdown-duration` makes this shutdown that much longer.
                let block = launch.flags.block_shutdown().ok().flatten().unwrap_or_default();
                let _ = root.call(RuntimeRootMsg::Shutdown, Some(Duration::from_secs(90) + block)).await;
                let _ = handle.await;
                return;
            }
            _ = launch.restart.requested() => {
                tracing::info!("reloading the runtime: draining, then starting again from the resources on disk");
                let _ = root.call(RuntimeRootMsg::Shutdown, Some(Duration::from_secs(90))).await;
                let _ = (&mut handle).await;
                if launch.shutdown.is_requested() {
                    return;
                }
                match launch.spawn().await {
                    Ok((r, h)) => {
                        tracing::info!("runtime reloaded");
                        root = r;
                        handle = h;
                        let _ = current.send(root.clone());
                    }
                    Err(e) => {
                        // As daprd, whose reloaded runtime failing to start is fatal.
                        tracing::error!(error = %e, "the runtime failed to start again after a reload");
                        return;
                    }
                }
            }
            _ = &mut handle => {
                tracing::error!("the runtime stopped unexpectedly");
                return;
            }
        }
    }
}

impl Sidecar {
    /// Starts a sidecar: loads resources, starts components, binds the APIs.
    pub async fn start(flags: SidecarArgs, api_token: Option<String>) -> Result<Self, StartError> {
        Self::start_with_registry(flags, api_token, Arc::new(Registry::default())).await
    }

    /// Starts a sidecar with a given set of component implementations (tests add their own).
    pub async fn start_with_registry(flags: SidecarArgs, api_token: Option<String>, registry: Arc<Registry>) -> Result<Self, StartError> {
        let (shutdown, restart) = (ShutdownHandle::new(), RestartHandle::new());
        let launch = Launch { flags, api_token, registry, shutdown: shutdown.clone(), restart: restart.clone() };
        let (root, handle) = launch.spawn().await?;
        let (current, root_rx) = tokio::sync::watch::channel(root.clone());
        let life = tokio::spawn(live(launch, root, handle, current));
        Ok(Self { root: root_rx, life, shutdown, restart })
    }

    /// The bound addresses.
    pub async fn addresses(&self) -> Option<gateway::BoundAddresses> {
        let root = self.root.borrow().clone();
        match root.call(RuntimeRootMsg::Addresses, Some(Duration::from_secs(5))).await {
            Ok(ractor::rpc::CallResult::Success(a)) => Some(a),
            _ => None,
        }
    }

    /// Runs until a shutdown is requested (API or `stop`) or the root dies; then drains.
    pub async fn run_until_stopped(self) {
        if let Err(e) = self.life.await {
            tracing::error!(error = %e, "the runtime's task failed");
        }
    }
}

fn startup_reason(e: ractor::SpawnErr) -> String {
    match e {
        ractor::SpawnErr::StartupFailed(err) => err.to_string(),
        other => other.to_string(),
    }
}

/// `rapr sidecar`: runs until SIGINT/SIGTERM or an API shutdown; returns the exit code.
pub async fn run_sidecar(flags: SidecarArgs) -> i32 {
    let token = std::env::var("DAPR_API_TOKEN").ok();
    // Installed before start: a signal that lands while components start is not lost.
    let mut signals = Signals::install();
    // Taken over before start too: SIGHUP's default action would end the process.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let sidecar = match Sidecar::start(flags, token).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "fatal");
            return 1;
        }
    };
    let trigger = sidecar.shutdown.clone();
    tokio::spawn(async move {
        signals.recv().await;
        tracing::info!("signal received; shutting down gracefully");
        trigger.trigger();
    });
    // SIGHUP reloads the runtime in place, as daprd's.
    if let Some(mut hup) = hup {
        let restart = sidecar.restart.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP received; reloading the runtime");
                restart.trigger();
            }
        });
    }
    tracing::info!("rapr sidecar is running");
    sidecar.run_until_stopped().await;
    tracing::info!("rapr sidecar stopped");
    0
}

/// SIGINT and SIGTERM, registered once; signals that arrive before `recv` are kept.
pub struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Takes over SIGINT and SIGTERM from now on.
    pub fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Self { term: signal(SignalKind::terminate()).ok(), int: signal(SignalKind::interrupt()).ok() }
    }

    /// Resolves on the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        let term = async {
            match self.term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let int = async {
            match self.int.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = term => {}
            _ = int => {}
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    Signals::install().recv().await;
}
