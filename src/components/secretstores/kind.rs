//! `SecretKind`: how the component machinery builds, probes and publishes secret stores (the
//! `secretstores` line of `components/categories.rs`).

use std::sync::Arc;

use crate::components::category::{BoxFuture, CategoryKind, EntryContext};
use crate::components::metadata::ComponentMetadata;
use crate::components::registry::{ComponentError, Registry};
use crate::components::secretstores::{SecretClient, SecretStore};

/// A secret store factory (the local stores initialise synchronously).
pub type SecretFactory = fn(String, ComponentMetadata) -> Result<Arc<dyn SecretStore>, ComponentError>;

/// The `secretstores.*` category.
pub struct SecretKind;

impl CategoryKind for SecretKind {
    const PREFIX: &'static str = "secretstores";
    type Handle = dyn SecretStore;
    type Factory = SecretFactory;
    type Entry = SecretClient;

    fn register(reg: &mut Registry) {
        super::register(reg);
    }

    fn build(factory: SecretFactory, name: String, md: ComponentMetadata) -> BoxFuture<'static, Result<Arc<dyn SecretStore>, ComponentError>> {
        // The local stores initialise synchronously.
        Box::pin(std::future::ready(factory(name, md)))
    }

    fn capabilities(handle: &dyn SecretStore) -> Vec<&'static str> {
        handle.features().to_vec()
    }

    fn ping(handle: &dyn SecretStore) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { handle.ping().await.map_err(|e| e.to_string()) })
    }

    fn close(_handle: &dyn SecretStore) -> BoxFuture<'_, ()> {
        // Secret stores hold no connections to release.
        Box::pin(std::future::ready(()))
    }

    fn entry(handle: Arc<dyn SecretStore>, ctx: EntryContext<'_>) -> SecretClient {
        SecretClient::new(handle, ctx.call_timeout, ctx.in_flight.clone())
    }
}
