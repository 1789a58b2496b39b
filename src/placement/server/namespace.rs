//! `Disseminator`: the process around one namespace's `Rounds` (daprd keeps one disseminator per
//! namespace too). It owns the order senders of the namespace's streams, arms the round timers,
//! and keeps the hosts' leases: every tick renews the lease of each host whose stream is open and
//! takes out of the tables the closed streams whose lease ended. A report that adds to what raft
//! holds waits for its commit (a task awaits the `Replicator`'s answer and sends `Committed`)
//! before it enters the rounds, so no sidecar is told of a host a new leader would not know.
//!
//! Its mailbox carries only this namespace's events, each handled without I/O (a send on an
//! unbounded channel never waits), so no namespace's sidecars queue behind another's.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rapr_proto::placement::v1::{Host, PlacementOrder};
use tokio::sync::mpsc::UnboundedSender;
use tonic::Status;

use crate::placement::leases::LeaseBook;
use crate::placement::membership::StreamId;
use crate::placement::raft::state_machine::HostRecord;
use crate::placement::raft::Command;
use crate::placement::rounds::{Effect, Rounds};

/// Where a stream's orders go. Unbounded on purpose: a round moves on only once every stream
/// acknowledged, so a stream never has more than one round's three orders (and the lone pushes
/// its own reports asked for) waiting.
pub type OrderSender = UnboundedSender<Result<PlacementOrder, Status>>;

/// One namespace's events.
pub enum DisseminatorMsg {
    /// A stream's first message (already checked).
    Connect { stream: StreamId, host: Host, orders: OrderSender },
    /// A later message on a stream (already checked).
    Receive { stream: StreamId, host: Host },
    /// A lease heartbeat (a rapr sidecar's): renew its host's lease and answer with `seq`.
    Heartbeat { stream: StreamId, seq: u64 },
    /// The stream ended (either side).
    Close { stream: StreamId },
    /// Round `version`'s dissemination timeout.
    Timeout { version: u64 },
    /// Renew the open streams' leases and expire the ended ones.
    Tick,
    /// The namespace as the metadata endpoint and the metrics show it.
    State(RpcReplyPort<NamespaceView>),
    /// This node just became leader: the replicated hosts of the namespace keep their place, with
    /// a fresh lease each, until they reconnect or their lease ends.
    Seed(Vec<crate::placement::raft::state_machine::HostRecord>),
    /// A stream's report held for its commit (`written`) was committed, or not.
    Committed { stream: StreamId, written: HostRecord, ok: bool },
}

// A local message only (ractor's `cluster` feature, on with ractor_cluster, wants it said).
impl ractor::Message for DisseminatorMsg {}

/// A namespace seen from outside.
#[derive(Debug, Clone, Default)]
pub struct NamespaceView {
    /// The current round version.
    pub version: u64,
    /// Connected streams.
    pub streams: usize,
    /// The hosts in the tables (by name), with their reports.
    pub hosts: Vec<Host>,
    /// Hosts in the tables whose stream closed (kept until their lease ends).
    pub kept: Vec<String>,
}

/// The settings every namespace shares.
#[derive(Debug, Clone)]
pub struct DisseminatorArgs {
    pub replication_factor: i64,
    pub disseminate_timeout: Duration,
    /// How long a closed stream's host stays in the tables (0: leaves at once, as daprd).
    pub lease_period: Duration,
    /// How often leases are renewed and checked.
    pub tick: Duration,
    /// The clock leases count from.
    pub epoch: Instant,
    /// Where membership changes are replicated (raft), if anywhere.
    pub replicate: Option<super::replicate::Replicator>,
}

/// The process.
pub struct Disseminator;

/// Its state.
pub struct DisseminatorState {
    args: DisseminatorArgs,
    rounds: Rounds,
    orders: HashMap<StreamId, OrderSender>,
    /// Each stream's host name (from its reports), for leases.
    names: HashMap<StreamId, String>,
    leases: LeaseBook,
    /// What was last sent to be replicated, by host name.
    replicated: BTreeMap<String, HostRecord>,
    /// Reports held until raft commits them (true: the stream's first, held from the rounds).
    pending: HashMap<StreamId, (Host, bool)>,
    namespace: String,
}

/// Seeded hosts get stream ids from the top of the range, far from the server's counter.
const SEEDED_STREAMS: StreamId = 1 << 62;

fn record(h: &Host) -> HostRecord {
    HostRecord { name: h.name.clone(), id: h.id.clone(), namespace: h.namespace.clone(), entities: h.entities.clone(), api_level: h.api_level }
}

impl DisseminatorState {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.args.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn apply(&mut self, me: &ActorRef<DisseminatorMsg>, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send { stream, order } => {
                    if let Some(tx) = self.orders.get(&stream) {
                        // A closed receiver: the stream's reader reports the close.
                        let _ = tx.send(Ok(order));
                    }
                }
                Effect::Close { stream, message } => {
                    if let Some(tx) = self.orders.remove(&stream) {
                        tracing::warn!(stream, %message, "closing a placement stream that did not acknowledge in time");
                        let _ = tx.send(Err(Status::deadline_exceeded(message)));
                    }
                    if !self.rounds.retained().contains(&stream) {
                        self.names.remove(&stream);
                    }
                }
                Effect::Timer { version } => {
                    drop(me.send_after(self.args.disseminate_timeout, move || DisseminatorMsg::Timeout { version }));
                }
            }
        }
    }

    /// A report names the host; the kept (closed or seeded) streams of the same name, which this
    /// one replaces, are returned (their names forgotten).
    fn note_name(&mut self, stream: StreamId, host: &Host) -> Vec<StreamId> {
        if host.name.is_empty() {
            return Vec::new();
        }
        let stale: Vec<StreamId> =
            self.rounds.retained().iter().copied().filter(|s| self.names.get(s).is_some_and(|n| *n == host.name)).collect();
        for old in &stale {
            self.names.remove(old);
        }
        self.names.insert(stream, host.name.clone());
        if !host.entities.is_empty() {
            let now = self.now_ms();
            self.leases.renew(&host.name, now);
        }
        stale
    }

    /// A report that adds to what raft holds (a new host, or new types): committed before any
    /// round disseminates it.
    fn must_commit_first(&self, host: &Host) -> bool {
        self.args.replicate.is_some() && !host.name.is_empty() && !host.entities.is_empty() && self.replicated.get(&host.name) != Some(&record(host))
    }

    /// Holds `host` (the stream's first report when `connect`) until raft commits it.
    fn commit_then(&mut self, me: &ActorRef<DisseminatorMsg>, stream: StreamId, host: Host, connect: bool) {
        let Some(r) = &self.args.replicate else { return };
        let written = record(&host);
        let answer = r.write(Command::SetHost(written.clone()));
        self.pending.insert(stream, (host, connect));
        let me = me.clone();
        tokio::spawn(async move {
            let ok = answer.await.unwrap_or(false);
            let _ = me.send_message(DisseminatorMsg::Committed { stream, written, ok });
        });
    }

    fn committed(&mut self, me: &ActorRef<DisseminatorMsg>, stream: StreamId, written: HostRecord, ok: bool) {
        if ok {
            self.replicated.insert(written.name.clone(), written.clone());
        }
        let Some((host, connect)) = self.pending.remove(&stream) else { return };
        if !self.orders.contains_key(&stream) {
            return; // it closed meanwhile
        }
        if !ok {
            // This node cannot commit (it is losing the lead, or raft is stuck): the sidecar
            // reconnects, to this node or the next leader.
            if let Some(tx) = self.orders.get(&stream) {
                let _ = tx.send(Err(Status::unavailable("placement could not replicate this host's report")));
            }
            return;
        }
        if self.must_commit_first(&host) {
            // A newer report came meanwhile.
            return self.commit_then(me, stream, host, connect);
        }
        if connect {
            self.connect_now(me, stream, host);
        } else {
            self.receive_now(me, stream, host);
        }
    }

    fn connect_now(&mut self, me: &ActorRef<DisseminatorMsg>, stream: StreamId, host: Host) {
        let mut stale = self.note_name(stream, &host);
        // A reconnecting host takes its kept place over in one membership change.
        let effects = match stale.pop() {
            Some(kept) => self.rounds.replace(kept, stream, host),
            None => self.rounds.connect(stream, host),
        };
        self.apply(me, effects);
        self.expire_all(me, stale);
    }

    fn receive_now(&mut self, me: &ActorRef<DisseminatorMsg>, stream: StreamId, host: Host) {
        if host.operation == rapr_proto::placement::v1::HostOperation::Report as i32 {
            let stale = self.note_name(stream, &host);
            self.expire_all(me, stale);
        }
        let effects = self.rounds.receive(stream, host);
        self.apply(me, effects);
    }

    fn expire_all(&mut self, me: &ActorRef<DisseminatorMsg>, streams: Vec<StreamId>) {
        for old in streams {
            let effects = self.rounds.expire(old);
            self.apply(me, effects);
        }
    }

    /// A host that reconnected may report on its new stream before its old stream's close arrives:
    /// the old stream, kept now for its lease, is already replaced and leaves at once (otherwise its
    /// stale types would stay in the tables until the lease ends).
    fn drop_if_replaced(&mut self, me: &ActorRef<DisseminatorMsg>, stream: StreamId) {
        if !self.rounds.retained().contains(&stream) {
            return;
        }
        let Some(name) = self.names.get(&stream) else { return };
        let replaced = self.names.iter().any(|(s, n)| *s != stream && n == name && self.orders.contains_key(s));
        if replaced {
            self.names.remove(&stream);
            let effects = self.rounds.expire(stream);
            self.apply(me, effects);
        }
    }

    fn tick(&mut self, me: &ActorRef<DisseminatorMsg>) {
        let now = self.now_ms();
        for (stream, name) in &self.names {
            if self.orders.contains_key(stream) && self.rounds.membership().has(*stream) {
                self.leases.renew(name, now);
            }
        }
        let ended = self.leases.expire(now);
        if ended.is_empty() {
            return;
        }
        let gone: Vec<StreamId> =
            self.rounds.retained().iter().copied().filter(|s| self.names.get(s).is_some_and(|n| ended.contains(n))).collect();
        for stream in gone {
            tracing::info!(stream, host = self.names.get(&stream).map(String::as_str).unwrap_or(""), "placement: a closed host's lease ended, it leaves the tables");
            self.names.remove(&stream);
            let effects = self.rounds.expire(stream);
            self.apply(me, effects);
        }
    }

    /// Sends the membership's changes since the last call to be replicated.
    fn replicate(&mut self, namespace: &str) {
        let Some(r) = &self.args.replicate else { return };
        let now: BTreeMap<String, HostRecord> = self.rounds.membership().by_name().into_iter().map(|(n, h)| (n.to_string(), record(h))).collect();
        let waiting: std::collections::HashSet<&str> = self
            .rounds
            .waiting_hosts()
            .chain(self.pending.values().map(|(h, _)| h))
            .filter(|h| !h.entities.is_empty())
            .map(|h| h.name.as_str())
            .collect();
        let (writes, next) = super::replicate::diff(namespace, &self.replicated, now, &waiting);
        for w in writes {
            r.send(w);
        }
        self.replicated = next;
    }

    fn seed(&mut self, hosts: Vec<HostRecord>) {
        let now = self.now_ms();
        for (i, h) in hosts.into_iter().enumerate() {
            if self.names.values().any(|n| *n == h.name) {
                continue; // already reconnected here
            }
            let stream = SEEDED_STREAMS + i as StreamId;
            self.leases.renew(&h.name, now);
            self.names.insert(stream, h.name.clone());
            self.replicated.insert(h.name.clone(), h.clone());
            let host = Host {
                name: h.name,
                id: h.id,
                namespace: h.namespace,
                entities: h.entities,
                api_level: h.api_level,
                operation: rapr_proto::placement::v1::HostOperation::Report as i32,
                ..Default::default()
            };
            self.rounds.keep(stream, host);
        }
    }

    fn view(&self) -> NamespaceView {
        let retained = self.rounds.retained();
        NamespaceView {
            version: self.rounds.version(),
            streams: self.orders.len(),
            hosts: self.rounds.membership().hosts_by_name().into_iter().cloned().collect(),
            kept: retained.iter().filter_map(|s| self.names.get(s).cloned()).collect(),
        }
    }
}

impl Actor for Disseminator {
    type Msg = DisseminatorMsg;
    type State = DisseminatorState;
    type Arguments = (DisseminatorArgs, String);

    async fn pre_start(&self, me: ActorRef<Self::Msg>, (args, namespace): (DisseminatorArgs, String)) -> Result<Self::State, ActorProcessingErr> {
        let timeout_text = crate::invoke::app_health::go_duration(args.disseminate_timeout);
        let mut rounds = Rounds::new(args.replication_factor, timeout_text);
        if !args.lease_period.is_zero() {
            rounds = rounds.with_leases();
        }
        let period_ms = u64::try_from(args.lease_period.as_millis()).unwrap_or(u64::MAX);
        drop(me.send_interval(args.tick, || DisseminatorMsg::Tick));
        Ok(DisseminatorState {
            args,
            rounds,
            orders: HashMap::new(),
            names: HashMap::new(),
            leases: LeaseBook::new(period_ms),
            replicated: BTreeMap::new(),
            pending: HashMap::new(),
            namespace,
        })
    }

    async fn handle(&self, me: ActorRef<Self::Msg>, msg: Self::Msg, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        match msg {
            DisseminatorMsg::Connect { stream, host, orders } => {
                st.orders.insert(stream, orders);
                if st.must_commit_first(&host) {
                    st.commit_then(&me, stream, host, true);
                } else {
                    st.connect_now(&me, stream, host);
                }
            }
            DisseminatorMsg::Receive { stream, host } => {
                let report = host.operation == rapr_proto::placement::v1::HostOperation::Report as i32;
                if report && st.pending.contains_key(&stream) {
                    // The newest report waits in place of the one being committed.
                    if let Some(p) = st.pending.get_mut(&stream) {
                        p.0 = host;
                    }
                } else if report && st.must_commit_first(&host) {
                    st.commit_then(&me, stream, host, false);
                } else {
                    st.receive_now(&me, stream, host);
                }
            }
            DisseminatorMsg::Committed { stream, written, ok } => st.committed(&me, stream, written, ok),
            DisseminatorMsg::Close { stream } => {
                st.orders.remove(&stream);
                st.pending.remove(&stream);
                if st.args.lease_period.is_zero() || !st.rounds.membership().has(stream) {
                    st.names.remove(&stream);
                } else if let Some(name) = st.names.get(&stream) {
                    // The lease counts from the last moment the stream was known open.
                    let now = st.now_ms();
                    st.leases.renew(name, now);
                }
                let effects = st.rounds.close(stream);
                st.apply(&me, effects);
                st.drop_if_replaced(&me, stream);
            }
            DisseminatorMsg::Heartbeat { stream, seq } => {
                // A host whose report waits for its commit is answered too (by the name it reports).
                let name = st.names.get(&stream).or_else(|| st.pending.get(&stream).map(|(h, _)| &h.name));
                if let (Some(tx), Some(name)) = (st.orders.get(&stream), name) {
                    let now = st.now_ms();
                    st.leases.renew(name, now);
                    let order = PlacementOrder { tables: None, operation: super::grpc::LEASE_OPERATION.into(), version: seq };
                    let _ = tx.send(Ok(order));
                }
            }
            DisseminatorMsg::Timeout { version } => {
                let effects = st.rounds.timeout(version);
                st.apply(&me, effects);
            }
            DisseminatorMsg::Tick => st.tick(&me),
            DisseminatorMsg::State(reply) => {
                let _ = reply.send(st.view());
                return Ok(());
            }
            DisseminatorMsg::Seed(hosts) => st.seed(hosts),
        }
        let namespace = st.namespace.clone();
        st.replicate(&namespace);
        Ok(())
    }
}
