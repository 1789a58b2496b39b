//! `SubscriptionTable`: the subscriptions the sidecar runs, as `/v1.0/metadata` reports them.
//!
//! `SubscriptionManager` is the only writer: it publishes a new snapshot whenever a subscription
//! starts, pauses (its component restarting), resumes, ends (a streaming connection closed) or
//! parks a message. The metadata facade reads the snapshot without a mailbox hop.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::Subscription;

/// One running subscription and how it is doing.
#[derive(Debug, Clone)]
pub struct SubscriptionStatus {
    /// The subscription as declared.
    pub subscription: Subscription,
    /// Whether its delivery is taking messages (false while its component restarts, the app is
    /// unhealthy, or its declaration was rejected).
    pub active: bool,
    /// Why it is not active, or the last delivery error worth showing.
    pub error: Option<String>,
    /// Messages parked at the poison limit since start (they stay in the broker).
    pub parked: u64,
}

/// Shared handle to the current list.
#[derive(Clone, Default)]
pub struct SubscriptionTable(Arc<ArcSwap<Vec<SubscriptionStatus>>>);

impl SubscriptionTable {
    /// The current list, in declaration order.
    pub fn load(&self) -> Arc<Vec<SubscriptionStatus>> {
        self.0.load_full()
    }

    /// Publishes a new list (`SubscriptionManager` only).
    pub fn publish(&self, list: Vec<SubscriptionStatus>) {
        self.0.store(Arc::new(list));
    }
}
