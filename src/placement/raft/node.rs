//! `RaftNode`: one control-plane node's raft — its stores, its cluster sessions, and whether it
//! may serve as leader. Nodes are numbered by their place in `--initial-cluster` (which every
//! node must be given the same, as daprd requires), bootstrap the whole list as voters on first
//! start, and re-dial missing peers twice a second (ractor_cluster does not reconnect by itself).
//!
//! openraft 0.9 keeps a leader that lost its quorum in the leader state. This node serves as
//! leader only while raft says it leads *and* a quorum acknowledged it within the election
//! timeout: an isolated leader stops serving before the others elect a new one.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{BasicNode, Config, Raft, ServerState};
use ractor::{Actor, ActorRef};
use ractor_cluster::{NodeServer, NodeServerMessage};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::log_store::{Db, DbLocation, SqliteLogStore};
use super::network::{group, ClusterNetwork, RaftRpcMsg, RaftRpcServer};
use super::state_machine::{Membership, PlacementStateMachine};
use super::{NodeId, TypeConfig};
use crate::placement::server::flags::Peer;

/// Raft's heartbeat and election timeouts (ms). openraft 0.9 gives a leader a lease of the
/// largest election timeout: a follower that heard from it waits that lease *plus* its own
/// election timeout before it stands, and refuses votes within the lease. So a dead leader is
/// replaced within `ELECTION_WORST_MS`, which the lease period must outlast
/// (docs/runtime-semantics.md, "Placement").
pub const HEARTBEAT_MS: u64 = 100;
pub const ELECTION_MIN_MS: u64 = 300;
pub const ELECTION_MAX_MS: u64 = 600;
/// The longest a healthy majority takes to elect after the leader's last heartbeat.
pub const ELECTION_WORST_MS: u64 = 2 * ELECTION_MAX_MS;

/// What a node starts from.
pub struct RaftNodeArgs {
    /// This node's id (one of `peers`).
    pub id: String,
    pub peers: Vec<Peer>,
    /// Where the log and snapshots live; in memory when `None`.
    pub data_dir: Option<PathBuf>,
    /// The shared secret of the cluster's sessions.
    pub cookie: String,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum RaftStartError {
    #[error("the raft store in {dir} cannot be opened (is it a rapr data directory?): {source}")]
    Store { dir: String, source: rusqlite::Error },
    #[error("the raft store cannot be read: {0}")]
    Read(std::io::Error),
    #[error("--id {0} is not one of --initial-cluster's nodes")]
    UnknownId(String),
    #[error("cannot listen for the other control-plane nodes on {address}: {reason}")]
    Listen { address: String, reason: String },
    #[error("raft failed to start: {0}")]
    Raft(String),
}

/// A running node.
pub struct RaftNode {
    pub raft: Raft<TypeConfig>,
    pub node_id: NodeId,
    /// Whether (and until when) this node may serve as leader.
    pub leader: watch::Receiver<Leadership>,
    /// The replicated membership.
    pub membership: watch::Receiver<Arc<Membership>>,
    stop: CancellationToken,
    server: Option<ActorRef<NodeServerMessage>>,
    rpc: ActorRef<RaftRpcMsg>,
}

fn host_port(address: &str) -> (String, u16) {
    match address.rsplit_once(':') {
        Some((h, p)) => (h.trim_matches(|c| c == '[' || c == ']').to_string(), p.parse().unwrap_or(0)),
        None => (address.to_string(), 0),
    }
}

/// The process-group scope of a cluster: the same on every node given the same peer list.
fn scope_of(peers: &[Peer]) -> String {
    let list: Vec<String> = peers.iter().map(|p| format!("{}={}", p.id, p.address)).collect();
    format!("rapr-raft-{:016x}", crate::placement::hashing::hash(&list.join(",")))
}

impl RaftNode {
    /// Opens the stores, joins the cluster and starts raft.
    pub async fn start(args: RaftNodeArgs) -> Result<Self, RaftStartError> {
        let index = args.peers.iter().position(|p| p.id == args.id).ok_or_else(|| RaftStartError::UnknownId(args.id.clone()))?;
        let node_id = index as NodeId + 1;
        let me = &args.peers[index];
        let at = DbLocation::in_dir(args.data_dir.as_deref());
        let dir = args.data_dir.as_ref().map_or_else(|| "memory".to_string(), |d| d.display().to_string());
        let log = SqliteLogStore::open(at.clone()).map_err(|source| RaftStartError::Store { dir: dir.clone(), source })?;
        let db = Db::open(at).map_err(|source| RaftStartError::Store { dir, source })?;
        let (sm, membership) = PlacementStateMachine::open(db).await.map_err(RaftStartError::Read)?;

        // A lone node has no one to talk to: no session server (and no port taken).
        let server = if args.peers.len() > 1 {
            let (host, port) = host_port(&me.address);
            let listen: IpAddr = host.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            // NodeServer binds in its own task, where a taken port would only show as no sessions.
            std::net::TcpListener::bind((listen, port)).map_err(|e| RaftStartError::Listen { address: me.address.clone(), reason: e.to_string() })?;
            let server = NodeServer::new(port, args.cookie.clone(), args.id.clone(), host.clone(), None, None).with_listen_addr(listen);
            Some(Actor::spawn(None, server, ()).await.map_err(|e| RaftStartError::Raft(e.to_string()))?.0)
        } else {
            None
        };

        let config = Config {
            cluster_name: "rapr-control-plane".into(),
            heartbeat_interval: HEARTBEAT_MS,
            election_timeout_min: ELECTION_MIN_MS,
            election_timeout_max: ELECTION_MAX_MS,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1000),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()
        .map_err(|e| RaftStartError::Raft(e.to_string()))?;
        let scope = scope_of(&args.peers);
        let raft = Raft::new(node_id, Arc::new(config), ClusterNetwork { scope: scope.clone() }, log, sm).await.map_err(|e| RaftStartError::Raft(e.to_string()))?;
        let (rpc, _) = Actor::spawn(None, RaftRpcServer, raft.clone()).await.map_err(|e| RaftStartError::Raft(e.to_string()))?;
        ractor::pg::join_scoped(scope, group(node_id), vec![rpc.get_cell()]);

        let stop = CancellationToken::new();
        let peers: Vec<(String, String)> =
            args.peers.iter().filter(|p| p.id != args.id).map(|p| (format!("{}@{}", p.id, host_port(&p.address).0), p.address.clone())).collect();
        if let Some(server) = &server {
            tokio::spawn(dial_loop(server.clone(), peers, stop.clone()));
        }

        let members: BTreeMap<NodeId, BasicNode> =
            args.peers.iter().enumerate().map(|(i, p)| (i as NodeId + 1, BasicNode { addr: p.address.clone() })).collect();
        if !raft.is_initialized().await.map_err(|e| RaftStartError::Raft(e.to_string()))? {
            // Every node bootstraps the same voters; a node already initialized by a peer's
            // replication refuses, which is fine.
            if let Err(e) = raft.initialize(members.clone()).await {
                tracing::debug!(error = %e, "raft initialize");
            }
        }
        if members.len() == 1 {
            // A lone voter need not wait out an election timeout to lead.
            let _ = raft.trigger().elect().await;
        }
        let (leader_tx, leader) = watch::channel(Leadership::default());
        tokio::spawn(watch_leadership(raft.clone(), members.len(), leader_tx, stop.clone()));
        tracing::info!(id = %args.id, node_id, peers = members.len(), "raft node started");
        Ok(Self { raft, node_id, leader, membership, stop, server, rpc })
    }

    /// Stops raft and the sessions.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let _ = self.raft.shutdown().await;
        self.rpc.stop(None);
        if let Some(s) = &self.server {
            s.stop(None);
        }
    }
}

/// Dials every peer without a session, twice a second.
async fn dial_loop(server: ActorRef<NodeServerMessage>, peers: Vec<(String, String)>, stop: CancellationToken) {
    if peers.is_empty() {
        return;
    }
    loop {
        let connected: Vec<String> = match ractor::call_t!(server, NodeServerMessage::GetSessions, 1000) {
            Ok(sessions) => sessions.values().filter_map(|s| s.peer_name.as_ref().map(|n| n.name.clone())).collect(),
            Err(_) => Vec::new(),
        };
        for (name, address) in &peers {
            if !connected.contains(name) {
                if let Err(e) = ractor_cluster::client_connect(&server, address.as_str()).await {
                    tracing::debug!(peer = %name, %address, error = %e, "control-plane peer not reachable");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Whether this node may serve as leader: until a moment, after which it may not unless a newer
/// quorum acknowledgement moved that moment on. A reader checks the moment against its own clock,
/// so a flag gone stale cannot make a node serve: one that was frozen (SIGSTOP) or starved and
/// resumes finds its moment passed before anything has had time to update it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Leadership {
    until: Option<Instant>,
}

impl Leadership {
    /// Whether this node may serve sidecars now.
    pub fn serving(&self) -> bool {
        self.until.is_some_and(|t| Instant::now() < t)
    }
}

/// Publishes whether this node may lead: raft's leader state, until the election timeout after
/// the last quorum acknowledgement (a lone voter is its own quorum). openraft republishes its
/// metrics on every pass of its loop (a leader's heartbeats make one at least every heartbeat);
/// the acknowledgement's moment is taken when a new publication is seen, never from an old one.
async fn watch_leadership(raft: Raft<TypeConfig>, voters: usize, tx: watch::Sender<Leadership>, stop: CancellationToken) {
    let mut metrics = raft.metrics();
    let mut acked_at: Option<Instant> = None;
    // Whether the metrics read next were published since the last read.
    let mut fresh = true;
    loop {
        let now = Instant::now();
        let (leader, ms) = {
            let m = metrics.borrow_and_update();
            // A new leader serves once it applied its own term's first entry: everything
            // committed before is then in its state machine (the membership it seeds from).
            let caught_up = m.last_applied.as_ref().is_some_and(|l| l.leader_id.get_term() == m.current_term);
            (m.state == ServerState::Leader && caught_up, m.millis_since_quorum_ack)
        };
        if fresh {
            acked_at = ms.and_then(|ms| now.checked_sub(Duration::from_millis(ms)));
        }
        let until = match (leader, voters) {
            (false, _) => None,
            // A year: a lone voter leads until it stops.
            (true, 1) => Some(now + Duration::from_secs(365 * 24 * 3600)),
            (true, _) => acked_at.map(|t| t + Duration::from_millis(ELECTION_MAX_MS)),
        };
        let next = Leadership { until };
        let was = tx.borrow().serving();
        if was != next.serving() {
            tracing::info!(leader = next.serving(), "placement leadership changed");
        }
        tx.send_if_modified(|cur| {
            // A lapse moves nothing but the clock: said all the same, so watchers see the change.
            let changed = *cur != next || was != next.serving();
            *cur = next;
            changed
        });
        fresh = tokio::select! {
            r = metrics.changed() => match r {
                Ok(()) => true,
                Err(_) => return,
            },
            () = stop.cancelled() => return,
            // The quorum age grows without a metrics change when no one answers.
            () = tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS)) => metrics.has_changed().unwrap_or(false),
        };
    }
}
