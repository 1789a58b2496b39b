//! The pub/sub broker contract: what a broker component (in-memory, the embedded SQLite broker,
//! Redis Streams, later JetStream, RabbitMQ, MQTT, Kafka) does, and nothing of the runtime's
//! policy.
//!
//! A broker moves opaque bytes: the CloudEvents envelope is built by the publish facade
//! (`crate::pubsub::cloudevents`) and read by the delivery (`crate::pubsub::delivery`). A broker
//! never decides what happens to a message a handler did not accept: the handler answers an
//! [`Outcome`] and the broker only acknowledges on `Ack`, keeps the message for redelivery on
//! `Retry`, and on `Park` keeps it but stops redelivering it (rapr's guarantee: nothing is
//! acknowledged silently; docs/runtime-semantics.md, pub/sub). `pubsub.in-memory` is the one
//! exception, as daprd's: it has nowhere to keep a message and drops it.

pub mod client;
pub mod conformance;
pub mod kind;
pub mod memory;
pub mod redis;
pub mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

pub use client::PubSubClient;

/// Per-request metadata as Dapr passes it (`metadata.ttlInSeconds`, `rawPayload`, ...).
pub type Metadata = HashMap<String, String>;

/// A capability a broker declares; reported in `/v1.0/metadata` with daprd's spelling
/// (components-contrib `pubsub.Feature`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// The broker expires messages itself (`metadata.ttlInSeconds`); without it the runtime
    /// writes `expiration` into the envelope and drops expired events on delivery.
    MessageTtl,
    /// Topic names with wildcards.
    SubscribeWildcards,
    /// A native bulk publish.
    BulkPublish,
}

impl Feature {
    /// The capability name daprd reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::MessageTtl => "MESSAGE_TTL",
            Feature::SubscribeWildcards => "SUBSCRIBE_WILDCARDS",
            Feature::BulkPublish => "BULK_PUBLISH",
        }
    }
}

/// One message to publish: the bytes go to the broker unchanged.
#[derive(Debug, Clone, Default)]
pub struct PublishRequest {
    /// The topic (may contain `/`).
    pub topic: String,
    /// The payload: a serialized CloudEvent, or the raw body with `rawPayload=true`.
    pub data: Bytes,
    /// Content type of `data` (`application/cloudevents+json` for an envelope).
    pub content_type: Option<String>,
    /// The request's metadata (`metadata.*` query parameters or the gRPC map).
    pub metadata: Metadata,
}

/// One entry of a bulk publish.
#[derive(Debug, Clone, Default)]
pub struct BulkEntry {
    /// The caller's id of the entry, echoed in failures.
    pub entry_id: String,
    /// The payload (already an envelope unless raw).
    pub data: Bytes,
    /// Content type of `data`.
    pub content_type: String,
    /// The entry's own metadata.
    pub metadata: Metadata,
}

/// A bulk publish: entries to one topic.
#[derive(Debug, Clone, Default)]
pub struct BulkPublishRequest {
    /// The topic.
    pub topic: String,
    /// The entries, in order.
    pub entries: Vec<BulkEntry>,
    /// The request's metadata.
    pub metadata: Metadata,
}

/// An entry a bulk publish did not publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkFailure {
    /// The entry's id.
    pub entry_id: String,
    /// Why.
    pub error: String,
}

/// What a subscription asks of the broker.
#[derive(Debug, Clone, Default)]
pub struct SubscribeRequest {
    /// The topic.
    pub topic: String,
    /// The subscription's metadata (merged over the component's by the runtime).
    pub metadata: Metadata,
}

/// One message as a broker hands it to the runtime.
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// The broker's id of the message (stream entry id, row id), for logs and parking.
    pub id: String,
    /// The topic it was published to.
    pub topic: String,
    /// The payload as published.
    pub data: Bytes,
    /// Content type, when the broker keeps one.
    pub content_type: Option<String>,
    /// Headers the broker carries (binary-mode CloudEvent attributes, broker metadata).
    pub metadata: Metadata,
    /// How many times the broker has handed this message out, this time included (1 on the
    /// first delivery); 0 when the broker does not count.
    pub delivery_count: u32,
}

/// What the runtime decided about one message; the broker acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Handled (success, drop, or published to the dead-letter topic): acknowledge.
    Ack,
    /// Not handled: keep it and deliver it again later.
    Retry,
    /// Over the poison limit with no dead-letter topic: keep it, stop redelivering it.
    Park,
}

/// Where a subscription's messages go: the runtime's delivery.
#[async_trait]
pub trait MessageHandler: Send + Sync + 'static {
    /// Handles one message; the broker acknowledges only on [`Outcome::Ack`].
    async fn handle(&self, msg: Message) -> Outcome;
}

/// Broker failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PubSubError {
    /// The call did not finish within the component call deadline.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The broker cannot be reached.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused or failed the operation.
    #[error("{0}")]
    Failed(String),
    /// A request's metadata is invalid for this broker.
    #[error("invalid metadata: {0}")]
    Metadata(String),
    /// The instance is closing (its host replaced or stopped it).
    #[error("component is closing")]
    Closed,
}

/// A pub/sub broker.
#[async_trait]
pub trait PubSub: Send + Sync + 'static {
    /// Capabilities of the broker.
    fn features(&self) -> &'static [Feature];

    /// The poison limit (component metadata `maxDeliveryCount`, default 10); `None` when the
    /// broker cannot redeliver (in-memory).
    fn max_delivery_count(&self) -> Option<u32> {
        None
    }

    /// Publishes one message; returns once the broker has it durably (as durable as the broker
    /// is configured to be).
    async fn publish(&self, req: PublishRequest) -> Result<(), PubSubError>;

    /// Publishes many; the default publishes one at a time and lists the entries that failed.
    async fn bulk_publish(&self, req: BulkPublishRequest) -> Result<Vec<BulkFailure>, PubSubError> {
        let mut failed = Vec::new();
        for e in req.entries {
            let one = PublishRequest { topic: req.topic.clone(), data: e.data, content_type: Some(e.content_type), metadata: merged(&req.metadata, e.metadata) };
            if let Err(err) = self.publish(one).await {
                failed.push(BulkFailure { entry_id: e.entry_id, error: err.to_string() });
            }
        }
        Ok(failed)
    }

    /// Starts delivering `req.topic`'s messages to `handler` and returns once the subscription
    /// is established (consumer group created, ...). The broker's own tasks then deliver until
    /// `cancel` fires, reconnecting by themselves when the broker goes away and comes back;
    /// after `cancel` they take no new message (handler calls already running finish).
    async fn subscribe(&self, req: SubscribeRequest, handler: Arc<dyn MessageHandler>, cancel: CancellationToken) -> Result<(), PubSubError>;

    /// The component's topic rules (`publishingScopes`, ...): runtime metadata that
    /// `PubSubKind::build` took out before the broker saw it; `None` when there are none.
    fn scopes(&self) -> Option<&crate::pubsub::scopes::Scopes> {
        None
    }

    /// Whether the broker answers (the host's health probe).
    async fn ping(&self) -> Result<(), PubSubError>;

    /// Releases connections (after the host cancelled the subscriptions and drained).
    async fn close(&self) {}
}

/// `entry` over `common`: an entry's own metadata wins.
pub fn merged(common: &Metadata, entry: Metadata) -> Metadata {
    let mut out = common.clone();
    out.extend(entry);
    out
}
