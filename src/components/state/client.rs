//! `StateClient`: the per-call wrapper the state facade calls a store through.
//!
//! It holds the store's trait object straight from the directory snapshot, so a request never
//! waits in a host's mailbox, and adds what the host used to add per request: the component call
//! deadline (`--component-call-timeout`), the crash points `state:{set,delete,transact}:
//! {before,after}` (tests/it/faults.rs) and an in-flight token of the instance's tracker, so the
//! host drains the call before it closes the store (nothing acknowledged is dropped). Metrics and
//! resiliency stay in the facade around it. The lifecycle lives in `components::host`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use super::{BulkGetItem, DeleteRequest, Feature, GetRequest, Metadata, Query, QueryPage, SetRequest, StateStore, StoreError, StoredItem, TransactionOp};
use crate::runtime::failpoints::crash_point;

/// Front door of one state store: typed calls with a deadline.
#[derive(Clone)]
pub struct StateClient {
    store: Arc<dyn StateStore>,
    timeout: Duration,
    in_flight: TaskTracker,
}

/// The crash points around one write.
struct Points {
    before: &'static str,
    after: &'static str,
}

impl StateClient {
    /// Wraps `store`; calls give up after `timeout` and are counted in `in_flight`.
    pub fn new(store: Arc<dyn StateStore>, timeout: Duration, in_flight: TaskTracker) -> Self {
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

    /// Capabilities of the store.
    pub fn features(&self) -> &'static [Feature] {
        self.store.features()
    }

    /// Whether the store has `f`.
    pub fn has(&self, f: Feature) -> bool {
        self.store.features().contains(&f)
    }

    /// The store's transaction size limit.
    pub fn max_transaction_ops(&self) -> Option<usize> {
        self.store.max_transaction_ops()
    }

    async fn guarded<T>(&self, points: Option<Points>, call: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        let _token = self.in_flight.token();
        if let Some(p) = &points {
            crash_point(p.before);
        }
        let r = tokio::time::timeout(self.timeout, call).await.map_err(|_| StoreError::Timeout(self.timeout))?;
        if let (Some(p), true) = (&points, r.is_ok()) {
            crash_point(p.after);
        }
        r
    }

    /// Reads one key.
    pub async fn get(&self, req: GetRequest) -> Result<Option<StoredItem>, StoreError> {
        self.guarded(None, self.store.get(req)).await
    }

    /// Reads many keys.
    pub async fn bulk_get(&self, reqs: Vec<GetRequest>) -> Result<Vec<BulkGetItem>, StoreError> {
        self.guarded(None, self.store.bulk_get(reqs)).await
    }

    /// Writes one key.
    pub async fn set(&self, req: SetRequest) -> Result<(), StoreError> {
        self.guarded(Some(Points { before: "state:set:before", after: "state:set:after" }), self.store.set(req)).await
    }

    /// Deletes one key.
    pub async fn delete(&self, req: DeleteRequest) -> Result<(), StoreError> {
        self.guarded(Some(Points { before: "state:delete:before", after: "state:delete:after" }), self.store.delete(req)).await
    }

    /// Applies operations atomically.
    pub async fn transact(&self, ops: Vec<TransactionOp>, metadata: Metadata) -> Result<(), StoreError> {
        self.guarded(Some(Points { before: "state:transact:before", after: "state:transact:after" }), self.store.transact(ops, metadata)).await
    }

    /// Runs a query under `prefix`.
    pub async fn query(&self, prefix: String, query: Query, metadata: Metadata) -> Result<QueryPage, StoreError> {
        self.guarded(None, self.store.query(&prefix, query, metadata)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::state::memory::MemoryStore;
    use bytes::Bytes;

    #[tokio::test]
    async fn calls_the_store_and_holds_a_drain_token_while_running() {
        let tracker = TaskTracker::new();
        let client = StateClient::new(Arc::new(MemoryStore::new()), Duration::from_secs(5), tracker.clone());
        assert!(client.has(Feature::Transactional));
        assert!(!client.has(Feature::QueryApi));
        client.set(SetRequest { key: "k".into(), value: Bytes::from_static(b"1"), is_json: true, ..Default::default() }).await.unwrap();
        let got = client.get(GetRequest { key: "k".into(), ..Default::default() }).await.unwrap().unwrap();
        assert_eq!(got.data, "1");
        // A call in progress keeps a closed tracker from draining; its end releases it.
        let token = tracker.token();
        tracker.close();
        assert!(tokio::time::timeout(Duration::from_millis(50), tracker.wait()).await.is_err(), "a call in flight holds the drain");
        drop(token);
        tokio::time::timeout(Duration::from_secs(1), tracker.wait()).await.expect("drained once the call ended");
    }
}
