//! `PubSubKind`: which brokers rapr ships and how the component machinery builds, probes,
//! closes and publishes them (the `pubsub` line of `components/categories.rs`).

use std::sync::Arc;

use crate::components::category::{BoxFuture, CategoryKind, EntryContext};
use crate::components::metadata::ComponentMetadata;
use crate::components::pubsub::{PubSub, PubSubClient};
use crate::components::registry::{ComponentError, Registry};

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

    fn build(factory: PubSubFactory, name: String, md: ComponentMetadata) -> BoxFuture<'static, Result<Arc<dyn PubSub>, ComponentError>> {
        factory(name, md)
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
