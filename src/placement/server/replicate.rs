//! `Replicator`: hands the disseminators' membership changes to raft, in order, off their
//! mailboxes. A write-behind: a round does not wait for the commit (milliseconds on a healthy
//! cluster), so a leader killed in that window leaves a new leader without the last change, which
//! it learns again from the sidecar's report when it reconnects (docs/runtime-semantics.md).

use std::time::Duration;

use openraft::Raft;
use tokio::sync::mpsc;

use crate::placement::raft::{Command, TypeConfig};

/// How long one write may take before it is given up (openraft 0.9 leaves a write on an isolated
/// leader pending).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The front door (cheap to clone).
#[derive(Debug, Clone)]
pub struct Replicator {
    tx: mpsc::UnboundedSender<Command>,
}

impl Replicator {
    /// Starts the writer for `raft`.
    pub fn start(raft: Raft<TypeConfig>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Command>();
        tokio::spawn(async move {
            while let Some(cmd) = rx.recv().await {
                let what = format!("{cmd:?}");
                match tokio::time::timeout(WRITE_TIMEOUT, raft.client_write(cmd)).await {
                    Ok(Ok(_)) => tracing::debug!(change = %what, "placement membership change replicated"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "placement membership change not replicated"),
                    Err(_) => tracing::warn!("placement membership change not replicated in {WRITE_TIMEOUT:?}"),
                }
            }
        });
        Self { tx }
    }

    /// Queues a change.
    pub fn send(&self, cmd: Command) {
        let _ = self.tx.send(cmd);
    }
}
