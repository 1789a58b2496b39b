//! Hot reload of declarative subscriptions (daprd v1.18's `HotReload`, on by default): the
//! `SubscriptionManager`'s side. As daprd's subscriptions reconciler: an unchanged
//! `Subscription` is left alone, a changed one is closed and started again from its new spec, a
//! removed one is closed, a new one started. Closing ends the broker subscription; messages it
//! had handed to the app but not settled stay unacknowledged and come back (nothing is
//! acknowledged by a reload). The app's own (programmatic) subscriptions are not asked for again,
//! as daprd, and still win over a declared one for the same topic.

use ractor::ActorRef;

use super::{SubscriptionManagerMsg, SubscriptionManagerState};
use crate::pubsub::{Subscription, SubscriptionKind};

impl SubscriptionManagerState {
    /// Stops the subscription under `key` (not a stream: the manager's drain token stays).
    fn close(&mut self, key: usize) {
        if let Some(r) = self.running.remove(&key) {
            tracing::info!(subscription = %r.status.subscription.name, pubsub = %r.status.subscription.pubsub, topic = %r.status.subscription.topic, "closing subscription to reload it");
            r.stop.cancel();
            if let Some(c) = r.child {
                c.stop(Some("subscription reloaded".into()));
            }
        }
    }

    /// Applies the declarative subscriptions now on disk; the caller publishes.
    pub(super) async fn reconcile_declared(&mut self, me: &ActorRef<SubscriptionManagerMsg>, declared: Vec<Subscription>) {
        if self.shared.draining.is_cancelled() {
            return;
        }
        let stale: Vec<usize> = self
            .running
            .iter()
            .filter(|(_, r)| r.status.subscription.kind == SubscriptionKind::Declarative)
            .filter(|(_, r)| !declared.iter().any(|d| d == &r.status.subscription))
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            self.close(key);
        }
        for sub in declared {
            let covered = self.running.values().any(|r| {
                r.status.subscription.kind != SubscriptionKind::Streaming && r.status.subscription.pubsub == sub.pubsub && r.status.subscription.topic == sub.topic
            });
            if covered {
                let same = self.running.values().any(|r| r.status.subscription == sub);
                if !same {
                    tracing::warn!(subscription = %sub.name, pubsub = %sub.pubsub, topic = %sub.topic, "another subscription already covers this topic; ignored");
                }
                continue;
            }
            tracing::info!(subscription = %sub.name, pubsub = %sub.pubsub, topic = %sub.topic, "starting subscription from disk");
            self.admit_and_add(me, sub).await;
        }
    }
}
