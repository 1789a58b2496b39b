//! `PubSubKind`: which brokers rapr ships and how the component machinery builds, probes,
//! closes and publishes them (the `pubsub` line of `components/categories.rs`).

use std::sync::Arc;

use crate::components::category::{BoxFuture, CategoryKind, EntryContext};
use crate::components::metadata::ComponentMetadata;
use crate::components::pubsub::{BulkFailure, BulkPublishRequest, Feature, MessageHandler, PubSub, PubSubClient, PubSubError, PublishRequest, SubscribeRequest};
use crate::components::registry::{ComponentError, Registry};
use crate::pubsub::scopes::Scopes;

/// A broker factory: name and metadata to an initialised broker.
pub type PubSubFactory = fn(String, ComponentMetadata) -> BoxFuture<'static, Result<Arc<dyn PubSub>, ComponentError>>;

/// The `pubsub.*` category.
pub struct PubSubKind;

impl CategoryKind for PubSubKind {
    const PREFIX: &'static str = "pubsub";
    type Handle = dyn PubSub;
    type Factory = PubSubFactory;
    type Entry = PubSubClient;

    fn register(reg: &mut Registry) {
        // Each broker's module adds its line here: `memory::register(reg)`, `sqlite::register(reg)`,
        // `redis::register(reg)`.
        super::memory::register(reg);
        super::redis::register(reg);
        super::sqlite::register(reg);
    }

    /// The topic-scoping keys are the runtime's: read here (so the broker never warns them
    /// unread) and kept beside the broker.
    fn build(factory: PubSubFactory, name: String, mut md: ComponentMetadata) -> BoxFuture<'static, Result<Arc<dyn PubSub>, ComponentError>> {
        let scopes = Scopes::from_metadata(&mut md);
        Box::pin(async move {
            let broker = factory(name, md).await?;
            if scopes.is_empty() {
                return Ok(broker);
            }
            Ok(Arc::new(Scoped { inner: broker, scopes }) as Arc<dyn PubSub>)
        })
    }

    fn capabilities(handle: &dyn PubSub) -> Vec<&'static str> {
        handle.features().iter().map(|f| f.as_str()).collect()
    }

    fn ping(handle: &dyn PubSub) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { handle.ping().await.map_err(|e| e.to_string()) })
    }

    fn close(handle: &dyn PubSub) -> BoxFuture<'_, ()> {
        Box::pin(handle.close())
    }

    fn entry(handle: Arc<dyn PubSub>, ctx: EntryContext<'_>) -> PubSubClient {
        PubSubClient::new(handle, ctx.call_timeout, ctx.in_flight.clone(), ctx.retired.clone())
    }
}

/// A broker with its component's topic rules.
struct Scoped {
    inner: Arc<dyn PubSub>,
    scopes: Scopes,
}

#[async_trait::async_trait]
impl PubSub for Scoped {
    fn features(&self) -> &'static [Feature] {
        self.inner.features()
    }
    fn max_delivery_count(&self) -> Option<u32> {
        self.inner.max_delivery_count()
    }
    async fn publish(&self, req: PublishRequest) -> Result<(), PubSubError> {
        self.inner.publish(req).await
    }
    async fn bulk_publish(&self, req: BulkPublishRequest) -> Result<Vec<BulkFailure>, PubSubError> {
        self.inner.bulk_publish(req).await
    }
    async fn subscribe(&self, req: SubscribeRequest, handler: Arc<dyn MessageHandler>, cancel: tokio_util::sync::CancellationToken) -> Result<(), PubSubError> {
        self.inner.subscribe(req, handler, cancel).await
    }
    fn scopes(&self) -> Option<&Scopes> {
        Some(&self.scopes)
    }
    async fn ping(&self) -> Result<(), PubSubError> {
        self.inner.ping().await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}
