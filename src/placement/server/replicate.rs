//! `Replicator`: hands the disseminators' membership changes to raft, in order, off their
//! mailboxes. A host's addition (or a change of its types) is committed before the round that
//! disseminates it (`write`, with an answer), so a new leader knows every host any sidecar was
//! told about and moves none of its actors while its lease runs. Removals are written behind
//! (`send`): a new leader that missed one keeps the host until its lease ends, which is safe.

use std::time::Duration;

use openraft::Raft;
use tokio::sync::{mpsc, oneshot};

use std::collections::{BTreeMap, HashSet};

use crate::placement::raft::state_machine::HostRecord;
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

/// The writes that bring raft from `replicated` (what it was last given, by host name) to `now`
/// (the tables' hosts), and what raft then holds. A host committed but not in the tables yet
/// (`waiting`: its stream waits for the round in progress, or its newer report for its commit) is
/// not a removal: writing one would let a leader change lose a host the sidecars were told of.
pub fn diff(namespace: &str, replicated: &BTreeMap<String, HostRecord>, now: BTreeMap<String, HostRecord>, waiting: &HashSet<&str>) -> (Vec<Command>, BTreeMap<String, HostRecord>) {
    let mut writes: Vec<Command> = now.iter().filter(|(name, h)| replicated.get(*name) != Some(*h)).map(|(_, h)| Command::SetHost(h.clone())).collect();
    let mut next = now;
    for (name, h) in replicated {
        if next.contains_key(name) {
            continue;
        }
        if waiting.contains(name.as_str()) {
            next.insert(name.clone(), h.clone());
        } else {
            writes.push(Command::RemoveHost { namespace: namespace.to_string(), name: name.clone() });
        }
    }
    (writes, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, types: &[&str]) -> HostRecord {
        HostRecord { name: name.into(), id: "app".into(), namespace: "default".into(), entities: types.iter().map(|t| t.to_string()).collect(), api_level: 20 }
    }

    fn by_name(hosts: &[HostRecord]) -> BTreeMap<String, HostRecord> {
        hosts.iter().map(|h| (h.name.clone(), h.clone())).collect()
    }

    #[test]
    fn new_and_changed_hosts_are_set_and_gone_ones_removed() {
        let before = by_name(&[host("a:1", &["T"]), host("b:1", &["T"])]);
        let now = by_name(&[host("a:1", &["T", "U"]), host("c:1", &["T"])]);
        let (writes, next) = diff("default", &before, now.clone(), &HashSet::new());
        let text: Vec<String> = writes.iter().map(|w| format!("{w:?}")).collect();
        assert_eq!(writes.len(), 3, "{text:?}");
        assert!(text[0].contains("a:1") && text[0].contains("\"U\""), "{text:?}");
        assert!(text[1].contains("SetHost") && text[1].contains("c:1"), "{text:?}");
        assert!(text[2].contains("RemoveHost") && text[2].contains("b:1"), "{text:?}");
        assert_eq!(next, now);
        assert!(diff("default", &next, now, &HashSet::new()).0.is_empty(), "nothing twice");
    }

    #[test]
    fn a_committed_host_waiting_for_the_round_is_not_removed() {
        // b was committed (its report waited for that), then waits for the round in progress.
        let before = by_name(&[host("a:1", &["T"]), host("b:1", &["T"])]);
        let now = by_name(&[host("a:1", &["T"])]);
        let (writes, next) = diff("default", &before, now, &HashSet::from(["b:1"]));
        assert!(writes.is_empty(), "{writes:?}");
        assert!(next.contains_key("b:1"), "still what raft holds");
    }
}
