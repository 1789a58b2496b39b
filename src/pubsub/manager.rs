//! `SubscriptionManager`: owns the app's subscriptions (DESIGN.md §3 tree): collects the
//! declarative ones and the app's programmatic ones once the app channel is up, keeps those
//! that apply to this app and name a configured pub/sub, runs one `Delivery` per subscription
//! (restarting one that crashes while the others keep delivering), publishes the
//! `SubscriptionTable` that `/v1.0/metadata` reads, and drains deliveries on shutdown.
//!
//! It is the table's only writer: deliveries report through its mailbox (status changes and
//! parked messages are rare), and every slow step (loading the app's subscriptions, waiting for
//! in-flight messages on drain) runs on a spawned task.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio_util::sync::CancellationToken;

use super::delivery::{Delivery, DeliveryArgs, DeliveryMsg};
use super::handler::DeliveryShared;
use super::routing::Routes;
use super::{Subscription, SubscriptionStatus, SubscriptionTable};
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
}

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
}

/// The manager's state.
pub struct SubscriptionManagerState {
    args_app_id: String,
    directory: DirectoryHandle,
    table: SubscriptionTable,
    resiliency: Resiliency,
    shared: Arc<DeliveryShared>,
    running: Vec<Running>,
}

impl SubscriptionManagerState {
    fn publish(&self) {
        self.table.publish(self.running.iter().map(|r| r.status.clone()).collect());
    }

    async fn spawn(&mut self, me: &ActorRef<SubscriptionManagerMsg>, index: usize) {
        let Some(r) = self.running.get_mut(index) else { return };
        let Some(routes) = r.routes.clone() else { return };
        r.stop = CancellationToken::new();
        let args = DeliveryArgs {
            index,
            subscription: Arc::new(r.status.subscription.clone()),
            routes,
            directory: self.directory.clone(),
            resiliency: self.resiliency.clone(),
            shared: Arc::clone(&self.shared),
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
        self.running.iter().position(|r| r.child.as_ref().is_some_and(|c| c.get_id() == cell.get_id()))
    }
}

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
        Ok(SubscriptionManagerState { args_app_id: a.app_id, directory: a.directory, table: a.table, resiliency: a.resiliency, shared: a.shared, running: Vec::new() })
    }

    async fn handle(&self, me: ActorRef<Self::Msg>, msg: Self::Msg, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        match msg {
            SubscriptionManagerMsg::Start(subs) => {
                for sub in subs {
                    if !admit(&sub, &st.args_app_id, &st.directory) {
                        continue;
                    }
                    let (routes, error) = match Routes::compile(&sub) {
                        Ok(r) => (Some(r), None),
                        Err(e) => {
                            tracing::error!(pubsub = %sub.pubsub, topic = %sub.topic, file = ?sub.source, error = %e, "subscription rejected");
                            (None, Some(e.to_string()))
                        }
                    };
                    let status = SubscriptionStatus { subscription: sub, active: false, error, parked: 0 };
                    st.running.push(Running { status, routes, child: None, stop: CancellationToken::new() });
                    let index = st.running.len() - 1;
                    st.spawn(&me, index).await;
                }
                st.publish();
            }
            SubscriptionManagerMsg::Status { index, active, error } => {
                if let Some(r) = st.running.get_mut(index) {
                    r.status.active = active;
                    r.status.error = error;
                    st.publish();
                }
            }
            SubscriptionManagerMsg::Parked { index } => {
                if let Some(r) = st.running.get_mut(index) {
                    r.status.parked += 1;
                    st.publish();
                }
            }
            SubscriptionManagerMsg::Drain(deadline, reply) => {
                st.shared.draining.cancel();
                for r in &mut st.running {
                    r.status.active = false;
                }
                st.publish();
                let in_flight = st.shared.in_flight.clone();
                let children: Vec<_> = st.running.iter().filter_map(|r| r.child.clone()).collect();
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
        let r = &mut st.running[index];
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
        for r in &st.running {
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

    /// The manager's reference (to link or stop it).
    pub fn actor(&self) -> &ActorRef<SubscriptionManagerMsg> {
        &self.0
    }
}
