//! `PubSubClient`: the per-call wrapper the publish facade and the deliveries use a broker
//! through (docs/architecture.md §1.5-1.6).
//!
//! Publishing holds an in-flight token of the instance's tracker (the host drains it before it
//! closes the broker) under the component call deadline. A subscription runs under a child of
//! the instance's `retired` token: when the host replaces the instance (reconnect in place, a
//! restart) or stops, the token fires, the broker stops taking messages for it, and the
//! `Delivery` that owns the subscription sees [`PubSubClient::retired`] and subscribes again on
//! the instance the directory publishes next. Unacknowledged messages stay in the broker.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{BulkFailure, BulkPublishRequest, Feature, MessageHandler, PubSub, PubSubError, PublishRequest, SubscribeRequest};

/// Front door of one broker instance.
#[derive(Clone)]
pub struct PubSubClient {
    broker: Arc<dyn PubSub>,
    timeout: Duration,
    in_flight: TaskTracker,
    retired: CancellationToken,
}

impl PubSubClient {
    /// Wraps `broker`; calls give up after `timeout`, are counted in `in_flight`, and
    /// subscriptions end when `retired` fires.
    pub fn new(broker: Arc<dyn PubSub>, timeout: Duration, in_flight: TaskTracker, retired: CancellationToken) -> Self {
        Self { broker, timeout, in_flight, retired }
    }

    /// This client as a call under a resiliency policy sees it: with `policy_timeout` set, the
    /// policy's timeout governs the call and `--component-call-timeout` (a default only) does
    /// not cut it; without, the client keeps its deadline.
    pub fn under_policy(&self, policy_timeout: Option<Duration>) -> Self {
        let mut c = self.clone();
        if policy_timeout.is_some() {
            // tokio treats a deadline past its far future as none.
            c.timeout = Duration::MAX;
        }
        c
    }

    /// Capabilities of the broker.
    pub fn features(&self) -> &'static [Feature] {
        self.broker.features()
    }

    /// Whether the broker has `f`.
    pub fn has(&self, f: Feature) -> bool {
        self.broker.features().contains(&f)
    }

    /// The broker's poison limit (`None`: it cannot redeliver).
    pub fn max_delivery_count(&self) -> Option<u32> {
        self.broker.max_delivery_count()
    }

    /// The component's topic rules, if it has any.
    pub fn scopes(&self) -> Option<&crate::pubsub::scopes::Scopes> {
        self.broker.scopes()
    }

    /// Whether `app_id` may publish to `topic` (daprd's `publishingScopes`, `allowedTopics`,
    /// `protectedTopics`).
    pub fn may_publish(&self, app_id: &str, topic: &str) -> bool {
        self.broker.scopes().is_none_or(|s| s.may_publish(app_id, topic))
    }

    /// Whether `app_id` may subscribe to `topic` (`subscriptionScopes`, `allowedTopics`,
    /// `protectedTopics`).
    pub fn may_subscribe(&self, app_id: &str, topic: &str) -> bool {
        self.broker.scopes().is_none_or(|s| s.may_subscribe(app_id, topic))
    }

    /// Publishes one message under the call deadline.
    pub async fn publish(&self, req: PublishRequest) -> Result<(), PubSubError> {
        let _token = self.in_flight.token();
        tokio::time::timeout(self.timeout, self.broker.publish(req)).await.map_err(|_| PubSubError::Timeout(self.timeout))?
    }

    /// Publishes many under the call deadline.
    pub async fn bulk_publish(&self, req: BulkPublishRequest) -> Result<Vec<BulkFailure>, PubSubError> {
        let _token = self.in_flight.token();
        tokio::time::timeout(self.timeout, self.broker.bulk_publish(req)).await.map_err(|_| PubSubError::Timeout(self.timeout))?
    }

    /// Subscribes; the subscription ends when `cancel` or this instance's retirement fires.
    /// Returns the token the subscription runs under (cancel it to unsubscribe).
    pub async fn subscribe(&self, req: SubscribeRequest, handler: Arc<dyn MessageHandler>, cancel: &CancellationToken) -> Result<CancellationToken, PubSubError> {
        if self.retired.is_cancelled() {
            return Err(PubSubError::Closed);
        }
        let token = self.retired.child_token();
        let outer = cancel.clone();
        let inner = token.clone();
        // One token for the broker: fired by the caller's cancel or by the instance's retirement.
        tokio::spawn(async move {
            tokio::select! {
                _ = outer.cancelled() => inner.cancel(),
                _ = inner.cancelled() => {}
            }
        });
        let _token = self.in_flight.token();
        tokio::time::timeout(self.timeout, self.broker.subscribe(req, handler, token.clone()))
            .await
            .map_err(|_| PubSubError::Timeout(self.timeout))??;
        Ok(token)
    }

    /// Fires when the host retires this instance (replaced or stopping).
    pub fn retired(&self) -> &CancellationToken {
        &self.retired
    }

    /// The instance's in-flight tracker: a delivery holds a token of it while a message is in
    /// the app's hands, so a draining host waits for it.
    pub fn in_flight(&self) -> &TaskTracker {
        &self.in_flight
    }
}
