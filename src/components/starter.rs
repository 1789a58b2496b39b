//! Starting one component instance: resolve its `secretKeyRef`s through its secret store, spawn
//! the host process of its category under the supervisor, and connect its client.
//!
//! Runs on a task of its own (never in the supervisor's mailbox), so a slow init or secret lookup
//! holds up nothing else.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorId, ActorRef};

use super::registry::{ComponentError, Registry};
use super::secretstores::host::{SecretStoreHost, SecretStoreHostArgs, SecretStoreMsg};
use super::secretstores::SecretClient;
use super::state::host::{StateStoreHost, StateStoreHostArgs, StateStoreMsg};
use super::state::StateClient;
use crate::config::ComponentSpec;


/// A running component: its host and front door.
#[derive(Clone)]
pub enum Running {
    /// A state store.
    State {
        /// Host process.
        host: ActorRef<StateStoreMsg>,
        /// Front door.
        client: StateClient,
    },
    /// A secret store.
    Secret {
        /// Host process.
        host: ActorRef<SecretStoreMsg>,
        /// Front door.
        client: SecretClient,
    },
}

impl Running {
    /// The host's process id (to match supervision events).
    pub fn id(&self) -> ActorId {
        match self {
            Running::State { host, .. } => host.get_id(),
            Running::Secret { host, .. } => host.get_id(),
        }
    }

    /// The host's cell.
    pub fn cell(&self) -> ActorCell {
        match self {
            Running::State { host, .. } => host.get_cell(),
            Running::Secret { host, .. } => host.get_cell(),
        }
    }

    /// Capabilities for metadata.
    pub fn capabilities(&self) -> Vec<&'static str> {
        match self {
            Running::State { client, .. } => client.features().iter().map(|f| f.as_str()).collect(),
            Running::Secret { client, .. } => client.features().to_vec(),
        }
    }
}

/// Why a start attempt failed, and whether retrying can help.
#[derive(Debug, Clone)]
pub struct StartFailure {
    /// What went wrong.
    pub message: String,
    /// Retrying cannot help (unknown type, bad metadata, no secret store configured).
    pub permanent: bool,
}

impl StartFailure {
    fn transient(message: String) -> Self {
        Self { message, permanent: false }
    }
}

/// Fills every `secretKeyRef` of `spec` from `store` (the one named by `auth.secretStore`).
pub async fn resolve_secrets(spec: &ComponentSpec, store: Option<&SecretClient>) -> Result<ComponentSpec, StartFailure> {
    let refs: Vec<_> = spec.metadata.iter().filter(|m| m.value.is_none() && m.secret_key_ref.is_some()).collect();
    if refs.is_empty() {
        return Ok(spec.clone());
    }
    let Some(store_name) = spec.secret_store.as_deref() else {
        return Err(StartFailure {
            message: format!("component {}: metadata {} uses secretKeyRef but auth.secretStore is not set", spec.name, refs[0].name),
            permanent: true,
        });
    };
    let Some(client) = store else {
        return Err(StartFailure::transient(format!("component {}: secret store {store_name} is not ready", spec.name)));
    };
    let mut resolved = spec.clone();
    for item in resolved.metadata.iter_mut().filter(|m| m.value.is_none()) {
        let Some(r) = &item.secret_key_ref else { continue };
        let secret = client.get(r.name.clone(), Default::default()).await.map_err(|e| {
            StartFailure::transient(format!("component {}: metadata {}: secret {} from {store_name}: {e}", spec.name, item.name, r.name))
        })?;
        let value = secret.get(&r.key).cloned().ok_or_else(|| {
            StartFailure::transient(format!("component {}: metadata {}: secret {} in {store_name} has no key {}", spec.name, item.name, r.name, r.key))
        })?;
        item.value = Some(value);
    }
    Ok(resolved)
}

fn spawn_failure(e: ractor::SpawnErr) -> StartFailure {
    match e {
        ractor::SpawnErr::StartupFailed(err) => {
            let permanent = err.downcast_ref::<ComponentError>().is_some_and(ComponentError::is_permanent);
            StartFailure { message: err.to_string(), permanent }
        }
        other => StartFailure::transient(other.to_string()),
    }
}

/// Spawns the host of `spec` (already resolved) under `supervisor` and connects its client, whose
/// calls give up after `timeout`.
pub async fn start(spec: ComponentSpec, registry: Arc<Registry>, name: String, supervisor: ActorCell, timeout: Duration) -> Result<Running, StartFailure> {
    match spec.category() {
        "secretstores" => {
            let (host, _) = Actor::spawn_linked(Some(name), SecretStoreHost, SecretStoreHostArgs { spec, registry }, supervisor)
                .await
                .map_err(spawn_failure)?;
            match SecretClient::connect(host.clone(), timeout).await {
                Ok(client) => Ok(Running::Secret { host, client }),
                Err(e) => {
                    host.stop(None);
                    Err(StartFailure::transient(e.to_string()))
                }
            }
        }
        _ => {
            let (host, _) = Actor::spawn_linked(Some(name), StateStoreHost, StateStoreHostArgs { spec, registry }, supervisor)
                .await
                .map_err(spawn_failure)?;
            match StateClient::connect(host.clone(), timeout).await {
                Ok(client) => Ok(Running::State { host, client }),
                Err(e) => {
                    host.stop(None);
                    Err(StartFailure::transient(e.to_string()))
                }
            }
        }
    }
}
