//! `SubscriptionManager`: owns the app's subscriptions (DESIGN.md §3 tree): collects the
//! declarative ones and the app's programmatic ones once the app channel is up, keeps those
//! that apply to this app and name a configured pub/sub, runs one `Delivery` per subscription
//! (restarting one that crashes while the others keep delivering), publishes the
//! `SubscriptionTable` that `/v1.0/metadata` reads, and drains deliveries on shutdown.
//!
//! It is the table's only writer: deliveries report through its mailbox (status changes and
//! parked messages are rare), and every slow step (loading the app's subscriptions, waiting for
//! in-flight messages on drain) runs on a spawned task.
//!
//! Streaming subscriptions (`SubscribeTopicEventsAlpha1`, `streams.rs`) come and go with their
//! gRPC streams: each gets its own `DeliveryShared` (the stream as sink, the stream's life as
//! drain token) and a key that is never reused, so a late report from a stopped delivery cannot
//! reach another subscription.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio_util::sync::CancellationToken;

use super::app_sink::AppSink;
use super::delivery::{Delivery, DeliveryArgs, DeliveryMsg};
use super::handler::DeliveryShared;
use super::routing::Routes;
use super::streams::StreamRefused;
use super::{Subscription, SubscriptionKind, SubscriptionStatus, SubscriptionTable};
use crate::components::directory::DirectoryHandle;
use crate::resiliency::Resiliency;

/// Messages of the manager.
pub enum SubscriptionManagerMsg {
    /// The subscriptions to run (declarative and programmatic, once loaded).
    Start(Vec<Subscription>),
    /// A delivery's state changed.
    Status {
        /// Its position in the table.
        index: usize,
        /// Taking messages.
        active: bool,
        /// Why not, or the last error worth showing.
        error: Option<String>,
    },
    /// A delivery parked a message at the poison limit.
    Parked {
        /// Its position in the table.
        index: usize,
    },
    /// Stop taking messages, wait (at most the deadline) for those in the app's hands, stop
    /// the deliveries.
    Drain(Duration, RpcReplyPort<()>),
    /// Run a streaming subscription delivering to `sink` until `closed` fires; answers its key.
    StartStream {
        /// The subscription (kind Streaming; boxed, the message is otherwise small).
        subscription: Box<Subscription>,
        /// The app's stream.
        sink: Arc<dyn AppSink>,
        /// The stream's life: the delivery's drain token.
        closed: CancellationToken,
        /// Its key, or why it did not start.
        reply: RpcReplyPort<Result<usize, StreamRefused>>,
    },
    /// A streaming subscription's stream ended: stop its delivery and forget it.
    StopStream(usize),
    /// Hot reload: the declarative subscriptions now on disk; replies once applied.
    ReconcileDeclared(Vec<Subscription>, RpcReplyPort<()>),
}

// A local message only (ractor's `cluster` feature, on with ractor_cluster, wants it said).
impl ractor::Message for SubscriptionManagerMsg {}

/// What the manager is started with.
pub struct SubscriptionManagerArgs {
    /// This app's id (declarative `scopes`).
    pub app_id: String,
    /// Where brokers are published.
    pub directory: DirectoryHandle,
    /// What `/v1.0/metadata` reads.
    pub table: SubscriptionTable,
    /// Inbound policies.
    pub resiliency: Resiliency,
    /// The sidecar's shared delivery parts (sink, drain token, in-flight tracker, metrics).
    pub shared: Arc<DeliveryShared>,
    /// Resolves to every subscription to run, once the app channel is ready (declarative and
    /// programmatic); the manager starts them when it arrives.
    pub load: BoxFuture<'static, Vec<Subscription>>,
}

/// The process.
pub struct SubscriptionManager;

/// One running subscription.
struct Running {
    status: SubscriptionStatus,
    /// `None` for a subscription that was rejected (its error shows in the table).
    routes: Option<Routes>,
    child: Option<ActorRef<DeliveryMsg>>,
    stop: CancellationToken,
    /// Its delivery's sink and drain token: the manager's, or a stream's own.
    shared: Arc<DeliveryShared>,
}

/// The manager's state.
pub struct SubscriptionManagerState {
    args_app_id: String,
    directory: DirectoryHandle,
    table: SubscriptionTable,
    resiliency: Resiliency,
    shared: Arc<DeliveryShared>,
    /// By key, in the order they started (a key is never reused).
    running: BTreeMap<usize, Running>,
    next_key: usize,
    /// Whether the first set (declarative and the app's own) has been started.
    loaded: bool,
    /// Declarative subscriptions reloaded from disk before the first set arrived: they replace
    /// the declarative part of it.
    pending_declared: Option<Vec<Subscription>>,
}

impl SubscriptionManagerState {
    fn publish(&self) {
        self.table.publish(self.running.values().map(|r| r.status.clone()).collect());
    }

    async fn spawn(&mut self, me: &ActorRef<SubscriptionManagerMsg>, index: usize) {
        let Some(r) = self.running.get_mut(&index) else { return };
        let Some(routes) = r.routes.clone() else { return };
        r.stop = CancellationToken::new();
        let args = DeliveryArgs {
            index,
            app_id: Arc::from(self.args_app_id.as_str()),
            subscription: Arc::new(r.status.subscription.clone()),
            routes,
            directory: self.directory.clone(),
            resiliency: self.resiliency.clone(),
            shared: Arc::clone(&r.shared),
            manager: me.clone(),
            stop: r.stop.clone(),
        };
        match Actor::spawn_linked(None, Delivery, args, me.get_cell()).await {
            Ok((child, _)) => r.child = Some(child),
            Err(e) => {
                tracing::error!(pubsub = %r.status.subscription.pubsub, topic = %r.status.subscription.topic, error = %e, "starting the delivery failed");
                r.status.error = Some(format!("starting the delivery failed: {e}"));
            }
        }
    }

    fn index_of(&self, cell: &ActorCell) -> Option<usize> {
        self.running.iter().find(|(_, r)| r.child.as_ref().is_some_and(|c| c.get_id() == cell.get_id())).map(|(k, _)| *k)
    }

    /// Adds a subscription under a fresh key and starts its delivery.
    async fn add(&mut self, me: &ActorRef<SubscriptionManagerMsg>, status: SubscriptionStatus, routes: Option<Routes>, shared: Arc<DeliveryShared>) -> usize {
        let key = self.next_key;
        self.next_key += 1;
        self.running.insert(key, Running { status, routes, child: None, stop: CancellationToken::new(), shared });
        self.spawn(me, key).await;
        key
    }

    /// Runs `sub` if it applies here; one whose routes do not compile shows its error instead.
    async fn admit_and_add(&mut self, me: &ActorRef<SubscriptionManagerMsg>, sub: Subscription) {
        if !admit(&sub, &self.args_app_id, &self.directory) {
            return;
        }
        let (routes, error) = match Routes::compile(&sub) {
            Ok(r) => (Some(r), None),
            Err(e) => {
                tracing::error!(pubsub = %sub.pubsub, topic = %sub.topic, file = ?sub.source, error = %e, "subscription rejected");
                (None, Some(e.to_string()))
            }
        };
        let status = SubscriptionStatus { subscription: sub, active: false, error, parked: 0 };
        let shared = Arc::clone(&self.shared);
        self.add(me, status, routes, shared).await;
    }

    /// Starts a streaming subscription, checking what daprd checks first.
    async fn start_stream(&mut self, me: &ActorRef<SubscriptionManagerMsg>, sub: Subscription, sink: Arc<dyn AppSink>, closed: CancellationToken) -> Result<usize, StreamRefused> {
        if self.shared.draining.is_cancelled() {
            return Err(StreamRefused::Closed);
        }
        let dir = self.directory.load();
        if !dir.pubsubs.contains_key(&sub.pubsub) && !dir.pubsubs_unavailable.contains_key(&sub.pubsub) {
            return Err(StreamRefused::NotFound(sub.pubsub));
        }
        if dir.pubsubs.get(&sub.pubsub).is_some_and(|c| !c.may_subscribe(&self.args_app_id, &sub.topic)) {
            return Err(StreamRefused::Failed(format!("subscription to topic '{}' on pubsub '{}' is not allowed", sub.topic, sub.pubsub)));
        }
        let routes = Routes::compile(&sub).map_err(|e| StreamRefused::Failed(e.to_string()))?;
        let shared = Arc::new(DeliveryShared { sink, draining: closed, in_flight: self.shared.in_flight.clone(), metrics: self.shared.metrics.clone() });
        let status = SubscriptionStatus { subscription: sub, active: false, error: None, parked: 0 };
        let key = self.add(me, status, Some(routes), shared).await;
        self.publish();
        Ok(key)
    }
}

#[path = "manager_reload.rs"]
mod reload;

/// Whether `sub` applies to `app_id` and names a configured pub/sub; rejected ones are logged.
fn admit(sub: &Subscription, app_id: &str, directory: &DirectoryHandle) -> bool {
    if !sub.scopes.is_empty() && !sub.scopes.iter().any(|s| s == app_id) {
        tracing::debug!(pubsub = %sub.pubsub, topic = %sub.topic, "subscription not scoped to this app; skipped");
        return false;
    }
    let dir = directory.load();
    if !dir.pubsubs.contains_key(&sub.pubsub) && !dir.pubsubs_unavailable.contains_key(&sub.pubsub) {
        tracing::warn!(pubsub = %sub.pubsub, topic = %sub.topic, "subscription names a pub/sub component that is not configured; skipped");
        return false;
    }
    true
}

impl Actor for SubscriptionManager {
    type Msg = SubscriptionManagerMsg;
    type State = SubscriptionManagerState;
    type Arguments = SubscriptionManagerArgs;

    async fn pre_start(&self, me: ActorRef<Self::Msg>, a: Self::Arguments) -> Result<Self::State, ActorProcessingErr> {
        let load = a.load;
        let draining = a.shared.draining.clone();
        tokio::spawn(async move {
            tokio::select! {
                subs = load => { let _ = me.cast(SubscriptionManagerMsg::Start(subs)); }
                _ = draining.cancelled() => {}
            }
        });
        Ok(SubscriptionManagerState {
            args_app_id: a.app_id,
            directory: a.directory,
            table: a.table,
            resiliency: a.resiliency,
            shared: a.shared,
            running: BTreeMap::new(),
            next_key: 0,
            loaded: false,
            pending_declared: None,
        })
    }

    async fn handle(&self, me: ActorRef<Self::Msg>, msg: Self::Msg, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        match msg {
            SubscriptionManagerMsg::Start(subs) => {
                st.loaded = true;
                let subs = match st.pending_declared.take() {
                    Some(declared) => super::programmatic::merge(declared, subs.into_iter().filter(|s| s.kind != SubscriptionKind::Declarative).collect()),
                    None => subs,
                };
                for sub in subs {
                    st.admit_and_add(&me, sub).await;
                }
                st.publish();
            }
            SubscriptionManagerMsg::ReconcileDeclared(declared, reply) => {
                if st.loaded {
                    st.reconcile_declared(&me, declared).await;
                    st.publish();
                } else {
                    st.pending_declared = Some(declared);
                }
                let _ = reply.send(());
            }
            SubscriptionManagerMsg::Status { index, active, error } => {
                if let Some(r) = st.running.get_mut(&index) {
                    r.status.active = active;
                    r.status.error = error;
                    st.publish();
                }
            }
            SubscriptionManagerMsg::Parked { index } => {
                if let Some(r) = st.running.get_mut(&index) {
                    r.status.parked += 1;
                    st.publish();
                }
            }
            SubscriptionManagerMsg::Drain(deadline, reply) => {
                st.shared.draining.cancel();
                for r in st.running.values_mut() {
                    // A stream's own drain token: its stream ends too.
                    r.shared.draining.cancel();
                    r.status.active = false;
                }
                st.publish();
                let in_flight = st.shared.in_flight.clone();
                let children: Vec<_> = st.running.values().filter_map(|r| r.child.clone()).collect();
                tokio::spawn(async move {
                    in_flight.close();
                    if tokio::time::timeout(deadline, in_flight.wait()).await.is_err() {
                        tracing::warn!(left = in_flight.len(), "pub/sub drain deadline passed with deliveries in flight; they stay unacknowledged");
                    }
                    for c in children {
                        c.stop(Some("drained".into()));
                    }
                    let _ = reply.send(());
                });
            }
            SubscriptionManagerMsg::StartStream { subscription, sink, closed, reply } => {
                let _ = reply.send(st.start_stream(&me, *subscription, sink, closed).await);
            }
            SubscriptionManagerMsg::StopStream(key) => {
                // Forgotten first, so its delivery's termination is not taken for a crash.
                if let Some(r) = st.running.remove(&key) {
                    r.shared.draining.cancel();
                    r.stop.cancel();
                    if let Some(c) = r.child {
                        c.stop(Some("subscription stream ended".into()));
                    }
                    st.publish();
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(&self, me: ActorRef<Self::Msg>, evt: SupervisionEvent, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, _) if !st.shared.draining.is_cancelled() => (cell, "stopped".to_string()),
            _ => return Ok(()),
        };
        let Some(index) = st.index_of(&cell) else { return Ok(()) };
        if st.shared.draining.is_cancelled() {
            return Ok(());
        }
        let Some(r) = st.running.get_mut(&index) else { return Ok(()) };
        // Its subscription ends before the replacement subscribes, whatever state it died in.
        r.stop.cancel();
        r.child = None;
        r.status.active = false;
        r.status.error = Some(format!("delivery restarted: {why}"));
        tracing::error!(pubsub = %r.status.subscription.pubsub, topic = %r.status.subscription.topic, error = %why, "delivery process ended; restarting it");
        st.publish();
        st.spawn(&me, index).await;
        Ok(())
    }

    async fn post_stop(&self, _me: ActorRef<Self::Msg>, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        for r in st.running.values() {
            r.stop.cancel();
        }
        Ok(())
    }
}

/// Front door of the manager.
#[derive(Clone)]
pub struct SubscriptionManagerClient(ActorRef<SubscriptionManagerMsg>);

impl SubscriptionManagerClient {
    /// Wraps the manager's reference.
    pub fn new(r: ActorRef<SubscriptionManagerMsg>) -> Self {
        Self(r)
    }

    /// Drains deliveries: no new message reaches the app; returns once the ones in the app's
    /// hands are settled, or after `deadline`.
    pub async fn drain(&self, deadline: Duration) {
        let _ = self.0.call(|r| SubscriptionManagerMsg::Drain(deadline, r), Some(deadline + Duration::from_secs(5))).await;
    }

    /// Runs a streaming subscription delivering to `sink` until `closed` fires (see
    /// `streams.rs`); returns its key for [`Self::stop_stream`].
    pub async fn start_stream(&self, subscription: Subscription, sink: Arc<dyn AppSink>, closed: CancellationToken) -> Result<usize, StreamRefused> {
        let msg = |reply| SubscriptionManagerMsg::StartStream { subscription: Box::new(subscription), sink, closed, reply };
        match self.0.call(msg, Some(Duration::from_secs(10))).await {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            _ => Err(StreamRefused::Closed),
        }
    }

    /// Stops a streaming subscription and forgets it.
    pub fn stop_stream(&self, key: usize) {
        let _ = self.0.cast(SubscriptionManagerMsg::StopStream(key));
    }

    /// Hot reload: applies the declarative subscriptions now on disk; returns once applied.
    pub async fn reconcile_declared(&self, declared: Vec<Subscription>) {
        if !matches!(self.0.call(|r| SubscriptionManagerMsg::ReconcileDeclared(declared, r), Some(Duration::from_secs(10))).await, Ok(ractor::rpc::CallResult::Success(()))) {
            tracing::error!("the subscription manager did not apply a reload in time");
        }
    }

    /// The manager's reference (to link or stop it).
    pub fn actor(&self) -> &ActorRef<SubscriptionManagerMsg> {
        &self.0
    }
}
