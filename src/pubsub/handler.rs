//! `EventHandler`: the `MessageHandler` a `Delivery` gives the broker for its subscription. It
//! runs on the broker's tasks (never in a process's mailbox), one call per message:
//! wait while the app is unhealthy, decode the CloudEvent, drop it if expired, pick the route,
//! hand it to the app under the component's inbound resiliency policy, then settle it with the
//! pure rules of `outcome.rs` (dead-letter publish, park, acknowledge or keep).
//!
//! Every message in the app's hands holds a token of the manager's in-flight tracker and of the
//! broker instance's, so a SIGTERM drain and a component restart both wait for it. Once the
//! drain started, new messages are left to the broker unacknowledged (`Retry`) without reaching
//! the app.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use ractor::ActorRef;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::app_sink::{AppEvent, AppSink};
use super::bulk::Batcher;
use super::cloudevents::{self, PUBSUB_NAME_KEY};
use super::manager::SubscriptionManagerMsg;
use super::outcome::{self, AppAnswer, Limits, Step};
use super::routing::Routes;
use super::Subscription;
use crate::components::pubsub::{Message, MessageHandler, Outcome, PubSubClient, PublishRequest};
use crate::resiliency::{AttemptError, Policy, PolicyError};
use crate::runtime::metrics::Metrics;

/// What every delivery of a sidecar shares.
pub struct DeliveryShared {
    /// Where events go.
    pub sink: Arc<dyn AppSink>,
    /// Fired when the sidecar drains: take no new message.
    pub draining: CancellationToken,
    /// Messages in the app's hands (the drain waits for them).
    pub in_flight: TaskTracker,
    /// daprd's ingress metrics (`None` with metrics off).
    pub metrics: Option<Metrics>,
}

/// The handler of one subscription on one broker instance.
pub struct EventHandler {
    /// The subscription's position in the manager's table.
    pub index: usize,
    /// The subscription.
    pub subscription: Arc<Subscription>,
    /// Its compiled routing rules.
    pub routes: Routes,
    /// The broker instance it is subscribed on (dead letters are published through it).
    pub client: PubSubClient,
    /// The component's inbound policy.
    pub policy: Policy,
    /// The sidecar's shared parts.
    pub shared: Arc<DeliveryShared>,
    /// Where parked messages are reported.
    pub manager: ActorRef<SubscriptionManagerMsg>,
    /// With `bulkSubscribe` enabled: gathers events into batches for the app.
    pub batcher: Option<Batcher>,
}

#[async_trait]
impl MessageHandler for EventHandler {
    async fn handle(&self, msg: Message) -> Outcome {
        let shared = &self.shared;
        if shared.draining.is_cancelled() {
            return Outcome::Retry;
        }
        tokio::select! {
            _ = shared.sink.until_healthy() => {}
            _ = shared.draining.cancelled() => return Outcome::Retry,
        }
        let _held = (shared.in_flight.token(), self.client.in_flight().token());
        let limits = Limits { dead_letter: self.subscription.dead_letter_topic.is_some(), delivery_count: msg.delivery_count, max_delivery_count: self.client.max_delivery_count() };
        let mut msg = msg;
        // As daprd: the app sees the component's name among the message's metadata.
        msg.metadata.insert(PUBSUB_NAME_KEY.to_string(), self.subscription.pubsub.clone());
        let msg = Arc::new(msg);
        let step = match outcome::admit(&limits) {
            Step::Deliver => self.deliver(&msg, &limits).await,
            step => {
                tracing::warn!(pubsub = %self.subscription.pubsub, topic = %self.subscription.topic, message_id = %msg.id, deliveries = msg.delivery_count, "message past the poison limit is not delivered again");
                step
            }
        };
        self.finish(step, &msg).await
    }
}

impl EventHandler {
    fn count(&self, answer: (&str, &str), started: Option<Instant>) {
        if let Some(m) = &self.shared.metrics {
            m.pubsub_ingress(&self.subscription.pubsub, &self.subscription.topic, answer.0, answer.1, started);
        }
    }

    /// Decodes, routes and hands the message to the app; returns what to do with it next.
    async fn deliver(&self, msg: &Arc<Message>, limits: &Limits) -> Step {
        let sub = &self.subscription;
        let raw = sub.raw_payload();
        let event = match cloudevents::decode(msg, raw) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(pubsub = %sub.pubsub, topic = %sub.topic, message_id = %msg.id, error = %e, "error deserializing cloud event");
                self.count(("retry", "retry"), None);
                return outcome::undeliverable(limits);
            }
        };
        if cloudevents::is_expired(&event, time::OffsetDateTime::now_utc()) {
            tracing::warn!(pubsub = %sub.pubsub, topic = %sub.topic, event = ?event.get("id"), expiration = ?event.get("expiration"), "dropping expired pub/sub event");
            self.count(("drop", "drop"), None);
            return outcome::dropped(limits);
        }
        let path = match self.routes.select(&event) {
            Ok(Some(p)) => p.to_string(),
            Ok(None) => {
                tracing::debug!(pubsub = %sub.pubsub, topic = %sub.topic, event = ?event.get("id"), "no matching route for event; skipping");
                self.count(("drop", "success"), None);
                return outcome::dropped(limits);
            }
            Err(e) => {
                tracing::error!(pubsub = %sub.pubsub, topic = %sub.topic, event = ?event.get("id"), error = %e, "error finding matching route for event");
                self.count(("retry", "retry"), None);
                return outcome::undeliverable(limits);
            }
        };
        let ev = AppEvent { pubsub: sub.pubsub.clone(), topic: sub.topic.clone(), path, event: Arc::new(event), message: Arc::clone(msg), raw };
        let run = self
            .policy
            .run(|| async {
                let started = Instant::now();
                let answer = match &self.batcher {
                    Some(b) => b.submit(ev.clone()).await,
                    None => self.shared.sink.deliver(&ev).await,
                };
                self.count(answer.metric_labels(), Some(started));
                match answer {
                    // Draining: no new attempt; the broker keeps the message.
                    a if a.is_retriable() && self.shared.draining.is_cancelled() => Err(AttemptError::Permanent(a)),
                    a if a.is_retriable() => Err(AttemptError::Retriable(a)),
                    a => Ok(a),
                }
            })
            .await;
        let answer = match run {
            Ok(a) | Err(PolicyError::Operation(a)) => a,
            Err(e) => {
                tracing::warn!(pubsub = %sub.pubsub, topic = %sub.topic, event = %ev.id(), error = ?e, "inbound resiliency policy gave up on the app");
                AppAnswer::Retry
            }
        };
        if answer.is_retriable() && self.shared.draining.is_cancelled() {
            return Step::Retry;
        }
        outcome::settle(answer, limits)
    }

    /// Carries out a step; only a success, a drop or a dead-letter publish that worked
    /// acknowledge.
    async fn finish(&self, step: Step, msg: &Message) -> Outcome {
        match step {
            Step::DeadLetter => outcome::after_dead_letter(self.dead_letter(msg).await),
            Step::Park => {
                let sub = &self.subscription;
                tracing::error!(pubsub = %sub.pubsub, topic = %sub.topic, message_id = %msg.id, deliveries = msg.delivery_count, "message parked at the poison limit (maxDeliveryCount) with no dead-letter topic: kept by the broker, not redelivered");
                if let Some(m) = &self.shared.metrics {
                    m.pubsub_parked(&sub.pubsub, &sub.topic);
                }
                let _ = self.manager.cast(SubscriptionManagerMsg::Parked { index: self.index });
                Outcome::Park
            }
            step => outcome::outcome(step),
        }
    }

    /// Publishes the message as received to the dead-letter topic on the same component.
    async fn dead_letter(&self, msg: &Message) -> bool {
        let sub = &self.subscription;
        let Some(topic) = sub.dead_letter_topic.clone() else { return false };
        fail::fail_point!("pubsub:deadletter:publish", |_| {
            tracing::warn!(pubsub = %sub.pubsub, topic = %topic, message_id = %msg.id, "failpoint pubsub:deadletter:publish: dead-letter publish failed; the message stays unacknowledged");
            false
        });
        let req = PublishRequest { topic: topic.clone(), data: msg.data.clone(), content_type: msg.content_type.clone(), metadata: msg.metadata.clone() };
        match self.client.publish(req).await {
            Ok(()) => {
                tracing::info!(pubsub = %sub.pubsub, topic = %sub.topic, dead_letter_topic = %topic, message_id = %msg.id, "message sent to the dead-letter topic");
                true
            }
            Err(e) => {
                tracing::warn!(pubsub = %sub.pubsub, topic = %sub.topic, dead_letter_topic = %topic, message_id = %msg.id, error = %e, "failed to send the message to the dead-letter topic; it stays unacknowledged");
                false
            }
        }
    }
}

#[cfg(test)]
#[path = "handler_tests.rs"]
mod tests;
