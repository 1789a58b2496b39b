//! The state store contract: request/response types, feature flags and the `StateStore` trait
//! every implementation (in-memory, SQLite, and later Redis, PostgreSQL, MySQL) fulfils.
//!
//! Keys reaching a store are already prefixed (`appid||key`) by the facade in `api/state.rs`;
//! stores never see or strip prefixes. Values are opaque bytes: JSON encoding is the facade's job.

pub mod conformance;
pub mod client;
pub mod kind;
pub mod memory;
pub mod mysql;
pub mod postgres;
pub mod query;
pub mod redis;
pub mod sqlite;
pub mod ttl;

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;

pub use client::StateClient;
pub use query::{Query, QueryCandidate, QueryError, QueryPage};

/// Per-request metadata as Dapr passes it (`metadata.ttlInSeconds`, `contentType`, ...).
pub type Metadata = HashMap<String, String>;

/// A capability a store declares; reported in `/v1.0/metadata` with Dapr's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// Optimistic concurrency with entity tags.
    ETag,
    /// Multi-key atomic transactions.
    Transactional,
    /// Per-item time to live.
    Ttl,
    /// The state query API.
    QueryApi,
}

impl Feature {
    /// The capability name Dapr reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::ETag => "ETAG",
            Feature::Transactional => "TRANSACTIONAL",
            Feature::Ttl => "TTL",
            Feature::QueryApi => "QUERY_API",
        }
    }
}

/// Concurrency mode of a write: with `FirstWrite` a write needs the current ETag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Concurrency {
    /// The write only succeeds when its ETag matches (a missing ETag means "must not exist").
    FirstWrite,
    /// The write succeeds whatever the stored version, unless an ETag is given.
    #[default]
    LastWrite,
}

/// Consistency hint; embedded stores are always strongly consistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Eventual consistency (Dapr's default).
    #[default]
    Eventual,
    /// Strong consistency.
    Strong,
}

/// Options attached to a write or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateOptions {
    /// First-write or last-write wins.
    pub concurrency: Concurrency,
    /// Consistency hint.
    pub consistency: Consistency,
}

/// Read one key.
#[derive(Debug, Clone, Default)]
pub struct GetRequest {
    /// Prefixed key.
    pub key: String,
    /// Request metadata.
    pub metadata: Metadata,
    /// Consistency hint.
    pub consistency: Consistency,
}

/// A stored item.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoredItem {
    /// Raw value bytes.
    pub data: Bytes,
    /// Current version.
    pub etag: Option<String>,
    /// Response metadata (`ttlExpireTime`, ...).
    pub metadata: Metadata,
}

/// Write one key.
#[derive(Debug, Clone, Default)]
pub struct SetRequest {
    /// Prefixed key.
    pub key: String,
    /// Raw value bytes.
    pub value: Bytes,
    /// The value is a JSON document (an HTTP save, or gRPC with `contentType: application/json`).
    /// Stores with Dapr's SQL layouts keep JSON as text and anything else as base64 (`is_binary`).
    pub is_json: bool,
    /// Version the write is conditioned on.
    pub etag: Option<String>,
    /// Request metadata (`ttlInSeconds`, `contentType`).
    pub metadata: Metadata,
    /// Concurrency and consistency.
    pub options: StateOptions,
}

impl SetRequest {
    /// The time to live asked for, if any; `None` also for "-1" (never expire).
    pub fn ttl(&self) -> Result<Option<i64>, StoreError> {
        ttl::parse_ttl(&self.metadata)
    }
}

/// Delete one key.
#[derive(Debug, Clone, Default)]
pub struct DeleteRequest {
    /// Prefixed key.
    pub key: String,
    /// Version the delete is conditioned on.
    pub etag: Option<String>,
    /// Request metadata.
    pub metadata: Metadata,
    /// Concurrency and consistency.
    pub options: StateOptions,
}

/// One operation of a transaction.
#[derive(Debug, Clone)]
pub enum TransactionOp {
    /// Upsert a key.
    Set(SetRequest),
    /// Delete a key.
    Delete(DeleteRequest),
}

/// One answer of a bulk get: the item, nothing, or that key's own error.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkGetItem {
    /// Prefixed key.
    pub key: String,
    /// The item, when found.
    pub item: Option<StoredItem>,
    /// The key's own failure, reported without failing the others.
    pub error: Option<String>,
}

/// Errors a store reports; mapped to Dapr's wire errors by `api/errors/state.rs`.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum StoreError {
    /// The ETag did not match the stored version.
    #[error("possible etag mismatch. error from state store: {0}")]
    ETagMismatch(String),
    /// The ETag is not a version this store could have issued.
    #[error("invalid etag value: {0}")]
    ETagInvalid(String),
    /// The store lacks the capability asked for.
    #[error("{0} is not supported by this state store")]
    NotSupported(&'static str),
    /// The request is invalid for this store (bad TTL, empty key...).
    #[error("{0}")]
    InvalidRequest(String),
    /// The query document is invalid.
    #[error("{0}")]
    Query(#[from] QueryError),
    /// The backend failed.
    #[error("{0}")]
    Backend(String),
    /// The store did not answer in time.
    #[error("the state store did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The store's process is gone (it is being restarted).
    #[error("the state store is unavailable: {0}")]
    Unavailable(String),
}

/// Bulk-get answers in the order the keys were asked: found rows decoded with `decode` (a row
/// that fails to decode reports its own error), missing keys empty.
pub fn bulk_answers<R>(keys: Vec<String>, mut found: HashMap<String, R>, decode: impl Fn(R) -> Result<StoredItem, StoreError>) -> Vec<BulkGetItem> {
    keys.into_iter()
        .map(|key| match found.remove(&key).map(&decode) {
            None => BulkGetItem { key, item: None, error: None },
            Some(Ok(item)) => BulkGetItem { key, item: Some(item), error: None },
            Some(Err(err)) => BulkGetItem { key, item: None, error: Some(err.to_string()) },
        })
        .collect()
}

/// The contract of a state store implementation.
///
/// Required: `features`, `get`, `set`, `delete`. Bulk operations default to per-key calls; a store
/// that claims `Transactional` overrides `transact`, one that claims `QueryApi` overrides `query`.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// Capabilities, reported in metadata and checked by the facade.
    fn features(&self) -> &'static [Feature];

    /// Reads one key; `Ok(None)` when it does not exist or has expired.
    async fn get(&self, req: GetRequest) -> Result<Option<StoredItem>, StoreError>;

    /// Writes one key, honouring ETag and concurrency.
    async fn set(&self, req: SetRequest) -> Result<(), StoreError>;

    /// Deletes one key, honouring ETag and concurrency; deleting a missing key succeeds.
    async fn delete(&self, req: DeleteRequest) -> Result<(), StoreError>;

    /// Reads many keys; each key's failure is reported in its item.
    async fn bulk_get(&self, reqs: Vec<GetRequest>) -> Result<Vec<BulkGetItem>, StoreError> {
        let mut out = Vec::with_capacity(reqs.len());
        for req in reqs {
            let key = req.key.clone();
            match self.get(req).await {
                Ok(item) => out.push(BulkGetItem { key, item, error: None }),
                Err(e) => out.push(BulkGetItem { key, item: None, error: Some(e.to_string()) }),
            }
        }
        Ok(out)
    }

    /// Applies all operations atomically, or none.
    async fn transact(&self, _ops: Vec<TransactionOp>, _metadata: Metadata) -> Result<(), StoreError> {
        Err(StoreError::NotSupported("transactions"))
    }

    /// The most operations one transaction may carry, when the store has a limit.
    fn max_transaction_ops(&self) -> Option<usize> {
        None
    }

    /// Runs a state query over this store's items whose keys start with `key_prefix`.
    async fn query(&self, _key_prefix: &str, _query: Query, _metadata: Metadata) -> Result<QueryPage, StoreError> {
        Err(StoreError::NotSupported("query"))
    }

    /// Checks the backend answers.
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Releases resources; called once when the host stops.
    async fn close(&self) {}
}
