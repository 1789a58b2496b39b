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
