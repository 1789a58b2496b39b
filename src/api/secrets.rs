//! `SecretsApi`: the transport-free secrets facade: store lookup, the Configuration's secret
//! scopes (`secrets.scopes`), then the store through its `SecretClient`, under the store's
//! outbound resiliency policy (`targets.components.<store>.outbound`, else the
//! `DefaultSecretstoreComponentOutbound*` defaults), as daprd's pkg/api/universal/secrets.go. A
//! policy's timeout replaces `--component-call-timeout` for the call. Each store call (the whole
//! policy run) is one sample of daprd's `dapr_component_secret_*` metrics; calls the scopes deny
//! never reach the store and are not counted.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::components::directory::DirectoryHandle;
use crate::components::secretstores::{Metadata, Secret, SecretClient, SecretError};
use crate::config::configuration::SecretScope;
use crate::resiliency::{AttemptError, ComponentKind, Policy, PolicyError, Resiliency};
use crate::runtime::metrics::ComponentOp;

/// Failures of the secrets API before they are mapped to the wire.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretsApiError {
    /// No secret store configured.
    #[error("secret store is not configured")]
    NotConfigured,
    /// No store by that name.
    #[error("failed finding secret store with key {store}")]
    NotFound { store: String },
    /// The scopes deny this key.
    #[error("access denied by policy to get {key:?} from {store:?}")]
    PermissionDenied { store: String, key: String },
    /// The store failed (or the policy gave up: its text is daprd's).
    #[error("failed getting secret with key {key} from secret store {store}: {source}")]
    Get { store: String, key: String, source: PolicyError<SecretError> },
    /// The store failed a bulk read.
    #[error("failed getting secrets from secret store {store}: {source}")]
    BulkGet { store: String, source: PolicyError<SecretError> },
}

/// The secrets facade.
#[derive(Clone)]
pub struct SecretsApi {
    directory: DirectoryHandle,
    scopes: Arc<BTreeMap<String, SecretScope>>,
    resiliency: Resiliency,
}

impl SecretsApi {
    /// Builds the facade.
    pub fn new(directory: DirectoryHandle, scopes: BTreeMap<String, SecretScope>) -> Self {
        Self { directory, scopes: Arc::new(scopes), resiliency: Resiliency::none() }
    }

    /// Calls stores under `resiliency`'s outbound policies.
    pub fn with_resiliency(mut self, resiliency: Resiliency) -> Self {
        self.resiliency = resiliency;
        self
    }

    /// The store's outbound policy, and its client as the policy's timeout leaves it.
    fn policy(&self, store: &str, client: &SecretClient) -> (Policy, SecretClient) {
        let policy = self.resiliency.for_component_outbound(store, ComponentKind::SecretStore);
        let client = client.under_policy(policy.timeout());
        (policy, client)
    }

    fn store(&self, name: &str) -> Result<SecretClient, SecretsApiError> {
        let d = self.directory.load();
        if let Some(c) = d.secrets.get(name) {
            return Ok(c.clone());
        }
        if !d.has_secret_stores() {
            return Err(SecretsApiError::NotConfigured);
        }
        Err(SecretsApiError::NotFound { store: name.to_string() })
    }

    /// Counts one store call in daprd's component metrics.
    fn measured<T, E>(&self, store: &str, op: ComponentOp, started: std::time::Instant, result: &Result<T, E>) {
        if let Some(m) = &self.directory.load().metrics {
            m.secret_call(store, op, result.is_ok(), started);
        }
    }

    fn allowed(&self, store: &str, key: &str) -> bool {
        self.scopes.get(store).is_none_or(|s| s.allows(key))
    }

    /// One secret.
    pub async fn get(&self, store: &str, key: &str, metadata: Metadata) -> Result<Secret, SecretsApiError> {
        let client = self.store(store)?;
        if !self.allowed(store, key) {
            return Err(SecretsApiError::PermissionDenied { store: store.into(), key: key.into() });
        }
        let (policy, client) = self.policy(store, &client);
        let started = std::time::Instant::now();
        // As daprd, every store error is worth another attempt.
        let result = policy.run(|| retriable(client.get(key.to_string(), metadata.clone()))).await;
        self.measured(store, ComponentOp::Get, started, &result);
        result.map_err(|source| SecretsApiError::Get { store: store.into(), key: key.into(), source })
    }

    /// Every secret the scopes allow.
    pub async fn bulk_get(&self, store: &str, metadata: Metadata) -> Result<BTreeMap<String, Secret>, SecretsApiError> {
        let client = self.store(store)?;
        let (policy, client) = self.policy(store, &client);
        let started = std::time::Instant::now();
        let result = policy.run(|| retriable(client.bulk_get(metadata.clone()))).await;
        self.measured(store, ComponentOp::BulkGet, started, &result);
        let all = result.map_err(|source| SecretsApiError::BulkGet { store: store.into(), source })?;
        Ok(all.into_iter().filter(|(k, _)| self.allowed(store, k)).collect())
    }
}

async fn retriable<T>(call: impl std::future::Future<Output = Result<T, SecretError>>) -> Result<T, AttemptError<SecretError>> {
    call.await.map_err(AttemptError::Retriable)
}
