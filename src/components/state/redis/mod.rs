//! `state.redis`: Dapr's Redis state store, data-compatible with components-contrib's.
//!
//! Each key is a hash `{data, version}`; the ETag is the decimal version. As contrib's store: a
//! write's non-numeric ETag is invalid, a delete's ETag is never parsed (any failure is a
//! mismatch), and an ETag for a key that does not exist lets the write or delete through. Writes, deletes and transactions go through one Lua
//! script (`scripts.rs`) that checks every ETag before applying anything, so transactions are
//! all-or-nothing. TTL is Redis's own `EXPIRE`; `ttlExpireTime` comes from the key's TTL.
//! Features: ETAG, TRANSACTIONAL, TTL (Dapr's RediSearch-based query is not offered).
//!
//! Differences from Dapr's store, all deliberate: a write without any TTL (request or
//! component default) makes the key persistent, as rapr's other stores do (Dapr keeps a previous
//! `EXPIRE`); first-write without an ETag means "the key must not exist" (Dapr also lets it
//! through when the hash lacks its `first-write` marker); `consistency: strong` does not `WAIT`
//! for replicas.
//!
//! The connection is a `ConnectionManager`: one multiplexed connection that reconnects by itself,
//! so a Redis that dies and comes back serves again without restarting the sidecar. Every call
//! has a deadline, so a dead server answers an error instead of a hang. Init pings the server
//! and fails while it is unreachable; the supervisor then retries with backoff.

mod config;
mod scripts;

use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, RedisError};
use async_trait::async_trait;
use bytes::Bytes;

pub use config::RedisConfig;
use scripts::{delete_op, row, set_op, ReadRow, Scripts, WriteOp, MISMATCH_CODE};

use super::ttl::{self, EXPIRE_KEY};
use super::{BulkGetItem, DeleteRequest, Feature, GetRequest, Metadata, SetRequest, StateStore, StoreError, StoredItem, TransactionOp};
use crate::components::metadata::ComponentMetadata;
use crate::components::registry::{ComponentError, Registry};

const FEATURES: &[Feature] = &[Feature::ETag, Feature::Transactional, Feature::Ttl];

/// Registers this store's Dapr type names with the registry.
pub fn register(reg: &mut Registry) {
    reg.add_state(&["state.redis"], "v1", |name, mut md| {
        Box::pin(async move {
            let store = RedisStore::from_metadata(&name, &mut md).await?;
            let unread = md.unread();
            if !unread.is_empty() {
                tracing::warn!(component = %name, keys = ?unread, "metadata keys not used by this component");
            }
            Ok(Arc::new(store) as Arc<dyn StateStore>)
        })
    });
}

/// The Redis store.
pub struct RedisStore {
    conn: ConnectionManager,
    scripts: Arc<Scripts>,
    default_ttl: Option<i64>,
    timeout: Duration,
    address: String,
}

impl RedisStore {
    /// Decodes `md` and connects; errors name the component.
    pub async fn from_metadata(name: &str, md: &mut ComponentMetadata) -> Result<Self, ComponentError> {
        let cfg = RedisConfig::from_metadata(md).map_err(|mut e| {
            e.component = name.to_string();
            e
        })?;
        Self::connect(cfg).await.map_err(|e| ComponentError::Init { name: name.to_string(), reason: e.to_string() })
    }

    /// Connects to the server and checks it answers `PING`.
    pub async fn connect(cfg: RedisConfig) -> Result<Self, StoreError> {
        let address = cfg.address();
        let unreachable = |e: String| StoreError::Backend(format!("redis store: error connecting to redis at {address}: {e}"));
        let mut settings = RedisConnectionInfo::default().set_db(cfg.db);
        if let Some(u) = &cfg.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &cfg.password {
            settings = settings.set_password(p);
        }
        let info = ConnectionAddr::Tcp(cfg.host.clone(), cfg.port)
            .into_connection_info()
            .map_err(|e| unreachable(e.to_string()))?
            .set_redis_settings(settings);
        let client = ::redis::Client::open(info).map_err(|e| unreachable(e.to_string()))?;
        let (min_delay, max_delay) = cfg.retry_delays();
        let manager_cfg = ConnectionManagerConfig::new()
            .set_number_of_retries(cfg.max_retries)
            .set_min_delay(min_delay)
            .set_max_delay(max_delay)
            .set_connection_timeout(Some(cfg.dial_timeout))
            .set_response_timeout(cfg.read_timeout.max(cfg.write_timeout));
        let timeout = cfg.call_timeout();
        let conn = tokio::time::timeout(timeout, ConnectionManager::new_with_config(client, manager_cfg))
            .await
            .map_err(|_| unreachable(format!("no connection within {timeout:?}")))?
            .map_err(|e| unreachable(e.to_string()))?;
        let store = Self { conn, scripts: Arc::new(Scripts::new()), default_ttl: cfg.default_ttl, timeout, address: cfg.address() };
        store.ping().await.map_err(|e| unreachable(e.to_string()))?;
        Ok(store)
    }

    /// Runs one Redis call under the store's deadline.
    async fn within<T>(&self, fut: impl std::future::Future<Output = Result<T, RedisError>>) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => Err(StoreError::Timeout(self.timeout)),
            Ok(r) => r.map_err(|e| self.failure(e)),
        }
    }

    fn failure(&self, e: RedisError) -> StoreError {
        if e.is_timeout() {
            StoreError::Timeout(self.timeout)
        } else {
            StoreError::Backend(format!("redis store at {}: {e}", self.address))
        }
    }

    async fn read(&self, keys: &[String]) -> Result<Vec<ReadRow>, StoreError> {
        let mut inv = self.scripts.read.prepare_invoke();
        for k in keys {
            inv.key(k);
        }
        let mut conn = self.conn.clone();
        let rows: Vec<ReadRow> = self.within(inv.invoke_async(&mut conn)).await?;
        if rows.len() != keys.len() {
            return Err(StoreError::Backend(format!("redis store: {} answers for {} keys", rows.len(), keys.len())));
        }
        Ok(rows)
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut inv = self.scripts.write.prepare_invoke();
        for op in &ops {
            inv.key(&op.key).arg(op.kind).arg(&op.etag).arg(op.ttl).arg(op.data.as_ref());
        }
        let mut conn = self.conn.clone();
        let result: Result<i64, RedisError> = tokio::time::timeout(self.timeout, inv.invoke_async(&mut conn))
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(MISMATCH_CODE) => {
                let op = e.detail().and_then(|d| d.trim().parse::<usize>().ok()).and_then(|i| ops.get(i.wrapping_sub(1)));
                Err(StoreError::ETagMismatch(match op {
                    Some(WriteOp { kind: "D", key, .. }) => format!("failed to delete {key}"),
                    Some(op) => format!("failed to set key {}", op.key),
                    None => e.to_string(),
                }))
            }
            Err(e) => Err(self.failure(e)),
        }
    }
}

/// Turns one answer of the read script into an item.
fn to_item(key: &str, (kind, data, version, ttl): ReadRow) -> Result<Option<StoredItem>, StoreError> {
    let mut metadata = Metadata::new();
    if ttl > 0 {
        metadata.insert(EXPIRE_KEY.to_string(), ttl::format_expiry(ttl::now_unix() + ttl));
    }
    match kind {
        row::MISSING => Ok(None),
        row::HASH => Ok(Some(StoredItem { data: Bytes::from(data), etag: Some(version), metadata })),
        row::STRING => Ok(Some(StoredItem { data: Bytes::from(data), etag: None, metadata })),
        row::BROKEN => Err(StoreError::Backend(format!("redis store: key {key}: required hash field 'data' or 'version' was not found"))),
        other => Err(StoreError::Backend(format!("redis store: key {key}: unexpected read answer {other}"))),
    }
}

#[async_trait]
impl StateStore for RedisStore {
    fn features(&self) -> &'static [Feature] {
        FEATURES
    }

    async fn get(&self, req: GetRequest) -> Result<Option<StoredItem>, StoreError> {
        if req.key.is_empty() {
            return Err(StoreError::InvalidRequest("missing key in get operation".into()));
        }
        let keys = [req.key];
        let row = self.read(&keys).await?.into_iter().next().unwrap_or((row::MISSING, vec![], String::new(), -2));
        to_item(&keys[0], row)
    }

    async fn bulk_get(&self, reqs: Vec<GetRequest>) -> Result<Vec<BulkGetItem>, StoreError> {
        let keys: Vec<String> = reqs.into_iter().map(|r| r.key).collect();
        if keys.is_empty() {
            return Ok(vec![]);
        }
        // As Dapr's per-key bulk get: a failed read is every key's error, not the request's.
        let rows = match self.read(&keys).await {
            Ok(rows) => rows,
            Err(e) => {
                let error = Some(e.to_string());
                return Ok(keys.into_iter().map(|key| BulkGetItem { key, item: None, error: error.clone() }).collect());
            }
        };
        Ok(keys
            .into_iter()
            .zip(rows)
            .map(|(key, r)| match to_item(&key, r) {
                Ok(item) => BulkGetItem { key, item, error: None },
                Err(e) => BulkGetItem { key, item: None, error: Some(e.to_string()) },
            })
            .collect())
    }

    async fn set(&self, req: SetRequest) -> Result<(), StoreError> {
        self.write(vec![set_op(req, self.default_ttl)?]).await
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), StoreError> {
        self.write(vec![delete_op(req)?]).await
    }

    async fn transact(&self, ops: Vec<TransactionOp>, _metadata: Metadata) -> Result<(), StoreError> {
        let ops = ops
            .into_iter()
            .map(|op| match op {
                TransactionOp::Set(r) => set_op(r, self.default_ttl),
                TransactionOp::Delete(r) => delete_op(r),
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.write(ops).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let pong: String = self.within(::redis::cmd("PING").query_async(&mut conn)).await?;
        if pong != "PONG" {
            return Err(StoreError::Backend(format!("redis store at {}: unexpected PING answer {pong:?}", self.address)));
        }
        Ok(())
    }
}
