//! `SecretClient`: the per-call wrapper the secrets facade and the `secretKeyRef` resolver call a
//! secret store through.
//!
//! It holds the store's trait object straight from the directory snapshot (no mailbox on the
//! way) and adds what every call needs: the component call deadline (`--component-call-timeout`)
//! and an in-flight token of the instance's tracker, so the host drains the call before it
//! closes the store. The lifecycle lives in `components::host`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use super::{Metadata, Secret, SecretError, SecretStore};

/// Front door of one secret store.
#[derive(Clone)]
pub struct SecretClient {
    store: Arc<dyn SecretStore>,
    timeout: Duration,
    in_flight: TaskTracker,
}

impl SecretClient {
    /// Wraps `store`; calls give up after `timeout` and are counted in `in_flight`.
    pub fn new(store: Arc<dyn SecretStore>, timeout: Duration, in_flight: TaskTracker) -> Self {
        Self { store, timeout, in_flight }
    }

    /// This client as a call under a resiliency policy sees it: with `policy_timeout` set, the
    /// policy's timeout governs the call and `--component-call-timeout` (a default only) does
    /// not cut it; without, the client keeps its deadline.
    pub fn under_policy(&self, policy_timeout: Option<Duration>) -> Self {
        let mut c = self.clone();
        if policy_timeout.is_some() {
            // tokio treats a deadline past its far future as none.
            c.timeout = Duration::MAX;
        }
        c
    }

    /// Capabilities.
    pub fn features(&self) -> &'static [&'static str] {
        self.store.features()
    }

    async fn guarded<T>(&self, call: impl Future<Output = Result<T, SecretError>>) -> Result<T, SecretError> {
        let _token = self.in_flight.token();
        tokio::time::timeout(self.timeout, call).await.map_err(|_| SecretError::Timeout(self.timeout))?
    }

    /// One secret.
    pub async fn get(&self, name: String, metadata: Metadata) -> Result<Secret, SecretError> {
        self.guarded(self.store.get(&name, &metadata)).await
    }

    /// Every secret.
    pub async fn bulk_get(&self, metadata: Metadata) -> Result<BTreeMap<String, Secret>, SecretError> {
        self.guarded(self.store.bulk_get(&metadata)).await
    }
}
