//! Starting one component instance: resolve its `secretKeyRef`s through the one resolver, spawn
//! its `ComponentHost` under the supervisor, and take the live instance it initialised.
//!
//! Runs on a task of its own (never in the supervisor's mailbox), so a slow init or secret lookup
//! holds up nothing else.

use ractor::{Actor, ActorCell, ActorId, ActorRef};

use super::directory::Directory;
use super::host::{self, ComponentHost, ComponentHostArgs, ComponentHostMsg, Live};
use super::metadata::templates::Identity;
use super::registry::ComponentError;
use super::secret_refs::SecretRefs;
use crate::config::ComponentSpec;

/// A running component: its host and the instance it serves.
#[derive(Clone)]
pub struct Running {
    /// Host process.
    pub host: ActorRef<ComponentHostMsg>,
    /// The live instance (replaced in place when the host reconnects).
    pub live: Live,
}

impl Running {
    /// The host's process id (to match supervision events).
    pub fn id(&self) -> ActorId {
        self.host.get_id()
    }

    /// The host's cell.
    pub fn cell(&self) -> ActorCell {
        self.host.get_cell()
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

/// Fills the `secretKeyRef`s of `spec` from its `auth.secretStore` as published in `directory`.
///
/// As daprd's secret processor: a secret that cannot be read, or has no such key, is logged and
/// the component starts without that value (its own metadata checks then decide). A store that
/// is not set or not configured fails the component for good, one that is not ready yet fails
/// this attempt (daprd parks the component until the store loads; rapr shows it failed and
/// retries, docs/runtime-semantics.md).
///
/// A resolved value gets the metadata templates expanded as a literal one did at load, since
/// daprd expands after resolving (`{podName}` without a pod name fails the component for good).
pub async fn resolve_secrets(spec: &ComponentSpec, directory: &Directory, identity: &Identity) -> Result<ComponentSpec, StartFailure> {
    let refs: Vec<_> = spec.metadata.iter().filter(|m| m.value.is_none()).filter_map(|m| m.secret_key_ref.as_ref().map(|r| (m.name.clone(), r.clone()))).collect();
    if refs.is_empty() {
        return Ok(spec.clone());
    }
    let secrets = SecretRefs::fetch(directory, spec.secret_store.as_deref(), refs.iter().map(|(_, r)| r)).await.map_err(|e| StartFailure {
        message: format!("component {}: metadata {} {e}", spec.name, refs[0].0),
        permanent: e.is_permanent(),
    })?;
    let mut resolved = spec.clone();
    for item in resolved.metadata.iter_mut().filter(|m| m.value.is_none()) {
        let Some(r) = &item.secret_key_ref else { continue };
        match secrets.value(r) {
            Ok(v) => {
                let v = identity.expand(&item.name, &v).map_err(|e| StartFailure { message: format!("component {}: {e}", spec.name), permanent: true })?;
                item.value = Some(v);
            }
            Err(e) => tracing::error!(component = %spec.name, metadata = %item.name, error = %e, "secretKeyRef not resolved; the component starts without this value"),
        }
    }
    Ok(resolved)
}

fn spawn_failure(e: ractor::SpawnErr) -> StartFailure {
    match e {
        ractor::SpawnErr::StartupFailed(err) => {
            let permanent = err.downcast_ref::<ComponentError>().is_some_and(ComponentError::is_permanent);
            StartFailure { message: err.to_string(), permanent }
        }
        other => StartFailure { message: other.to_string(), permanent: false },
    }
}

/// Spawns the host of `args.spec` (already resolved) under `supervisor` as `name`.
pub async fn start(args: ComponentHostArgs, name: String, supervisor: ActorCell) -> Result<Running, StartFailure> {
    let timeout = args.call_timeout;
    let (host, _) = Actor::spawn_linked(Some(name), ComponentHost, args, supervisor).await.map_err(spawn_failure)?;
    match host::current(&host, timeout).await {
        Ok(live) => Ok(Running { host, live }),
        Err(message) => {
            host.stop(None);
            Err(StartFailure { message, permanent: false })
        }
    }
}
