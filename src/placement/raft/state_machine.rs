//! `PlacementStateMachine`: what the control plane replicates through raft — the hosts of every
//! namespace as their sidecars last reported them (beyond daprd, which replicates nothing). A new
//! leader starts from it: every host it lists keeps its place (with a fresh lease) until it
//! reconnects or its lease ends. The data is small, so it lives in memory; snapshots are JSON in
//! the raft database, and each apply publishes the new membership on a watch.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::log_store::Db;
use super::{Command, CommandResult, NodeId, TypeConfig};

type SResult<T> = Result<T, StorageError<NodeId>>;

/// A host as replicated (the parts of daprd's `Host` report placement keeps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub name: String,
    pub id: String,
    pub namespace: String,
    pub entities: Vec<String>,
    pub api_level: u32,
}

/// The replicated membership: namespace -> host name -> host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub namespaces: BTreeMap<String, BTreeMap<String, HostRecord>>,
}

impl Membership {
    /// Applies one command.
    pub fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::SetHost(h) => {
                self.namespaces.entry(h.namespace.clone()).or_default().insert(h.name.clone(), h);
            }
            Command::RemoveHost { namespace, name } => {
                if let Some(ns) = self.namespaces.get_mut(&namespace) {
                    ns.remove(&name);
                    if ns.is_empty() {
                        self.namespaces.remove(&namespace);
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SmData {
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, BasicNode>,
    hosts: Membership,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// The state machine.
pub struct PlacementStateMachine {
    data: SmData,
    db: Db,
    published: watch::Sender<Arc<Membership>>,
}

impl PlacementStateMachine {
    /// The state machine on `db`, starting from its last snapshot; the membership is published
    /// on the returned watch.
    pub async fn open(mut db: Db) -> std::io::Result<(Self, watch::Receiver<Arc<Membership>>)> {
        let mut data = SmData::default();
        if let Some(s) = db.meta_get::<StoredSnapshot>("snapshot").await? {
            data = serde_json::from_slice(&s.data).map_err(std::io::Error::other)?;
        }
        let (published, rx) = watch::channel(Arc::new(data.hosts.clone()));
        Ok((Self { data, db, published }, rx))
    }

    fn publish(&self) {
        self.published.send_replace(Arc::new(self.data.hosts.clone()));
    }
}

/// Builds snapshots from a copy of the data taken when openraft asked for the builder.
pub struct PlacementSnapshotBuilder {
    data: SmData,
    db: Db,
}

async fn store_snapshot(db: &mut Db, meta: &SnapshotMeta<NodeId, BasicNode>, data: Vec<u8>) -> SResult<()> {
    db.meta_put("snapshot", &StoredSnapshot { meta: meta.clone(), data }).await.map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e).into())
}

impl RaftSnapshotBuilder<TypeConfig> for PlacementSnapshotBuilder {
    async fn build_snapshot(&mut self) -> SResult<Snapshot<TypeConfig>> {
        let bytes = serde_json::to_vec(&self.data).map_err(|e| StorageIOError::read_state_machine(&e))?;
        let last = self.data.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.data.last_membership.clone(),
            snapshot_id: format!("{}-{}-{}", last.map_or(0, |l| l.leader_id.term), last.map_or(0, |l| l.index), uuid::Uuid::new_v4().simple()),
        };
        store_snapshot(&mut self.db, &meta, bytes.clone()).await?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

impl RaftStateMachine<TypeConfig> for PlacementStateMachine {
    type SnapshotBuilder = PlacementSnapshotBuilder;

    async fn applied_state(&mut self) -> SResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        Ok((self.data.last_applied, self.data.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> SResult<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for e in entries {
            self.data.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(cmd) => self.data.hosts.apply(cmd),
                EntryPayload::Membership(m) => self.data.last_membership = StoredMembership::new(Some(e.log_id), m),
            }
            out.push(CommandResult);
        }
        self.publish();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        PlacementSnapshotBuilder { data: self.data.clone(), db: self.db.reopen() }
    }

    async fn begin_receiving_snapshot(&mut self) -> SResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta<NodeId, BasicNode>, snapshot: Box<Cursor<Vec<u8>>>) -> SResult<()> {
        let bytes = snapshot.into_inner();
        let mut data: SmData = serde_json::from_slice(&bytes).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        data.last_applied = meta.last_log_id;
        data.last_membership = meta.last_membership.clone();
        store_snapshot(&mut self.db, meta, bytes).await?;
        self.data = data;
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> SResult<Option<Snapshot<TypeConfig>>> {
        let s: Option<StoredSnapshot> = self.db.meta_get("snapshot").await.map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(s.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}
