//! `StateKind`: which state stores rapr ships and how the component machinery builds, probes,
//! closes and publishes them (the `state` line of `components/categories.rs`).

use std::sync::Arc;

use crate::components::category::{BoxFuture, CategoryKind, EntryContext};
use crate::components::directory::StateEntry;
use crate::components::metadata::ComponentMetadata;
use crate::components::registry::{warn_unread, ComponentError, Registry};
use crate::components::state::{memory::MemoryStore, mysql, postgres, redis, sqlite, StateClient, StateStore};

/// A state store factory: name and metadata to an initialised store.
pub type StateFactory = fn(String, ComponentMetadata) -> BoxFuture<'static, Result<Arc<dyn StateStore>, ComponentError>>;

/// The `state.*` category.
pub struct StateKind;

impl CategoryKind for StateKind {
    const PREFIX: &'static str = "state";
    type Handle = dyn StateStore;
    type Factory = StateFactory;
    type Entry = StateEntry;

    fn register(reg: &mut Registry) {
        reg.add_state(&["state.in-memory"], "v1", |_name, _md| Box::pin(async { Ok(Arc::new(MemoryStore::new()) as Arc<dyn StateStore>) }));
        reg.add_state(&["state.sqlite", "state.sqlite3"], "v1", |name, mut md| {
            Box::pin(async move {
                let cfg = sqlite::SqliteConfig::from_metadata(&mut md).map_err(|mut e| {
                    e.component = name.clone();
                    e
                })?;
                warn_unread(&name, &md);
                let store = sqlite::SqliteStore::open(&name, cfg)
                    .await
                    .map_err(|e| ComponentError::Init { name: name.clone(), reason: e.to_string() })?;
                Ok(Arc::new(store) as Arc<dyn StateStore>)
            })
        });
        redis::register(reg);
        postgres::register(reg);
        mysql::register(reg);
    }

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
