//! `Delivery`: the process that keeps one subscription subscribed, on whichever broker
//! instance the component directory currently publishes.
//!
//! It subscribes with an [`EventHandler`] (which does the per-message work on the broker's
//! tasks, never in this mailbox), then waits, on a spawned task, for the subscription to end:
//! the instance retired (the host reconnects or restarts the component) or the component
//! missing. It then reports itself paused and subscribes again once the directory publishes a
//! new instance. Unacknowledged messages stay in the broker meanwhile. Every slow step
//! (subscribing, waiting) runs on a task that answers with a message, so the mailbox only ever
//! holds this subscription's own bookkeeping.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio_util::sync::CancellationToken;

use super::bulk::Batcher;
use super::handler::{DeliveryShared, EventHandler};
use super::manager::SubscriptionManagerMsg;
use super::routing::Routes;
use super::Subscription;
use crate::components::directory::DirectoryHandle;
use crate::components::pubsub::{PubSubClient, SubscribeRequest};
use crate::resiliency::{ComponentKind, Resiliency};

/// How long a failed subscribe waits before trying again (unless the directory changes first),
/// doubling per consecutive failure up to [`RESUBSCRIBE_MAX`].
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);
/// The longest wait between subscribe attempts.
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(30);

/// The wait after `failures` consecutive failed subscribes.
pub(crate) fn backoff(failures: u32) -> Duration {
    RESUBSCRIBE_AFTER.saturating_mul(1u32 << failures.saturating_sub(1).min(5)).min(RESUBSCRIBE_MAX)
}

/// Messages of a `Delivery`. Each carries the attempt it belongs to; stale ones are ignored.
pub enum DeliveryMsg {
    /// Subscribe on the component's current instance, or wait for one.
    Subscribe(u64),
    /// A subscribe attempt finished.
    Subscribed(u64, Result<CancellationToken, String>),
}

// A local message only (ractor's `cluster` feature, on with ractor_cluster, wants it said).
impl ractor::Message for DeliveryMsg {}

/// What a `Delivery` is started with.
pub struct DeliveryArgs {
    /// Its position in the manager's table.
    pub index: usize,
    /// This app's id (the component's `subscriptionScopes`).
    pub app_id: Arc<str>,
    /// The subscription.
    pub subscription: Arc<Subscription>,
    /// Its compiled routes.
    pub routes: Routes,
    /// Where ready brokers are published.
    pub directory: DirectoryHandle,
    /// Inbound policies.
    pub resiliency: Resiliency,
    /// The sidecar's shared delivery parts.
    pub shared: Arc<DeliveryShared>,
    /// Its manager (status reports).
    pub manager: ActorRef<SubscriptionManagerMsg>,
    /// Fired by the manager when this process stopped or crashed: ends its subscription even if
    /// `post_stop` never ran, before a replacement subscribes.
    pub stop: CancellationToken,
}

/// The process.
pub struct Delivery;

/// Its state.
pub struct DeliveryState {
    args: DeliveryArgs,
    attempt: u64,
    /// Consecutive failed subscribes (the retry backoff).
    failures: u32,
    /// Ends the current subscription (and any waiter of the current attempt).
    current: CancellationToken,
}

impl DeliveryState {
    fn report(&self, active: bool, error: Option<String>) {
        let _ = self.args.manager.cast(SubscriptionManagerMsg::Status { index: self.args.index, active, error });
    }

    /// Starts a new attempt: ends the previous subscription and its waiters.
    fn next_attempt(&mut self) -> (u64, CancellationToken) {
        self.current.cancel();
        self.attempt += 1;
        self.current = self.args.stop.child_token();
        (self.attempt, self.current.clone())
    }
}

/// Resubscribes when `until` ends, unless the drain started or the attempt was superseded.
fn resubscribe_after(me: &ActorRef<DeliveryMsg>, attempt: u64, draining: CancellationToken, superseded: CancellationToken, until: impl std::future::Future<Output = ()> + Send + 'static) {
    let me = me.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = until => { let _ = me.cast(DeliveryMsg::Subscribe(attempt)); }
            _ = draining.cancelled() => {}
            _ = superseded.cancelled() => {}
        }
    });
}

impl Actor for Delivery {
    type Msg = DeliveryMsg;
    type State = DeliveryState;
    type Arguments = DeliveryArgs;

    async fn pre_start(&self, me: ActorRef<Self::Msg>, args: Self::Arguments) -> Result<Self::State, ActorProcessingErr> {
        me.cast(DeliveryMsg::Subscribe(0))?;
        let current = args.stop.child_token();
        Ok(DeliveryState { args, attempt: 0, failures: 0, current })
    }

    async fn handle(&self, me: ActorRef<Self::Msg>, msg: Self::Msg, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        let draining = st.args.shared.draining.clone();
        if draining.is_cancelled() {
            return Ok(());
        }
        match msg {
            DeliveryMsg::Subscribe(attempt) if attempt == st.attempt => {
                let (attempt, token) = st.next_attempt();
                // Watch before reading, so a publish in between is not missed.
                let mut changes = st.args.directory.watch();
                let dir = st.args.directory.load();
                let sub = &st.args.subscription;
                let client = dir.pubsubs.get(&sub.pubsub).filter(|c| !c.retired().is_cancelled()).cloned();
                let Some(client) = client else {
                    let why = dir.pubsubs_unavailable.get(&sub.pubsub).cloned().unwrap_or_else(|| "not ready".into());
                    st.report(false, Some(format!("pub/sub component {} is not available: {why}", sub.pubsub)));
                    resubscribe_after(&me, attempt, draining, token, async move {
                        let _ = changes.changed().await;
                    });
                    return Ok(());
                };
                if !client.may_subscribe(&st.args.app_id, &sub.topic) {
                    // daprd refuses the subscription; the component's scopes only change with it.
                    let why = format!("subscription to topic '{}' on pubsub '{}' is not allowed", sub.topic, sub.pubsub);
                    tracing::warn!(pubsub = %sub.pubsub, topic = %sub.topic, "{why} (subscriptionScopes, allowedTopics or protectedTopics)");
                    st.report(false, Some(why));
                    resubscribe_after(&me, attempt, draining, token, async move {
                        let _ = changes.changed().await;
                    });
                    return Ok(());
                }
                let handler = Arc::new(EventHandler {
                    index: st.args.index,
                    subscription: Arc::clone(sub),
                    routes: st.args.routes.clone(),
                    client: client.clone(),
                    policy: st.args.resiliency.for_component_inbound(&sub.pubsub, ComponentKind::PubSub),
                    shared: Arc::clone(&st.args.shared),
                    manager: st.args.manager.clone(),
                    batcher: sub.bulk.enabled.then(|| Batcher::start(Arc::clone(&st.args.shared.sink), &sub.bulk, st.args.shared.metrics.clone())),
                });
                let req = SubscribeRequest { topic: sub.topic.clone(), metadata: sub.metadata.clone() };
                let me = me.clone();
                tokio::spawn(async move {
                    let result = subscribe(client, req, handler, &token).await;
                    let _ = me.cast(DeliveryMsg::Subscribed(attempt, result));
                });
            }
            DeliveryMsg::Subscribe(_) => {}
            DeliveryMsg::Subscribed(attempt, _) if attempt != st.attempt => {}
            DeliveryMsg::Subscribed(attempt, Ok(running)) => {
                let sub = &st.args.subscription;
                tracing::info!(pubsub = %sub.pubsub, topic = %sub.topic, "subscribed");
                st.failures = 0;
                st.report(true, None);
                // It ends when the instance retires, or with this attempt (linked by `subscribe`).
                resubscribe_after(&me, attempt, draining, CancellationToken::new(), async move { running.cancelled().await });
            }
            DeliveryMsg::Subscribed(attempt, Err(e)) => {
                st.failures = st.failures.saturating_add(1);
                let wait = backoff(st.failures);
                let sub = &st.args.subscription;
                tracing::warn!(pubsub = %sub.pubsub, topic = %sub.topic, error = %e, retry_in = ?wait, "subscribing failed; trying again");
                st.report(false, Some(format!("subscribing to topic {} failed: {e}", sub.topic)));
                let mut changes = st.args.directory.watch();
                let superseded = st.current.clone();
                resubscribe_after(&me, attempt, draining, superseded, async move {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = changes.changed() => {}
                    }
                });
            }
        }
        Ok(())
    }

    async fn post_stop(&self, _me: ActorRef<Self::Msg>, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        st.current.cancel();
        Ok(())
    }
}

/// Subscribes under `cancel`; returns the token the subscription runs under.
async fn subscribe(client: PubSubClient, req: SubscribeRequest, handler: Arc<EventHandler>, cancel: &CancellationToken) -> Result<CancellationToken, String> {
    client.subscribe(req, handler, cancel).await.map_err(|e| e.to_string())
}

#[cfg(test)]
#[path = "delivery_tests.rs"]
mod tests;
