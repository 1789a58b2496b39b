//! `state.in-memory`: a process-local store with ETags, TTL and atomic transactions.
//!
//! Used for tests and ephemeral apps, as Dapr's namesake. ETags are random UUIDs as Dapr's store
//! issues them and, as there, never parsed: any ETag that is not the stored one is a mismatch.
//! First-write concurrency applies to deletes too (contrib's store checks both alike).
//! Query is not offered, matching Dapr's in-memory store.

use std::collections::HashMap;
// reason: the map is this component's own backend; every critical section is short and never
// awaits, and a transaction must see and change several keys atomically.
#[allow(clippy::disallowed_types)]
use std::sync::Mutex; // reason: the store's own backend; short critical sections that never await

use async_trait::async_trait;
use bytes::Bytes;

use super::ttl::{self, EXPIRE_KEY};
use super::{
    Concurrency, DeleteRequest, Feature, GetRequest, Metadata, SetRequest, StateStore, StoreError,
    StoredItem, TransactionOp,
};

const FEATURES: &[Feature] = &[Feature::ETag, Feature::Transactional, Feature::Ttl];
/// Expired items are dropped lazily on read and swept every this many writes.
const PURGE_EVERY: u64 = 1024;

#[derive(Debug, Clone)]
struct Entry {
    data: Bytes,
    etag: String,
    expires_at: Option<i64>,
}

#[derive(Debug, Default)]
struct Table {
    items: HashMap<String, Entry>,
    writes: u64,
}

/// The in-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    #[allow(clippy::disallowed_types)]
    table: Mutex<Table>,
}

impl MemoryStore {
    /// Creates an empty store.
    pub fn new() -> Self {
        Self::default()
    }

    // reason: see the `Mutex` import: the backend's own short, non-awaiting critical sections.
    #[allow(clippy::disallowed_types)]
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> { // reason: see the import
        // A poisoned lock only means a panic elsewhere mid-update of plain data; the map itself
        // stays structurally valid, so keep serving.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}


impl Table {
    fn live(&self, key: &str, now: i64) -> Option<&Entry> {
        self.items.get(key).filter(|e| e.expires_at.is_none_or(|t| t > now))
    }

    fn check(&self, key: &str, etag: Option<&str>, conc: Concurrency, now: i64) -> Result<(), StoreError> {
        let current = self.live(key, now).map(|e| e.etag.as_str());
        match (etag.filter(|e| !e.is_empty()), conc) {
            (Some(tag), _) if current != Some(tag) => {
                return Err(StoreError::ETagMismatch(format!("etag {tag} does not match for key {key}")));
            }
            (None, Concurrency::FirstWrite) if current.is_some() => {
                return Err(StoreError::ETagMismatch(format!(
                    "key {key} already exists and first-write concurrency needs its etag"
                )));
            }
            _ => {}
        }
        Ok(())
    }

    fn validate(&self, op: &TransactionOp, now: i64) -> Result<(), StoreError> {
        match op {
            TransactionOp::Set(r) => {
                r.ttl()?;
                self.check(&r.key, r.etag.as_deref(), r.options.concurrency, now)
            }
            TransactionOp::Delete(r) => self.check(&r.key, r.etag.as_deref(), r.options.concurrency, now),
        }
    }

    fn apply(&mut self, op: TransactionOp, now: i64) {
        match op {
            TransactionOp::Set(r) => {
                self.writes += 1;
                // Validated before apply: the TTL parses.
                let expires_at = r.ttl().ok().flatten().map(|s| now + s);
                let etag = uuid::Uuid::new_v4().to_string();
                self.items.insert(r.key, Entry { data: r.value, etag, expires_at });
            }
            TransactionOp::Delete(r) => {
                self.items.remove(&r.key);
            }
        }
    }

    fn purge_expired(&mut self, now: i64) {
        self.items.retain(|_, e| e.expires_at.is_none_or(|t| t > now));
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    fn features(&self) -> &'static [Feature] {
        FEATURES
    }

    async fn get(&self, req: GetRequest) -> Result<Option<StoredItem>, StoreError> {
        let now = ttl::now_unix();
        let table = self.lock();
        Ok(table.live(&req.key, now).map(|e| {
            let mut metadata = Metadata::new();
            if let Some(t) = e.expires_at {
                metadata.insert(EXPIRE_KEY.to_string(), ttl::format_expiry(t));
            }
            StoredItem { data: e.data.clone(), etag: Some(e.etag.clone()), metadata }
        }))
    }

    async fn set(&self, req: SetRequest) -> Result<(), StoreError> {
        self.transact(vec![TransactionOp::Set(req)], Metadata::new()).await
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), StoreError> {
        self.transact(vec![TransactionOp::Delete(req)], Metadata::new()).await
    }

    async fn transact(&self, ops: Vec<TransactionOp>, _metadata: Metadata) -> Result<(), StoreError> {
        let now = ttl::now_unix();
        let mut table = self.lock();
        if table.writes.is_multiple_of(PURGE_EVERY) {
            table.purge_expired(now);
        }
        for op in &ops {
            table.validate(op, now)?;
        }
        for op in ops {
            table.apply(op, now);
        }
        Ok(())
    }
}
