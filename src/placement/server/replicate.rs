//! `Replicator`: hands the disseminators' membership changes to raft, in order, off their
//! mailboxes. A host's addition (or a change of its types) is committed before the round that
//! disseminates it (`write`, with an answer), so a new leader knows every host any sidecar was
//! told about and moves none of its actors while its lease runs. Removals are written behind
//! (`send`): a new leader that missed one keeps the host until its lease ends, which is safe.

use std::time::Duration;

use openraft::Raft;
use tokio::sync::{mpsc, oneshot};

use crate::placement::raft::{Command, TypeConfig};

/// How long one write may take before it is given up (openraft 0.9 leaves a write on an isolated
/// leader pending).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The front door (cheap to clone).
#[derive(Debug, Clone)]
pub struct Replicator {
    tx: mpsc::UnboundedSender<(Command, Option<oneshot::Sender<bool>>)>,
}

impl Replicator {
    /// Starts the writer for `raft`.
    pub fn start(raft: Raft<TypeConfig>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Command, Option<oneshot::Sender<bool>>)>();
        tokio::spawn(async move {
            while let Some((cmd, done)) = rx.recv().await {
                let what = format!("{cmd:?}");
                // Test hook: hold each write this many ms (the window a leader could die in).
                #[cfg(feature = "failpoints")]
                if let Some(Some(ms)) = fail::eval("placement:replicate", |arg| arg.and_then(|a| a.parse::<u64>().ok())) {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let ok = match tokio::time::timeout(WRITE_TIMEOUT, raft.client_write(cmd)).await {
                    Ok(Ok(_)) => {
                        tracing::debug!(change = %what, "placement membership change replicated");
                        true
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "placement membership change not replicated");
                        false
                    }
                    Err(_) => {
                        tracing::warn!("placement membership change not replicated in {WRITE_TIMEOUT:?}");
                        false
                    }
                };
                if let Some(done) = done {
                    let _ = done.send(ok);
                }
            }
        });
        Self { tx }
    }

    /// Queues a change, written behind.
    pub fn send(&self, cmd: Command) {
        let _ = self.tx.send((cmd, None));
    }

    /// Queues a change; the answer says whether it was committed.
    pub fn write(&self, cmd: Command) -> oneshot::Receiver<bool> {
        let (done, answer) = oneshot::channel();
        if let Err(e) = self.tx.send((cmd, Some(done))) {
            // The writer is gone: the sender inside the error drops, and the answer says no.
            drop(e);
        }
        answer
    }
}
