//! `ShutdownHandle`: how an API call (`POST /v1.0/shutdown`, gRPC `Shutdown`) or a signal asks
//! the runtime to drain and stop. A cancellation token: cheap to clone, no lock, no mailbox.

use tokio_util::sync::CancellationToken;

/// Requests and observes shutdown.
#[derive(Clone, Default)]
pub struct ShutdownHandle {
    token: CancellationToken,
}

impl ShutdownHandle {
    /// A fresh handle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks for a graceful shutdown.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Resolves once shutdown was asked for.
    pub async fn requested(&self) {
        self.token.cancelled().await;
    }

    /// Whether shutdown was asked for.
    pub fn is_requested(&self) -> bool {
        self.token.is_cancelled()
    }
}

/// `RestartHandle`: how a change that needs a whole new runtime (a `Resiliency`, `HTTPEndpoint`
/// or `Configuration` resource edited on disk, or SIGHUP) asks the sidecar to drain, stop and
/// start again in the same process, as daprd's SIGHUP reload does. A permit is kept, so a request
/// made while the runtime is still starting is not lost.
#[derive(Clone, Default)]
pub struct RestartHandle {
    notify: std::sync::Arc<tokio::sync::Notify>,
}

impl RestartHandle {
    /// A fresh handle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks for a restart.
    pub fn trigger(&self) {
        self.notify.notify_one();
    }

    /// Resolves on the next restart request.
    pub async fn requested(&self) {
        self.notify.notified().await;
    }
}
