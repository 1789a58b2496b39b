//! `StreamSubscriptions`: the front door the gRPC `SubscribeTopicEventsAlpha1` adapter starts a
//! streaming subscription through, and [`StreamingSubscription`], the handle that ends it.
//!
//! A streaming subscription is an ordinary subscription (kind Streaming, one default route `/`)
//! run by the `SubscriptionManager` with its own `Delivery`, except that its events go to the
//! app's stream (`app_stream::AppStream`) instead of the app channel, and that it lives exactly as
//! long as the stream: the handle stops it when dropped. The manager checks what daprd checks
//! before the app gets `initial_response` (the pub/sub exists, the sidecar is not draining).

use std::sync::Arc;

use super::app_stream::AppStream;
use super::manager::SubscriptionManagerClient;
use super::Subscription;

/// Why a streaming subscription did not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamRefused {
    /// No pub/sub component of that name (daprd: ERR_PUBSUB_NOT_FOUND).
    #[error("pubsub {0} is not found")]
    NotFound(String),
    /// The sidecar is shutting down (daprd: "subscriber is closed").
    #[error("subscriber is closed")]
    Closed,
    /// The subscription could not be set up.
    #[error("{0}")]
    Failed(String),
}

/// Starts streaming subscriptions.
#[derive(Clone)]
pub struct StreamSubscriptions {
    manager: SubscriptionManagerClient,
}

impl StreamSubscriptions {
    /// Streaming subscriptions run by `manager`.
    pub fn new(manager: SubscriptionManagerClient) -> Self {
        Self { manager }
    }

    /// Starts `sub`, delivering to `sink`; the subscription's delivery treats the stream's end
    /// (`sink.closed()`) as its drain, so what the app had not answered stays in the broker.
    pub async fn start(&self, sub: Subscription, sink: AppStream) -> Result<StreamingSubscription, StreamRefused> {
        let closed = sink.closed().clone();
        let index = self.manager.start_stream(sub, Arc::new(sink), closed).await?;
        Ok(StreamingSubscription { manager: self.manager.clone(), index })
    }
}

/// A running streaming subscription; dropping it stops it (its stream ended).
pub struct StreamingSubscription {
    manager: SubscriptionManagerClient,
    index: usize,
}

impl StreamingSubscription {
    /// Stops the subscription (same as dropping the handle).
    pub fn stop(self) {}
}

impl Drop for StreamingSubscription {
    fn drop(&mut self) {
        self.manager.stop_stream(self.index);
    }
}
