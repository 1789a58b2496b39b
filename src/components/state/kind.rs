//! `StateKind`: how the component machinery builds, probes, closes and publishes state stores
//! (the `state` line of `components/categories.rs`).

use std::sync::Arc;

use crate::components::category::{BoxFuture, CategoryKind, EntryContext};
use crate::components::directory::StateEntry;
use crate::components::metadata::ComponentMetadata;
use crate::components::registry::{ComponentError, StateFactory};
use crate::components::state::{StateClient, StateStore};

/// The `state.*` category.
pub struct StateKind;

impl CategoryKind for StateKind {
    const PREFIX: &'static str = "state";
    type Handle = dyn StateStore;
    type Factory = StateFactory;
    type Entry = StateEntry;

    fn build(factory: StateFactory, name: String, md: ComponentMetadata) -> BoxFuture<'static, Result<Arc<dyn StateStore>, ComponentError>> {
        factory(name, md)
    }

    fn capabilities(handle: &dyn StateStore) -> Vec<&'static str> {
        handle.features().iter().map(|f| f.as_str()).collect()
    }

    fn ping(handle: &dyn StateStore) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { handle.ping().await.map_err(|e| e.to_string()) })
    }

    fn close(handle: &dyn StateStore) -> BoxFuture<'_, ()> {
        handle.close()
    }

    fn entry(handle: Arc<dyn StateStore>, ctx: EntryContext<'_>) -> StateEntry {
        let client = StateClient::new(handle, ctx.call_timeout, ctx.in_flight.clone());
        StateEntry { client, prefix: ctx.prefix.clone() }
    }
}
