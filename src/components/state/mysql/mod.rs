//! `state.mysql` (v1): Dapr's MySQL/MariaDB state store, on a `mysql_async` pool.
//!
//! Dapr's table layout (components-contrib), so data written by Dapr is readable here and the
//! reverse: `id, value (JSON), isbinary, insertDate, updateDate, eTag, expiredate`. JSON values
//! are stored as JSON; anything else as a JSON string of base64 with `isbinary` set. The ETag is
//! a UUID regenerated on every write; as in contrib's store it is never parsed, so any ETag that
//! is not the stored one is a mismatch (daprd's 409 / ABORTED), never invalid. Expired rows are invisible to reads and swept
//! periodically. Features as Dapr reports them: ETAG, TRANSACTIONAL, TTL (no query API).
//!
//! ```text
//! config.rs  metadata keys and defaults     dsn.rs     Go DSN -> mysql_async options
//! schema.rs  schema/table creation, sweep   mod.rs     the StateStore implementation
//! ```

mod config;
mod dsn;
mod schema;

use crate::components::state::bulk_answers;
use crate::runtime::failpoints::crash_point;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use mysql_async::prelude::Queryable;
use mysql_async::{Params, Pool, TxOpts};

pub use config::MysqlConfig;

use super::ttl::{self, EXPIRE_KEY};
use super::{
    BulkGetItem, Concurrency, DeleteRequest, Feature, GetRequest, Metadata, SetRequest, StateStore, StoreError,
    StoredItem, TransactionOp,
};
use crate::components::registry::{ComponentError, Registry};

const FEATURES: &[Feature] = &[Feature::ETag, Feature::Transactional, Feature::Ttl];
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Keys per statement in a bulk get.
const BULK_CHUNK: usize = 500;
/// MySQL's duplicate-key error: a first write found a live row.
const ER_DUP_ENTRY: u16 = 1062;
const LIVE: &str = "(expiredate IS NULL OR expiredate > CURRENT_TIMESTAMP)";
const COLUMNS: &str = "id, value, isbinary, eTag, CAST(UNIX_TIMESTAMP(expiredate) AS SIGNED)";

/// Registers this store's Dapr type names with the registry.
pub fn register(reg: &mut Registry) {
    reg.add_state(&["state.mysql"], "v1", |name, mut md| {
        Box::pin(async move {
            let cfg = MysqlConfig::from_metadata(&mut md).map_err(|mut e| {
                e.component = name.clone();
                e
            })?;
            let unread = md.unread();
            if !unread.is_empty() {
                tracing::warn!(component = %name, keys = ?unread, "metadata keys not used by this component");
            }
            let store = MysqlStore::open(&name, cfg).await.map_err(|e| ComponentError::Init { name: name.clone(), reason: e.to_string() })?;
            Ok(Arc::new(store) as Arc<dyn StateStore>)
        })
    });
}

fn db_err(e: mysql_async::Error) -> StoreError {
    StoreError::Backend(format!("mysql: {e}"))
}

/// Statements, built once: the table name is fixed for the store's life.
struct Sql {
    get: String,
    bulk_head: String,
    replace: String,
    update: String,
    drop_expired: String,
    insert: String,
    delete: String,
    delete_etag: String,
}

impl Sql {
    fn new(t: &str) -> Self {
        // TIMESTAMPADD with a NULL interval gives NULL: one statement for "no TTL" and "TTL".
        let exp = "TIMESTAMPADD(SECOND, ?, CURRENT_TIMESTAMP)";
        Self {
            get: format!("SELECT {COLUMNS} FROM {t} WHERE id = ? AND {LIVE}"),
            bulk_head: format!("SELECT {COLUMNS} FROM {t} WHERE {LIVE} AND id IN "),
            replace: format!("REPLACE INTO {t} (id, value, eTag, isbinary, expiredate) VALUES (?, ?, ?, ?, {exp})"),
            update: format!("UPDATE {t} SET value = ?, eTag = ?, isbinary = ?, expiredate = {exp} WHERE id = ? AND eTag = ? AND {LIVE}"),
            drop_expired: format!("DELETE FROM {t} WHERE id = ? AND NOT {LIVE}"),
            insert: format!("INSERT INTO {t} (id, value, eTag, isbinary, expiredate) VALUES (?, ?, ?, ?, {exp})"),
            delete: format!("DELETE FROM {t} WHERE id = ?"),
            delete_etag: format!("DELETE FROM {t} WHERE id = ? AND eTag = ?"),
        }
    }
}

/// The MySQL/MariaDB store.
pub struct MysqlStore {
    name: String,
    pool: Pool,
    sql: Sql,
    timeout: Duration,
    cleanup: Option<tokio::task::JoinHandle<()>>,
}

impl MysqlStore {
    /// Connects, creates the schema and tables when missing, and starts the expired-row sweep.
    /// Fails (so the supervisor retries) when the server is unreachable or refuses the login.
    pub async fn open(name: &str, cfg: MysqlConfig) -> Result<Self, StoreError> {
        if let Some(db) = &cfg.dsn.db_name {
            tracing::warn!(component = %name, dsn_database = %db, schema = %cfg.schema_name, "the database named in connectionString is ignored: schemaName selects it");
        }
        let connect = cfg.connect_timeout();
        let init = async {
            schema::ensure_schema(&cfg).await?;
            let pool = Pool::new(cfg.pool_opts());
            if let Err(e) = schema::ensure_tables(&pool, &cfg).await {
                let _ = pool.disconnect().await;
                return Err(e);
            }
            Ok(pool)
        };
        // Schema and table creation may take a few round trips beyond the connect itself.
        let pool = tokio::time::timeout(connect + cfg.timeout, init).await.map_err(|_| {
            StoreError::Backend(format!("MySQL at {}:{} did not answer within {:?}", cfg.dsn.host, cfg.dsn.port, connect + cfg.timeout))
        })??;
        let cleanup = cfg
            .cleanup_interval
            .map(|every| schema::spawn_cleanup(pool.clone(), cfg.table_name.clone(), cfg.metadata_table_name.clone(), every));
        tracing::info!(component = %name, schema = %cfg.schema_name, table = %cfg.table_name, "MySQL state store ready");
        Ok(Self { name: name.to_string(), pool, sql: Sql::new(&cfg.table_name), timeout: cfg.timeout, cleanup })
    }

    /// Runs `fut` under the per-operation timeout.
    async fn timed<T>(&self, fut: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, fut).await.map_err(|_| StoreError::Timeout(self.timeout))?
    }

    async fn read_rows(&self, keys: &[String]) -> Result<Vec<Row>, StoreError> {
        let mut conn = self.pool.get_conn().await.map_err(db_err)?;
        let mut rows = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BULK_CHUNK) {
            let sql = format!("{}({})", self.sql.bulk_head, vec!["?"; chunk.len()].join(","));
            let found: Vec<Row> = conn.exec(sql, Params::from(chunk.to_vec())).await.map_err(db_err)?;
            rows.extend(found);
        }
        Ok(rows)
    }
}

type Row = (String, Vec<u8>, bool, String, Option<i64>);

/// Decodes a row's value (a JSON string of base64 when `isbinary`) and expiry.
fn row_item(value: Vec<u8>, is_binary: bool, etag: String, expires: Option<i64>) -> Result<StoredItem, StoreError> {
    let data = if is_binary {
        let text: String =
            serde_json::from_slice(&value).map_err(|e| StoreError::Backend(format!("corrupt binary value (not a JSON string): {e}")))?;
        Bytes::from(B64.decode(text.as_bytes()).map_err(|e| StoreError::Backend(format!("corrupt binary value (not base64): {e}")))?)
    } else {
        Bytes::from(value)
    };
    let mut metadata = Metadata::new();
    if let Some(t) = expires {
        metadata.insert(EXPIRE_KEY.to_string(), ttl::format_expiry(t));
    }
    Ok(StoredItem { data, etag: Some(etag), metadata })
}

/// The `value` column text and `isbinary`: JSON as is, anything else as a JSON string of base64.
/// A value flagged JSON that does not parse is stored as binary: the column only takes JSON.
fn encode(req: &SetRequest) -> (String, bool) {
    if req.is_json {
        if let Ok(text) = std::str::from_utf8(&req.value) {
            if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
                return (text.to_string(), false);
            }
        }
    }
    (format!("\"{}\"", B64.encode(&req.value)), true)
}

/// Executes one statement and reports the rows it changed.
async fn exec_count<Q: Queryable>(q: &mut Q, stmt: &str, params: Params) -> Result<u64, mysql_async::Error> {
    let res = q.exec_iter(stmt, params).await?;
    let n = res.affected_rows();
    res.drop_result().await?;
    Ok(n)
}

fn mismatch(key: &str) -> StoreError {
    StoreError::ETagMismatch(format!("no item with key {key} and the given etag"))
}

async fn do_set<Q: Queryable>(q: &mut Q, sql: &Sql, req: &SetRequest) -> Result<(), StoreError> {
    if req.key.is_empty() {
        return Err(StoreError::InvalidRequest("missing key in set operation".into()));
    }
    let ttl = req.ttl()?.filter(|s| *s > 0);
    let (value, is_binary) = encode(req);
    let etag = uuid::Uuid::new_v4().to_string();
    let key = req.key.clone();
    match req.etag.as_deref().filter(|e| !e.is_empty()) {
        Some(old) => {
            let n = exec_count(q, &sql.update, Params::from((value, etag, is_binary, ttl, key, old.to_string()))).await.map_err(db_err)?;
            if n == 0 {
                return Err(mismatch(&req.key));
            }
        }
        None if req.options.concurrency == Concurrency::FirstWrite => {
            // An expired row that was not swept yet does not count as existing.
            exec_count(q, &sql.drop_expired, Params::from((key.clone(),))).await.map_err(db_err)?;
            match exec_count(q, &sql.insert, Params::from((key, value, etag, is_binary, ttl))).await {
                Ok(_) => {}
                Err(mysql_async::Error::Server(e)) if e.code == ER_DUP_ENTRY => return Err(mismatch(&req.key)),
                Err(e) => return Err(db_err(e)),
            }
        }
        None => {
            exec_count(q, &sql.replace, Params::from((key, value, etag, is_binary, ttl))).await.map_err(db_err)?;
        }
    }
    Ok(())
}

async fn do_delete<Q: Queryable>(q: &mut Q, sql: &Sql, req: &DeleteRequest) -> Result<(), StoreError> {
    if req.key.is_empty() {
        return Err(StoreError::InvalidRequest("missing key in delete operation".into()));
    }
    match req.etag.as_deref().filter(|e| !e.is_empty()) {
        None => {
            exec_count(q, &sql.delete, Params::from((req.key.clone(),))).await.map_err(db_err)?;
        }
        Some(etag) => {
            let n = exec_count(q, &sql.delete_etag, Params::from((req.key.clone(), etag.to_string()))).await.map_err(db_err)?;
            if n == 0 {
                return Err(mismatch(&req.key));
            }
        }
    }
    Ok(())
}

async fn apply<Q: Queryable>(q: &mut Q, sql: &Sql, op: &TransactionOp) -> Result<(), StoreError> {
    match op {
        TransactionOp::Set(r) => do_set(q, sql, r).await,
        TransactionOp::Delete(r) => do_delete(q, sql, r).await,
    }
}

#[async_trait]
impl StateStore for MysqlStore {
    fn features(&self) -> &'static [Feature] {
        FEATURES
    }

    async fn get(&self, req: GetRequest) -> Result<Option<StoredItem>, StoreError> {
        if req.key.is_empty() {
            return Err(StoreError::InvalidRequest("missing key in get operation".into()));
        }
        let row: Option<Row> = self
            .timed(async {
                let mut conn = self.pool.get_conn().await.map_err(db_err)?;
                conn.exec_first(&self.sql.get, (req.key.as_str(),)).await.map_err(db_err)
            })
            .await?;
        row.map(|(_, v, b, e, x)| row_item(v, b, e, x)).transpose()
    }

    async fn bulk_get(&self, reqs: Vec<GetRequest>) -> Result<Vec<BulkGetItem>, StoreError> {
        let keys: Vec<String> = reqs.into_iter().map(|r| r.key).collect();
        if keys.is_empty() {
            return Ok(vec![]);
        }
        let rows = self.timed(self.read_rows(&keys)).await?;
        let found: HashMap<String, Row> = rows.into_iter().map(|r| (r.0.clone(), r)).collect();
        Ok(bulk_answers(keys, found, |(_, v, b, e, x)| row_item(v, b, e, x)))
    }

    async fn set(&self, req: SetRequest) -> Result<(), StoreError> {
        self.transact(vec![TransactionOp::Set(req)], Metadata::new()).await
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), StoreError> {
        self.transact(vec![TransactionOp::Delete(req)], Metadata::new()).await
    }

    async fn transact(&self, ops: Vec<TransactionOp>, _metadata: Metadata) -> Result<(), StoreError> {
        self.timed(async {
            match ops.as_slice() {
                [] => Ok(()),
                // One operation is atomic by itself (a first write's two statements are each safe).
                [op] => {
                    let mut conn = self.pool.get_conn().await.map_err(db_err)?;
                    apply(&mut conn, &self.sql, op).await
                }
                _ => {
                    let mut tx = self.pool.start_transaction(TxOpts::default()).await.map_err(db_err)?;
                    for (i, op) in ops.iter().enumerate() {
                        if let Err(e) = apply(&mut tx, &self.sql, op).await {
                            if let Err(rb) = tx.rollback().await {
                                tracing::warn!(component = %self.name, error = %rb, "rollback failed; the connection is discarded");
                            }
                            return Err(e);
                        }
                        if i == 0 {
                            crash_point("state:mysql:transact:mid");
                        }
                    }
                    crash_point("state:mysql:commit:before");
                    tx.commit().await.map_err(db_err)
                }
            }
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await.map_err(db_err)?;
            conn.ping().await.map_err(db_err)
        })
        .await
    }

    async fn close(&self) {
        if let Some(h) = &self.cleanup {
            h.abort();
        }
        if tokio::time::timeout(self.timeout, self.pool.clone().disconnect()).await.is_err() {
            tracing::warn!(component = %self.name, "MySQL pool did not close in time");
        }
    }
}
