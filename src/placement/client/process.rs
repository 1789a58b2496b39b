//! `PlacementClient`: the sidecar's side of the placement stream (daprd's placement client,
//! docs/notes/placement-daprd.md §3.6). It reports this host and its actor types, acknowledges
//! each lock / update / unlock, publishes each update's tables as a `PlacementView` that lookups
//! read lock-free, and keeps the lease: with a rapr placement it sends a heartbeat every third of
//! the lease period and fences itself (the actor host deactivates everything) when no heartbeat
//! was acknowledged for the period less a margin. With daprd's placement (no leases) it fences at
//! once when the stream is lost, as daprd's `HaltAll`.
//!
//! The dialling and reading run in the connection loop's task (`stream.rs`); the handler only
//! updates state and sends on the stream's unbounded channel, so it never waits on I/O.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rapr_proto::placement::v1::{Host, HostOperation, PlacementOrder};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::view::PlacementView;
use super::PlacementStatus;
use crate::placement::server::grpc::LEASE_OPERATION;

/// The daprd api level a v1.18 sidecar reports.
const API_LEVEL: u32 = 20;

/// Events of the placement stream.
pub enum PlacementClientMsg {
    /// A stream is being opened: its outbound sender (the report goes first).
    Connecting { conn: u64, sender: mpsc::UnboundedSender<Host> },
    /// Placement accepted stream `conn`; `lease_ms` when it gives leases.
    Connected { conn: u64, lease_ms: Option<u64> },
    /// An order on stream `conn`.
    Order { conn: u64, order: PlacementOrder },
    /// Stream `conn` ended or could not be opened.
    Disconnected { conn: u64 },
    /// The app's actor types (re-reported when they change).
    SetTypes(Vec<String>),
    /// Heartbeat and fence check.
    Tick,
}

// A local message only (ractor's `cluster` feature, on with ractor_cluster, wants it said).
impl ractor::Message for PlacementClientMsg {}

/// What the process starts from.
pub struct PlacementClientArgs {
    /// Placement addresses, tried in turn.
    pub addresses: Vec<String>,
    /// This host's table name (`host:internal-port`), app id and namespace.
    pub host_name: String,
    pub app_id: String,
    pub namespace: String,
    /// Where lookups read the tables.
    pub view: Arc<ArcSwap<PlacementView>>,
    /// Where the status is published.
    pub status: watch::Sender<PlacementStatus>,
}

/// The process.
pub struct PlacementClient;

struct Lease {
    period: Duration,
    margin: Duration,
    seq: u64,
    /// Heartbeats not acknowledged yet: sequence -> when sent.
    sent: BTreeMap<u64, Instant>,
    /// When this host must fence itself, from the last acknowledged heartbeat.
    fence_at: Option<Instant>,
}

/// Its state.
pub struct PlacementClientState {
    host: Host,
    types: Vec<String>,
    conn: Option<(u64, mpsc::UnboundedSender<Host>)>,
    lease: Option<Lease>,
    /// The version of the round being followed.
    version: u64,
    view: Arc<ArcSwap<PlacementView>>,
    status: watch::Sender<PlacementStatus>,
    stop: CancellationToken,
    /// The heartbeat timer (one at a time).
    beat: Option<tokio::task::JoinHandle<()>>,
}

/// The margin a host keeps before its lease's end: a fifth of the period, at least 100 ms.
pub fn lease_margin(period: Duration) -> Duration {
    (period / 5).max(Duration::from_millis(100)).min(period / 2)
}

impl PlacementClientState {
    fn send(&self, host: Host) {
        if let Some((_, tx)) = &self.conn {
            let _ = tx.send(host);
        }
    }

    fn report(&self, version: Option<u64>) -> Host {
        Host { entities: self.types.clone(), operation: HostOperation::Report as i32, version, ..self.host.clone() }
    }

    fn ack(&self, op: HostOperation, version: u64) {
        self.send(Host { operation: op as i32, version: Some(version), id: self.host.id.clone(), namespace: self.host.namespace.clone(), ..Default::default() });
    }

    /// Ends the current stream from this side (placement sees it close; the loop reconnects).
    fn drop_stream(&mut self, why: &str) {
        tracing::warn!("closing the placement stream: {why}");
        self.conn = None;
    }

    /// Whether this host must not run actors now; `connected` is the status's (passed in: the
    /// status is locked while `publish` modifies it).
    fn fenced_now(&self, connected: bool) -> bool {
        match &self.lease {
            Some(l) => l.fence_at.is_none_or(|at| Instant::now() >= at),
            None => !connected,
        }
    }

    fn publish(&self, f: impl FnOnce(&mut PlacementStatus)) {
        self.status.send_modify(|s| {
            f(s);
            let fenced = self.fenced_now(s.connected);
            if fenced && !s.fenced {
                tracing::warn!("placement: this host can no longer renew its place; its actors must deactivate");
                s.fences += 1;
            }
            s.fenced = fenced;
            s.lease_until = self.lease.as_ref().and_then(|l| l.fence_at);
        });
    }

    fn order(&mut self, order: PlacementOrder) {
        let v = if order.version > 0 { order.version } else { order.tables.as_ref().and_then(|t| t.version.parse().ok()).unwrap_or(0) };
        match order.operation.as_str() {
            "lock" => {
                self.version = v;
                self.ack(HostOperation::Lock, v);
            }
            "update" => {
                if self.version > v {
                    return self.drop_stream(&format!("update of version {v} after version {}", self.version));
                }
                let next = PlacementView::from_tables(v, &order.tables.unwrap_or_default());
                let changed = self.view.load().changed_types(&next);
                if !changed.is_empty() {
                    tracing::debug!(version = v, ?changed, "placement tables changed");
                }
                self.view.store(Arc::new(next));
                self.ack(HostOperation::Update, v);
                self.publish(|s| s.version = v);
            }
            "unlock" => {
                self.ack(HostOperation::Unlock, v);
                self.publish(|s| {
                    s.ready = true;
                    s.had_table = true;
                });
            }
            op if op == LEASE_OPERATION => {
                let Some(l) = self.lease.as_mut() else { return };
                if let Some(sent) = l.sent.remove(&order.version) {
                    let at = sent + l.period - l.margin;
                    l.fence_at = Some(l.fence_at.map_or(at, |f| f.max(at)));
                    // Older heartbeats that were never answered will not be.
                    l.sent.retain(|seq, _| *seq > order.version);
                }
                self.publish(|_| {});
            }
            other => self.drop_stream(&format!("unknown placement operation {other:?}")),
        }
    }

    fn tick(&mut self) {
        if self.status.borrow().connected {
            if let Some(l) = self.lease.as_mut() {
                l.seq += 1;
                l.sent.insert(l.seq, Instant::now());
                let seq = l.seq;
                self.send(self.report(Some(seq)));
            }
        }
        let (connected, fenced) = {
            let s = self.status.borrow();
            (s.connected, s.fenced)
        };
        if self.fenced_now(connected) != fenced {
            self.publish(|_| {});
        }
    }
}

impl Actor for PlacementClient {
    type Msg = PlacementClientMsg;
    type State = PlacementClientState;
    type Arguments = PlacementClientArgs;

    async fn pre_start(&self, me: ActorRef<Self::Msg>, a: PlacementClientArgs) -> Result<Self::State, ActorProcessingErr> {
        let stop = CancellationToken::new();
        tokio::spawn(super::stream::connect_loop(a.addresses, me.clone(), stop.clone()));
        let host = Host { name: a.host_name, id: a.app_id, namespace: a.namespace, api_level: API_LEVEL, ..Default::default() };
        Ok(PlacementClientState { host, types: Vec::new(), conn: None, lease: None, version: 0, view: a.view, status: a.status, stop, beat: None })
    }

    async fn post_stop(&self, _me: ActorRef<Self::Msg>, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        st.stop.cancel();
        if let Some(b) = st.beat.take() {
            b.abort();
        }
        Ok(())
    }

    async fn handle(&self, me: ActorRef<Self::Msg>, msg: Self::Msg, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        match msg {
            PlacementClientMsg::Connecting { conn, sender } => {
                st.conn = Some((conn, sender));
                st.version = 0;
                st.send(st.report(None));
            }
            PlacementClientMsg::Connected { conn, lease_ms } => {
                if st.conn.as_ref().is_none_or(|(c, _)| *c != conn) {
                    return Ok(());
                }
                match lease_ms {
                    Some(ms) => {
                        let period = Duration::from_millis(ms);
                        let beat = (period / 3).max(Duration::from_millis(50));
                        if st.lease.as_ref().is_none_or(|l| l.period != period) {
                            let fence_at = st.lease.as_ref().and_then(|l| l.fence_at);
                            st.lease = Some(Lease { period, margin: lease_margin(period), seq: 0, sent: BTreeMap::new(), fence_at });
                            if let Some(old) = st.beat.replace(me.send_interval(beat, || PlacementClientMsg::Tick)) {
                                old.abort();
                            }
                        }
                    }
                    None => st.lease = None,
                }
                st.publish(|s| s.connected = true);
                // The first heartbeat at once: the lease starts now, not a third of a period later.
                st.tick();
            }
            PlacementClientMsg::Order { conn, order } => {
                if st.conn.as_ref().is_some_and(|(c, _)| *c == conn) {
                    st.order(order);
                }
            }
            PlacementClientMsg::Disconnected { conn } => {
                if st.conn.as_ref().is_some_and(|(c, _)| *c != conn) {
                    return Ok(());
                }
                st.conn = None;
                if let Some(l) = st.lease.as_mut() {
                    l.sent.clear();
                }
                st.publish(|s| {
                    s.connected = false;
                    s.ready = false;
                });
            }
            PlacementClientMsg::SetTypes(mut types) => {
                types.sort();
                types.dedup();
                let changed = types != st.types;
                st.types = types;
                st.publish(|s| {
                    s.types = st.types.clone();
                    s.types_known = true;
                });
                if changed {
                    st.send(st.report(None));
                }
            }
            PlacementClientMsg::Tick => st.tick(),
        }
        Ok(())
    }
}
