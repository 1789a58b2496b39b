//! `state.postgresql` v1 (alias `state.postgres`, as daprd registers both): Dapr's PostgreSQL
//! state store over a deadpool-postgres pool.
//!
//! Data at rest is components-contrib's v1 layout, so tables written by daprd read here and the
//! reverse: `key text PRIMARY KEY, value jsonb, isbinary boolean, insertdate, updatedate,
//! expiredate` plus the `dapr_metadata` table (`schema.rs`). The ETag is the row's `xmin` as
//! decimal text; an ETag that is not a uint32 is invalid, a wrong one a mismatch. A first-write
//! without ETag succeeds only when the key is absent or expired (Dapr reports a generic error
//! there; rapr reports an ETag mismatch so every store answers 409 alike). Reads hide expired
//! rows; a periodic sweep deletes them. Each call runs under the component's `timeout`.
//!
//! Query: Dapr translates the query to SQL over the whole table; rapr loads the live JSON rows
//! under the caller's key prefix and evaluates them with `query.rs`, so Postgres answers exactly
//! as every other store does and never sees another app's keys.
//!
//! ```text
//! config.rs  metadata -> PostgresConfig (table-name and connection-string checks)
//! rows.rs    value/ETag encoding, driver errors
//! schema.rs  migrations, expired-row sweep, idle-connection reaper
//! ```

mod config;
mod rows;
mod schema;

use crate::runtime::failpoints::crash_point;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

pub use config::{ExecMode, PostgresConfig};
use rows::{decode_item, encode_value, parse_etag, pg_err};

use super::{
    BulkGetItem, Concurrency, DeleteRequest, Feature, GetRequest, Metadata, Query, QueryCandidate, QueryPage, SetRequest,
    StateStore, StoreError, StoredItem, TransactionOp,
};
use crate::components::metadata::ComponentMetadata;
use crate::components::registry::{ComponentError, Registry};

const FEATURES: &[Feature] = &[Feature::ETag, Feature::Transactional, Feature::Ttl, Feature::QueryApi];
const LIVE_READ: &str = "(expiredate IS NULL OR expiredate >= CURRENT_TIMESTAMP)";
const LIVE_WRITE: &str = "(expiredate IS NULL OR expiredate > CURRENT_TIMESTAMP)";
const COLUMNS: &str = "key, value::text, isbinary, xmin::text, floor(extract(epoch FROM expiredate))::bigint";
/// `$4` is the TTL in seconds or NULL; NULL times an interval is NULL: no expiry.
const EXPIRY: &str = "now() + $4::bigint * interval '1 second'";

/// Registers this store's Dapr type names with the registry.
pub fn register(reg: &mut Registry) {
    reg.add_state(&["state.postgresql", "state.postgres"], "v1", |name, md| Box::pin(build(name, md)));
}

async fn build(name: String, mut md: ComponentMetadata) -> Result<Arc<dyn StateStore>, ComponentError> {
    let cfg = PostgresConfig::from_metadata(&mut md).map_err(|mut e| {
        e.component = name.clone();
        e
    })?;
    let unread = md.unread();
    if !unread.is_empty() {
        tracing::warn!(component = %name, keys = ?unread, "metadata keys not used by this component");
    }
    let store = PostgresStore::open(&name, cfg).await.map_err(|e| ComponentError::Init { name: name.clone(), reason: e.to_string() })?;
    Ok(Arc::new(store))
}

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: Pool,
    table: String,
    timeout: Duration,
    cached: bool,
    upkeep: Vec<tokio::task::JoinHandle<()>>,
}

impl PostgresStore {
    /// Connects, checks the server answers (and the credentials hold), and migrates the schema.
    pub async fn open(name: &str, cfg: PostgresConfig) -> Result<Self, StoreError> {
        let mut pg = cfg.pg.clone();
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(cfg.timeout);
        }
        let mgr = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(mgr)
            .max_size(cfg.max_conns)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(cfg.timeout))
            .create_timeout(Some(cfg.timeout))
            .recycle_timeout(Some(cfg.timeout))
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot build the connection pool: {e}")))?;
        let (table, meta) = (cfg.table_name.clone(), cfg.metadata_table_name.clone());
        let migrated = tokio::time::timeout(cfg.timeout * 3, async {
            let mut client = pool.get().await.map_err(|e| StoreError::Unavailable(pool_err(e)))?;
            schema::migrate(&mut client, &table, &meta).await
        })
        .await;
        match migrated {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                pool.close();
                return Err(e);
            }
            Err(_) => {
                pool.close();
                return Err(StoreError::Timeout(cfg.timeout * 3));
            }
        }
        tracing::info!(component = %name, table = %table, "postgresql state store ready");
        let upkeep = schema::spawn_upkeep(&pool, &table, &meta, cfg.cleanup_interval, cfg.connection_max_idle_time);
        Ok(Self { pool, table, timeout: cfg.timeout, cached: cfg.exec_mode == ExecMode::Cached, upkeep })
    }

    /// Runs `f` under the operation timeout.
    async fn timed<T>(&self, f: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, f).await.map_err(|_| StoreError::Timeout(self.timeout))?
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Timeout(_) => StoreError::Timeout(self.timeout),
            other => StoreError::Unavailable(pool_err(other)),
        })
    }
}

fn pool_err(e: PoolError) -> String {
    match e {
        PoolError::Backend(e) => format!("cannot connect to postgresql: {}", rows::describe(&e)),
        PoolError::Timeout(t) => format!("timed out waiting for a postgresql connection ({t:?})"),
        other => other.to_string(),
    }
}

type Params<'a> = [&'a (dyn ToSql + Sync)];

/// Executes `sql`, through the per-connection statement cache unless `queryExecMode` says not to.
async fn exec<C: GenericClient>(c: &C, cached: bool, sql: &str, params: &Params<'_>) -> Result<u64, StoreError> {
    if cached {
        let st = c.prepare_cached(sql).await.map_err(pg_err)?;
        c.execute(&st, params).await.map_err(pg_err)
    } else {
        c.execute(sql, params).await.map_err(pg_err)
    }
}

async fn select<C: GenericClient>(c: &C, cached: bool, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, StoreError> {
    if cached {
        let st = c.prepare_cached(sql).await.map_err(pg_err)?;
        c.query(&st, params).await.map_err(pg_err)
    } else {
        c.query(sql, params).await.map_err(pg_err)
    }
}

fn row_item(row: &Row) -> Result<(String, StoredItem), StoreError> {
    let key: String = row.try_get(0).map_err(pg_err)?;
    let value: String = row.try_get(1).map_err(pg_err)?;
    let item = decode_item(&value, row.try_get(2).map_err(pg_err)?, row.try_get(3).map_err(pg_err)?, row.try_get(4).map_err(pg_err)?)?;
    Ok((key, item))
}

async fn do_set<C: GenericClient>(c: &C, cached: bool, table: &str, req: &SetRequest) -> Result<(), StoreError> {
    if req.key.is_empty() {
        return Err(StoreError::InvalidRequest("missing key in set operation".into()));
    }
    let ttl = req.ttl()?.filter(|s| *s > 0);
    let (value, is_binary) = encode_value(req);
    let rows = match req.etag.as_deref().filter(|e| !e.is_empty()) {
        None => {
            // An upsert in both modes: under first-write it may only replace an expired row.
            let only_expired = if req.options.concurrency == Concurrency::FirstWrite {
                " WHERE t.expiredate IS NOT NULL AND t.expiredate < CURRENT_TIMESTAMP"
            } else {
                ""
            };
            let sql = format!(
                "INSERT INTO {table} AS t (key, value, isbinary, expiredate) VALUES ($1, CAST($2::text AS jsonb), $3, {EXPIRY})
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, isbinary = excluded.isbinary,
                 updatedate = CURRENT_TIMESTAMP, expiredate = excluded.expiredate{only_expired}"
            );
            exec(c, cached, &sql, &[&req.key, &value, &is_binary, &ttl]).await?
        }
        Some(etag) => {
            let etag = parse_etag(etag)?;
            let sql = format!(
                "UPDATE {table} SET value = CAST($2::text AS jsonb), isbinary = $3, updatedate = CURRENT_TIMESTAMP,
                 expiredate = {EXPIRY} WHERE key = $1 AND xmin = $5::text::xid AND {LIVE_WRITE}"
            );
            exec(c, cached, &sql, &[&req.key, &value, &is_binary, &ttl, &etag]).await?
        }
    };
    if rows != 1 {
        return Err(StoreError::ETagMismatch(format!("no item with key {} and the given etag", req.key)));
    }
    Ok(())
}

async fn do_delete<C: GenericClient>(c: &C, cached: bool, table: &str, req: &DeleteRequest) -> Result<(), StoreError> {
    if req.key.is_empty() {
        return Err(StoreError::InvalidRequest("missing key in delete operation".into()));
    }
    match req.etag.as_deref().filter(|e| !e.is_empty()) {
        None => {
            exec(c, cached, &format!("DELETE FROM {table} WHERE key = $1"), &[&req.key]).await?;
        }
        Some(etag) => {
            let etag = parse_etag(etag)?;
            let sql = format!("DELETE FROM {table} WHERE key = $1 AND xmin = $2::text::xid");
            if exec(c, cached, &sql, &[&req.key, &etag]).await? != 1 {
                return Err(StoreError::ETagMismatch(format!("no item with key {} and the given etag", req.key)));
            }
        }
    }
    Ok(())
}

#[async_trait]
impl StateStore for PostgresStore {
    fn features(&self) -> &'static [Feature] {
        FEATURES
    }

    async fn get(&self, req: GetRequest) -> Result<Option<StoredItem>, StoreError> {
        if req.key.is_empty() {
            return Err(StoreError::InvalidRequest("missing key in get operation".into()));
        }
        let sql = format!("SELECT {COLUMNS} FROM {} WHERE key = $1 AND {LIVE_READ}", self.table);
        let rows = self.timed(async { select(&self.client().await?, self.cached, &sql, &[&req.key]).await }).await?;
        rows.first().map(|r| row_item(r).map(|(_, item)| item)).transpose()
    }

    async fn bulk_get(&self, reqs: Vec<GetRequest>) -> Result<Vec<BulkGetItem>, StoreError> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = reqs.into_iter().map(|r| r.key).collect();
        let sql = format!("SELECT {COLUMNS} FROM {} WHERE key = ANY($1) AND {LIVE_READ}", self.table);
        let rows = self.timed(async { select(&self.client().await?, self.cached, &sql, &[&keys]).await }).await?;
        let mut found: HashMap<String, Result<StoredItem, String>> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let key: String = row.try_get(0).map_err(pg_err)?;
            found.insert(key, row_item(row).map(|(_, item)| item).map_err(|e| e.to_string()));
        }
        Ok(keys
            .into_iter()
            .map(|key| match found.remove(&key) {
                None => BulkGetItem { key, item: None, error: None },
                Some(Ok(item)) => BulkGetItem { key, item: Some(item), error: None },
                Some(Err(error)) => BulkGetItem { key, item: None, error: Some(error) },
            })
            .collect())
    }

    async fn set(&self, req: SetRequest) -> Result<(), StoreError> {
        self.timed(async { do_set(&self.client().await?, self.cached, &self.table, &req).await }).await
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), StoreError> {
        self.timed(async { do_delete(&self.client().await?, self.cached, &self.table, &req).await }).await
    }

    async fn transact(&self, ops: Vec<TransactionOp>, _metadata: Metadata) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.timed(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg_err)?;
            for (i, op) in ops.iter().enumerate() {
                match op {
                    TransactionOp::Set(r) => do_set(&tx, self.cached, &self.table, r).await?,
                    TransactionOp::Delete(r) => do_delete(&tx, self.cached, &self.table, r).await?,
                }
                if i == 0 && ops.len() > 1 {
                    crash_point("state:postgres:transact:mid");
                }
            }
            crash_point("state:postgres:commit:before");
            // Dropping an uncommitted transaction rolls it back: a failed op applies nothing.
            tx.commit().await.map_err(pg_err)
        })
        .await
    }

    async fn query(&self, key_prefix: &str, query: Query, _metadata: Metadata) -> Result<QueryPage, StoreError> {
        let sql = format!(
            "SELECT key, value::text, xmin::text FROM {} WHERE isbinary = false AND substr(key, 1, length($1)) = $1 AND {LIVE_READ}",
            self.table
        );
        let prefix = key_prefix.to_string();
        let rows = self.timed(async { select(&self.client().await?, self.cached, &sql, &[&prefix]).await }).await?;
        let mut candidates = Vec::with_capacity(rows.len());
        for row in &rows {
            let value: String = row.try_get(1).map_err(pg_err)?;
            candidates.push(QueryCandidate {
                key: row.try_get(0).map_err(pg_err)?,
                data: Bytes::from(rows::minify(&value)),
                etag: Some(row.try_get(2).map_err(pg_err)?),
            });
        }
        Ok(query.execute(candidates)?)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed(async { self.client().await?.batch_execute("SELECT 1").await.map_err(pg_err) }).await
    }

    async fn close(&self) {
        for task in &self.upkeep {
            task.abort();
        }
        self.pool.close();
    }
}
