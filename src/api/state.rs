//! `StateApi`: the transport-free state facade shared by the HTTP and gRPC adapters.
//!
//! Validates requests, applies the store's key prefix, checks capabilities, and calls the store
//! through its `StateClient` taken from the directory snapshot (no shared mailbox on the way).
//! Every store call runs under the store's outbound resiliency policy (timeout, retry, circuit
//! breaker); a policy that gives up reports daprd's text (`context deadline exceeded`, `circuit
//! breaker is open`) inside the operation's usual error. Errors are `StateApiError`;
//! `api/errors/state.rs` maps them to the wire. Each store call is one sample of daprd's
//! `dapr_component_state_*` metrics (around the whole policy run, as daprd records it); requests
//! refused before reaching the store are not counted.

use std::future::Future;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use futures::future::join_all;

use crate::api::state_keys::{IllegalKey, KeyPrefix};
use crate::components::directory::{DirectoryHandle, StateEntry};
use crate::components::state::{
    BulkGetItem, Consistency, DeleteRequest, Feature, GetRequest, Metadata, Query, QueryPage, SetRequest, StateOptions,
    StoreError, StoredItem, TransactionOp,
};
use crate::resiliency::{AttemptError, ComponentKind, Policy, PolicyError, Resiliency};
use crate::runtime::metrics::ComponentOp;

/// Failures of the state API, before they are mapped to the wire.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StateApiError {
    /// No state store is configured at all.
    #[error("state store {store} is not configured")]
    NotConfigured { store: String },
    /// No store by that name.
    #[error("state store {store} is not found")]
    NotFound { store: String },
    /// A key contains `||`.
    #[error("{key}")]
    IllegalKey { store: String, key: IllegalKey },
    /// A key is empty in an HTTP save.
    #[error("\"key\" is a required field")]
    EmptyKey,
    /// A key is empty in a gRPC save.
    #[error("state key cannot be empty")]
    EmptySaveKey,
    /// The store has no transactions.
    #[error("state store {store} doesn't support transactions")]
    TransactionsNotSupported { store: String },
    /// The transaction is too large for the store.
    #[error("the transaction contains {count} operations, which is more than what the state store supports: {max}")]
    TooManyOperations { store: String, count: usize, max: usize },
    /// Unknown transaction operation.
    #[error("operation type {0} not supported")]
    UnsupportedOperation(String),
    /// The store has no query.
    #[error("state store does not support querying")]
    QueryNotSupported { store: String },
    /// The query failed.
    #[error("state store {store} query failed: {detail}")]
    QueryFailed { store: String, detail: String },
    /// Get failed.
    #[error("fail to get {key} from state store {store}: {source}")]
    Get { store: String, key: String, source: StoreError },
    /// Save failed.
    #[error("failed saving state in state store {store}: {source}")]
    Save { store: String, source: StoreError },
    /// Delete failed.
    #[error("failed deleting state with key {key}: {source}")]
    Delete { key: String, source: StoreError },
    /// Bulk delete failed.
    #[error("failed deleting state in state store {store}: {source}")]
    BulkDelete { store: String, source: StoreError },
    /// Bulk get failed.
    #[error("{source}")]
    BulkGet { source: StoreError },
    /// Transaction failed.
    #[error("error while executing state transaction: {source}")]
    Transaction { source: StoreError },
}

/// One item to save, with app-level key.
#[derive(Debug, Clone, Default)]
pub struct SaveItem {
    /// App key (unprefixed).
    pub key: String,
    /// Encoded value.
    pub value: Bytes,
    /// Whether the value is JSON.
    pub is_json: bool,
    /// Condition.
    pub etag: Option<String>,
    /// Item metadata.
    pub metadata: Metadata,
    /// Options.
    pub options: StateOptions,
}

/// One item to delete, with app-level key.
#[derive(Debug, Clone, Default)]
pub struct DeleteItem {
    /// App key.
    pub key: String,
    /// Condition.
    pub etag: Option<String>,
    /// Item metadata.
    pub metadata: Metadata,
    /// Options.
    pub options: StateOptions,
}

/// One transaction operation with app-level key.
#[derive(Debug, Clone)]
pub enum TxOperation {
    /// Upsert.
    Upsert(SaveItem),
    /// Delete.
    Delete(DeleteItem),
}

/// The state facade.
#[derive(Clone)]
pub struct StateApi {
    directory: DirectoryHandle,
    resiliency: Resiliency,
}

impl StateApi {
    /// Builds the facade over the directory, calling stores under `resiliency`'s policies.
    pub fn new(directory: DirectoryHandle, resiliency: Resiliency) -> Self {
        Self { directory, resiliency }
    }

    fn policy(&self, store: &str) -> Policy {
        self.resiliency.for_component_outbound(store, ComponentKind::StateStore)
    }

    /// Runs one store call, counting it in daprd's component metrics.
    async fn measured<T, E>(&self, store: &str, op: ComponentOp, call: impl Future<Output = Result<T, E>>) -> Result<T, E> {
        let Some(m) = self.directory.load().metrics.clone() else { return call.await };
        let started = std::time::Instant::now();
        let result = call.await;
        m.state_call(store, op, result.is_ok(), started);
        result
    }

    fn store(&self, name: &str) -> Result<StateEntry, StateApiError> {
        let d = self.directory.load();
        if let Some(e) = d.state.get(name) {
            let mut e = e.clone();
            e.client = e.client.under_policy(self.resiliency.component_outbound_timeout(name, ComponentKind::StateStore));
            return Ok(e);
        }
        if !d.has_state_stores() {
            return Err(StateApiError::NotConfigured { store: name.to_string() });
        }
        Err(StateApiError::NotFound { store: name.to_string() })
    }

    /// Checks the store exists and is ready.
    pub fn check_store(&self, store: &str) -> Result<(), StateApiError> {
        self.store(store).map(|_| ())
    }

    /// Reads one key; `None` when missing.
    pub async fn get(&self, store: &str, key: &str, consistency: Consistency, metadata: Metadata) -> Result<Option<StoredItem>, StateApiError> {
        let s = self.store(store)?;
        let req = GetRequest { key: s.prefix.apply(key).map_err(|k| illegal(store, k))?, metadata, consistency };
        self.measured(store, ComponentOp::Get, self.policy(store).run(|| retriable(s.client.get(req.clone()))))
            .await
            .map_err(|e| StateApiError::Get { store: store.into(), key: key.into(), source: gave_up(e) })
    }

    /// Reads many keys; per-key failures are reported in their items, keyed by the app key.
    pub async fn bulk_get(&self, store: &str, keys: Vec<String>, metadata: Metadata) -> Result<Vec<BulkGetItem>, StateApiError> {
        let s = self.store(store)?;
        let mut reqs = Vec::with_capacity(keys.len());
        for key in &keys {
            reqs.push(GetRequest { key: s.prefix.apply(key).map_err(|k| illegal(store, k))?, metadata: metadata.clone(), consistency: Consistency::default() });
        }
        let items = self
            .measured(store, ComponentOp::BulkGet, self.policy(store).run(|| retriable(s.client.bulk_get(reqs.clone()))))
            .await
            .map_err(|e| StateApiError::BulkGet { source: gave_up(e) })?;
        Ok(keys
            .into_iter()
            .zip(items)
            .map(|(key, i)| BulkGetItem { key, ..i })
            .collect())
    }

    /// Empty keys pass: each adapter refuses them in saves with its transport's error, and daprd
    /// hands them to the store in deletes and transactions (as `appid||`).
    fn set_request(store: &str, prefix: &KeyPrefix, item: SaveItem) -> Result<SetRequest, StateApiError> {
        Ok(SetRequest {
            key: prefix.apply(&item.key).map_err(|k| illegal(store, k))?,
            value: item.value,
            is_json: item.is_json,
            etag: item.etag,
            metadata: item.metadata,
            options: item.options,
        })
    }

    fn delete_request(store: &str, prefix: &KeyPrefix, item: DeleteItem) -> Result<DeleteRequest, StateApiError> {
        Ok(DeleteRequest { key: prefix.apply(&item.key).map_err(|k| illegal(store, k))?, etag: item.etag, metadata: item.metadata, options: item.options })
    }

    /// Saves items; items are written concurrently and the first failure is reported.
    pub async fn save(&self, store: &str, items: Vec<SaveItem>) -> Result<(), StateApiError> {
        let s = self.store(store)?;
        let reqs = items.into_iter().map(|i| Self::set_request(store, &s.prefix, i)).collect::<Result<Vec<_>, _>>()?;
        self.measured(store, ComponentOp::Set, run_each(&self.policy(store), reqs, |r| s.client.set(r)))
            .await
            .map_err(|source| StateApiError::Save { store: store.into(), source })
    }

    /// Deletes one key.
    pub async fn delete(&self, store: &str, item: DeleteItem) -> Result<(), StateApiError> {
        let s = self.store(store)?;
        let key = item.key.clone();
        let req = Self::delete_request(store, &s.prefix, item)?;
        self.measured(store, ComponentOp::Delete, run_each(&self.policy(store), vec![req], |r| s.client.delete(r))).await.map_err(|source| StateApiError::Delete { key, source })
    }

    /// Deletes many keys concurrently.
    pub async fn bulk_delete(&self, store: &str, items: Vec<DeleteItem>) -> Result<(), StateApiError> {
        let s = self.store(store)?;
        let reqs = items.into_iter().map(|i| Self::delete_request(store, &s.prefix, i)).collect::<Result<Vec<_>, _>>()?;
        self.measured(store, ComponentOp::BulkDelete, run_each(&self.policy(store), reqs, |r| s.client.delete(r)))
            .await
            .map_err(|source| StateApiError::BulkDelete { store: store.into(), source })
    }

    /// Checks the store offers transactions (before the body is even decoded, as daprd does).
    pub fn check_transactional(&self, store: &str) -> Result<(), StateApiError> {
        let s = self.store(store)?;
        if !s.client.has(Feature::Transactional) {
            return Err(StateApiError::TransactionsNotSupported { store: store.into() });
        }
        Ok(())
    }

    /// Applies operations atomically: all validated first, then all or nothing.
    pub async fn transact(&self, store: &str, ops: Vec<TxOperation>, metadata: Metadata) -> Result<(), StateApiError> {
        self.check_transactional(store)?;
        let s = self.store(store)?;
        if let Some(max) = s.client.max_transaction_ops().filter(|m| *m > 0 && ops.len() > *m) {
            return Err(StateApiError::TooManyOperations { store: store.into(), count: ops.len(), max });
        }
        let mut reqs = Vec::with_capacity(ops.len());
        for op in ops {
            reqs.push(match op {
                TxOperation::Upsert(i) => TransactionOp::Set(Self::set_request(store, &s.prefix, i)?),
                TxOperation::Delete(i) => TransactionOp::Delete(Self::delete_request(store, &s.prefix, i)?),
            });
        }
        if reqs.is_empty() {
            return Ok(());
        }
        // daprd retries a failed transaction whatever the error: it is all or nothing.
        self.measured(store, ComponentOp::Transaction, self.policy(store).run(|| retriable(s.client.transact(reqs.clone(), metadata.clone()))))
            .await
            .map_err(|e| StateApiError::Transaction { source: gave_up(e) })
    }

    /// Runs a query document; result keys are unprefixed.
    pub async fn query(&self, store: &str, doc: &[u8], metadata: Metadata) -> Result<QueryPage, StateApiError> {
        let s = self.store(store)?;
        if !s.client.has(Feature::QueryApi) {
            return Err(StateApiError::QueryNotSupported { store: store.into() });
        }
        let query = Query::parse(doc).map_err(|e| StateApiError::QueryFailed {
            store: store.into(),
            detail: format!("failed to parse JSON query body: {e}"),
        })?;
        let mut page = self
            .measured(store, ComponentOp::Query, self.policy(store).run(|| retriable(s.client.query(s.prefix.scan_prefix(), query.clone(), metadata.clone()))))
            .await
            .map_err(|e| StateApiError::QueryFailed { store: store.into(), detail: gave_up(e).to_string() })?;
        for r in &mut page.results {
            r.key = KeyPrefix::strip(&r.key).to_string();
        }
        Ok(page)
    }
}

fn illegal(store: &str, key: IllegalKey) -> StateApiError {
    StateApiError::IllegalKey { store: store.to_string(), key }
}

/// An attempt whose every failure may be retried (reads, queries).
async fn retriable<T>(call: impl Future<Output = Result<T, StoreError>>) -> Result<T, AttemptError<StoreError>> {
    call.await.map_err(AttemptError::Retriable)
}

/// Failures no retry can fix: daprd never retries ETag errors; rapr also stops on errors that
/// depend only on the request (a bad TTL, an unsupported option).
fn is_permanent(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::ETagMismatch(_) | StoreError::ETagInvalid(_) | StoreError::InvalidRequest(_) | StoreError::NotSupported(_) | StoreError::Query(_)
    )
}

/// The error a give-up reports: the store's own, or daprd's text for a timeout or open breaker.
fn gave_up(e: PolicyError<StoreError>) -> StoreError {
    match e {
        PolicyError::Operation(e) => e,
        other => StoreError::Backend(other.to_string()),
    }
}

/// Runs one write per request concurrently under `policy`, as daprd's bulk store operation does:
/// a retry repeats only the requests that failed retriably. A permanent failure (an ETag
/// mismatch) is reported in preference to others, even when the retried requests later succeed.
async fn run_each<R, F, Fut>(policy: &Policy, reqs: Vec<R>, call: F) -> Result<(), StoreError>
where
    R: Clone,
    F: Fn(R) -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    let pending = ArcSwap::from_pointee(reqs);
    let permanent: ArcSwapOption<StoreError> = ArcSwapOption::empty();
    let result = policy
        .run(|| {
            let (batch, pending, permanent, call) = (pending.load_full(), &pending, &permanent, &call);
            async move {
                let results = join_all(batch.iter().cloned().map(call)).await;
                let mut retry = Vec::new();
                let mut first_retriable = None;
                for (req, r) in batch.iter().zip(results) {
                    match r {
                        Ok(()) => {}
                        Err(e) if is_permanent(&e) => {
                            if permanent.load().is_none() {
                                permanent.store(Some(Arc::new(e)));
                            }
                        }
                        Err(e) => {
                            retry.push(req.clone());
                            first_retriable.get_or_insert(e);
                        }
                    }
                }
                pending.store(Arc::new(retry));
                match (first_retriable, permanent.load_full()) {
                    (Some(e), _) => Err(AttemptError::Retriable(e)),
                    (None, Some(e)) => Err(AttemptError::Permanent(StoreError::clone(&e))),
                    (None, None) => Ok(()),
                }
            }
        })
        .await;
    match (result, permanent.load_full()) {
        (_, Some(e)) => Err(StoreError::clone(&e)),
        (Ok(()), None) => Ok(()),
        (Err(e), None) => Err(gave_up(e)),
    }
}
