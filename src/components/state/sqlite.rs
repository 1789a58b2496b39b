//! `state.sqlite`: the embedded, file-backed default store of `rapr run`.
//!
//! Dapr's table layout (components-contrib), so a database written by Dapr is readable here and
//! the reverse: `key, value, is_binary, etag, expiration_time, update_time`, UUID ETags, expiry
//! compared with `CURRENT_TIMESTAMP`, and a metadata table holding the migration level, shared
//! by every state table using that metadata table as in contrib (a second table under a
//! migrated one is never created, only warned about). As in contrib's store, an ETag is never
//! parsed: any ETag that is not the stored one, UUID or not, is a mismatch (daprd's 409 /
//! ABORTED), never invalid. WAL mode, so readers never block the writer and an acknowledged
//! commit survives a process kill.
//! Query is a rapr extension (Dapr's SQLite store has none): evaluated by `query.rs` over the
//! live JSON rows under the caller's key prefix.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};

use crate::components::sqlite_pool::{db_err, SqlitePool};
use super::ttl::{self, EXPIRE_KEY};
use super::{
    BulkGetItem, Concurrency, DeleteRequest, Feature, GetRequest, Metadata, Query, QueryCandidate,
    QueryPage, SetRequest, StateStore, StoreError, StoredItem, TransactionOp,
};
use crate::components::metadata::{ComponentMetadata, MetadataError};
use crate::components::state::bulk_answers;
use crate::runtime::failpoints::crash_point;

const FEATURES: &[Feature] = &[Feature::ETag, Feature::Transactional, Feature::Ttl, Feature::QueryApi];
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Keys per statement in a bulk get (SQLite's parameter limit is far above this).
const BULK_CHUNK: usize = 500;

/// Typed metadata of `state.sqlite` (Dapr's keys and defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct SqliteConfig {
    /// File path or `file:` URI; `:memory:` for a private in-memory database.
    pub connection_string: String,
    /// State table.
    pub table_name: String,
    /// Metadata table.
    pub metadata_table_name: String,
    /// Per-operation timeout.
    pub timeout: Duration,
    /// Interval between expired-row sweeps; zero disables them.
    pub cleanup_interval: Duration,
    /// How long a connection waits on a locked database.
    pub busy_timeout: Duration,
    /// Use the rollback journal instead of WAL.
    pub disable_wal: bool,
}

impl SqliteConfig {
    /// Decodes and validates the component's metadata.
    pub fn from_metadata(md: &mut ComponentMetadata) -> Result<Self, MetadataError> {
        let cfg = Self {
            connection_string: md.required(&["connectionString", "url"])?,
            table_name: md.string(&["tableName"]).unwrap_or_else(|| "state".into()),
            metadata_table_name: md.string(&["metadataTableName"]).unwrap_or_else(|| "metadata".into()),
            timeout: md.duration(&["timeout", "timeoutInSeconds"], Duration::from_secs(20))?,
            cleanup_interval: md.duration(&["cleanupInterval", "cleanupIntervalInSeconds"], Duration::from_secs(3600))?,
            busy_timeout: md.duration(&["busyTimeout"], Duration::from_secs(2))?,
            disable_wal: md.bool(&["disableWAL"], false)?,
        };
        for (key, name) in [("tableName", &cfg.table_name), ("metadataTableName", &cfg.metadata_table_name)] {
            if !valid_identifier(name) {
                return Err(MetadataError {
                    component: String::new(),
                    key: key.into(),
                    reason: format!("{name:?} is not a valid table name (letters, digits and _ only)"),
                });
            }
        }
        Ok(cfg)
    }

    fn in_memory(&self) -> bool {
        self.connection_string.contains(":memory:") || self.connection_string.contains("mode=memory")
    }
}

/// Table names are interpolated into SQL, so only plain identifiers pass.
fn valid_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The SQLite store.
pub struct SqliteStore {
    pool: SqlitePool,
    table: String,
    cleanup: Option<tokio::task::JoinHandle<()>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database and migrates it to Dapr's layout.
    pub async fn open(name: &str, cfg: SqliteConfig) -> Result<Self, StoreError> {
        let readers = if cfg.in_memory() { 0 } else { 2 };
        let c = cfg.clone();
        let pool = SqlitePool::start(name, readers, move |writer| open_connection(&c, writer))?;
        let (table, meta) = (cfg.table_name.clone(), cfg.metadata_table_name.clone());
        pool.write(move |conn| migrate(conn, &table, &meta)).await?;
        let mut store = Self { pool, table: cfg.table_name.clone(), cleanup: None };
        if !cfg.cleanup_interval.is_zero() {
            store.cleanup = Some(store.spawn_cleanup(cfg));
        }
        Ok(store)
    }

    fn spawn_cleanup(&self, cfg: SqliteConfig) -> tokio::task::JoinHandle<()> {
        // Each sweep opens its own writer connection (on its own thread) and closes it after:
        // the sweep never needs `self`, and between sweeps (an hour by default) no idle
        // connection, thread or SQLite page cache is held for it.
        let name = format!("{}-cleanup", cfg.table_name);
        let (table, meta, every) = (cfg.table_name.clone(), cfg.metadata_table_name.clone(), cfg.cleanup_interval);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let (t, m) = (table.clone(), meta.clone());
                let swept = match SqlitePool::start(&name, 0, |w| open_connection(&cfg, w)) {
                    Ok(pool) => pool.write(move |conn| sweep_expired(conn, &t, &m)).await,
                    Err(e) => Err(e),
                };
                match swept {
                    Ok(n) => tracing::debug!(table = %table, removed = n, "removed expired state rows"),
                    Err(e) => tracing::warn!(table = %table, error = %e, "expired state sweep failed"),
                }
            }
        })
    }
}

fn open_connection(cfg: &SqliteConfig, writer: bool) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&cfg.connection_string, flags)
        .map_err(|e| StoreError::Backend(format!("cannot open {:?}: {e}", cfg.connection_string)))?;
    conn.busy_timeout(cfg.busy_timeout.max(cfg.timeout)).map_err(db_err)?;
    if writer && !cfg.in_memory() {
        let mode = if cfg.disable_wal { "DELETE" } else { "WAL" };
        conn.pragma_update(None, "journal_mode", mode).map_err(db_err)?;
    }
    // NORMAL in WAL keeps every commit across a process crash (only power loss can drop the last).
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(db_err)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, table: &str, meta: &str) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db_err)?;
    tx.execute_batch(&format!("CREATE TABLE IF NOT EXISTS {meta} (key text NOT NULL PRIMARY KEY, value text NOT NULL)"))
        .map_err(db_err)?;
    let level: Option<String> = tx
        .query_row(&format!("SELECT value FROM {meta} WHERE key = 'migrations'"), [], |r| r.get(0))
        .optional()
        .map_err(db_err)?;
    let level: u32 = match level {
        None => 0,
        Some(v) => v.parse().map_err(|_| StoreError::Backend(format!("invalid migration level {v:?} in {meta}")))?,
    };
    // As contrib's (and PostgreSQL's): the level belongs to the metadata table, shared by every
    // state table using it, so a second `tableName` under a migrated one is never created.
    if level >= 1 {
        let exists: bool = tx
            .query_row("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)", [table], |r| r.get(0))
            .map_err(db_err)?;
        if !exists {
            tracing::warn!(
                table = %table,
                metadata_table = %meta,
                "the metadata table records migration level {level} but the state table {table} does not exist; as Dapr, \
                 rapr will not create it (the level is shared by every state table using {meta}): give this component \
                 its own metadataTableName"
            );
        }
    }
    if level < 1 {
        tx.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                key TEXT NOT NULL PRIMARY KEY,
                value TEXT NOT NULL,
                is_binary BOOLEAN NOT NULL,
                etag TEXT NOT NULL,
                expiration_time TIMESTAMP DEFAULT NULL,
                update_time TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
            );
            CREATE INDEX IF NOT EXISTS idx_{table}_expiration_time ON {table} (expiration_time);
            REPLACE INTO {meta} (key, value) VALUES ('migrations', '1');"
        ))
        .map_err(db_err)?;
    }
    tx.commit().map_err(db_err)
}

fn sweep_expired(conn: &mut Connection, table: &str, meta: &str) -> Result<usize, StoreError> {
    let tx = conn.transaction().map_err(db_err)?;
    let n = tx
        .execute(&format!("DELETE FROM {table} WHERE expiration_time IS NOT NULL AND expiration_time < CURRENT_TIMESTAMP"), [])
        .map_err(db_err)?;
    tx.execute(&format!("REPLACE INTO {meta} (key, value) VALUES ('last-cleanup', CURRENT_TIMESTAMP)"), [])
        .map_err(db_err)?;
    tx.commit().map_err(db_err)?;
    Ok(n)
}

/// Decodes a row's value (base64 when `is_binary`) and expiry.
fn row_item(value: String, is_binary: bool, etag: String, expires: Option<i64>) -> Result<StoredItem, StoreError> {
    let data = if is_binary {
        Bytes::from(B64.decode(value.as_bytes()).map_err(|e| StoreError::Backend(format!("corrupt binary value: {e}")))?)
    } else {
        Bytes::from(value)
    };
    let mut metadata = Metadata::new();
    if let Some(t) = expires {
        metadata.insert(EXPIRE_KEY.to_string(), ttl::format_expiry(t));
    }
    Ok(StoredItem { data, etag: Some(etag), metadata })
}

const LIVE: &str = "(expiration_time IS NULL OR expiration_time > CURRENT_TIMESTAMP)";
const COLUMNS: &str = "key, value, is_binary, etag, CAST(strftime('%s', expiration_time) AS INTEGER)";

fn do_set(tx: &Transaction<'_>, table: &str, req: &SetRequest) -> Result<(), StoreError> {
    if req.key.is_empty() {
        return Err(StoreError::InvalidRequest("missing key in set operation".into()));
    }
    let ttl = req.ttl()?;
    let (value, is_binary) = if req.is_json {
        (String::from_utf8_lossy(&req.value).into_owned(), false)
    } else {
        (B64.encode(&req.value), true)
    };
    let etag = uuid::Uuid::new_v4().to_string();
    let expiration = match ttl {
        Some(s) if s > 0 => format!("DATETIME(CURRENT_TIMESTAMP, '+{s} seconds')"),
        _ => "NULL".to_string(),
    };
    let rows = match req.etag.as_deref().filter(|e| !e.is_empty()) {
        None => {
            if req.options.concurrency == Concurrency::FirstWrite {
                // An expired row does not count as existing.
                tx.execute(&format!("DELETE FROM {table} WHERE key = ?1 AND NOT {LIVE}"), params![req.key]).map_err(db_err)?;
            }
            let verb = if req.options.concurrency == Concurrency::FirstWrite { "INSERT OR IGNORE" } else { "INSERT OR REPLACE" };
            tx.execute(
                &format!("{verb} INTO {table} (key, value, is_binary, etag, update_time, expiration_time) VALUES (?1, ?2, ?3, ?4, CURRENT_TIMESTAMP, {expiration})"),
                params![req.key, value, is_binary, etag],
            )
        }
        Some(old) => {
            tx.execute(
            &format!("UPDATE {table} SET value = ?1, etag = ?2, is_binary = ?3, update_time = CURRENT_TIMESTAMP, expiration_time = {expiration} WHERE key = ?4 AND etag = ?5 AND {LIVE}"),
            params![value, etag, is_binary, req.key, old],
            )
        }
    }
    .map_err(db_err)?;
    if rows == 0 {
        return Err(StoreError::ETagMismatch(format!("no item with key {} and the given etag", req.key)));
    }
    Ok(())
}

fn do_delete(tx: &Transaction<'_>, table: &str, req: &DeleteRequest) -> Result<(), StoreError> {
    if req.key.is_empty() {
        return Err(StoreError::InvalidRequest("missing key in delete operation".into()));
    }
    match req.etag.as_deref().filter(|e| !e.is_empty()) {
        None => {
            tx.execute(&format!("DELETE FROM {table} WHERE key = ?1"), params![req.key]).map_err(db_err)?;
        }
        Some(etag) => {
            let rows = tx
                .execute(&format!("DELETE FROM {table} WHERE key = ?1 AND etag = ?2 AND {LIVE}"), params![req.key, etag])
                .map_err(db_err)?;
            if rows == 0 {
                return Err(StoreError::ETagMismatch(format!("no item with key {} and the given etag", req.key)));
            }
        }
    }
    Ok(())
}

type Row = (String, String, bool, String, Option<i64>);

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

#[async_trait]
impl StateStore for SqliteStore {
    fn features(&self) -> &'static [Feature] {
        FEATURES
    }

    async fn get(&self, req: GetRequest) -> Result<Option<StoredItem>, StoreError> {
        if req.key.is_empty() {
            return Err(StoreError::InvalidRequest("missing key in get operation".into()));
        }
        let sql = format!("SELECT {COLUMNS} FROM {} WHERE key = ?1 AND {LIVE}", self.table);
        let row = self
            .pool
            .read(move |c| c.prepare_cached(&sql).and_then(|mut s| s.query_row(params![req.key], read_row).optional()).map_err(db_err))
            .await?;
        row.map(|(_, v, b, e, x)| row_item(v, b, e, x)).transpose()
    }

    async fn bulk_get(&self, reqs: Vec<GetRequest>) -> Result<Vec<BulkGetItem>, StoreError> {
        let keys: Vec<String> = reqs.into_iter().map(|r| r.key).collect();
        let table = self.table.clone();
        let found = self
            .pool
            .read(move |c| {
                let mut found = std::collections::HashMap::new();
                for chunk in keys.chunks(BULK_CHUNK) {
                    let marks = vec!["?"; chunk.len()].join(",");
                    let sql = format!("SELECT {COLUMNS} FROM {table} WHERE key IN ({marks}) AND {LIVE}");
                    let mut stmt = c.prepare(&sql).map_err(db_err)?;
                    let rows = stmt.query_map(rusqlite::params_from_iter(chunk.iter()), read_row).map_err(db_err)?;
                    for row in rows {
                        let row = row.map_err(db_err)?;
                        found.insert(row.0.clone(), row);
                    }
                }
                Ok((keys, found))
            })
            .await?;
        let (keys, found) = found;
        Ok(bulk_answers(keys, found, |(_, v, b, e, x)| row_item(v, b, e, x)))
    }

    async fn set(&self, req: SetRequest) -> Result<(), StoreError> {
        self.transact(vec![TransactionOp::Set(req)], Metadata::new()).await
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), StoreError> {
        self.transact(vec![TransactionOp::Delete(req)], Metadata::new()).await
    }

    async fn transact(&self, ops: Vec<TransactionOp>, _metadata: Metadata) -> Result<(), StoreError> {
        let table = self.table.clone();
        self.pool
            .write(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db_err)?;
                for (i, op) in ops.iter().enumerate() {
                    match op {
                        TransactionOp::Set(r) => do_set(&tx, &table, r)?,
                        TransactionOp::Delete(r) => do_delete(&tx, &table, r)?,
                    }
                    if i == 0 && ops.len() > 1 {
                        crash_point("state:sqlite:transact:mid");
                    }
                }
                crash_point("state:sqlite:commit:before");
                tx.commit().map_err(db_err)
            })
            .await
    }

    async fn query(&self, key_prefix: &str, query: Query, _metadata: Metadata) -> Result<QueryPage, StoreError> {
        let sql = format!("SELECT key, value, etag FROM {} WHERE is_binary = 0 AND substr(key, 1, ?2) = ?1 AND {LIVE}", self.table);
        let prefix = key_prefix.to_string();
        let rows = self
            .pool
            .read(move |c| {
                let mut stmt = c.prepare_cached(&sql).map_err(db_err)?;
                let rows = stmt
                    .query_map(params![prefix, prefix.chars().count() as i64], |r| {
                        Ok(QueryCandidate { key: r.get(0)?, data: Bytes::from(r.get::<_, String>(1)?), etag: Some(r.get(2)?) })
                    })
                    .map_err(db_err)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
            })
            .await?;
        Ok(query.execute(rows)?)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.pool.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(db_err)).await
    }

    async fn close(&self) {
        if let Some(h) = &self.cleanup {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path, extra: &[(&str, &str)]) -> SqliteConfig {
        let mut pairs = vec![("connectionString".to_string(), dir.join("t.db").display().to_string())];
        pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        SqliteConfig::from_metadata(&mut ComponentMetadata::new("t", &pairs)).unwrap()
    }

    #[test]
    fn table_names_with_sql_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let pairs = vec![("connectionString".to_string(), "x.db".to_string()), ("tableName".to_string(), "s; DROP TABLE t".to_string())];
        let e = SqliteConfig::from_metadata(&mut ComponentMetadata::new("t", &pairs)).unwrap_err();
        assert_eq!(e.key, "tableName");
        assert_eq!(config(dir.path(), &[]).cleanup_interval, Duration::from_secs(3600));
    }

    #[tokio::test]
    async fn uses_wal_and_sweeps_expired_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open("t", config(dir.path(), &[("cleanupInterval", "1s")])).await.unwrap();
        let ttl = Metadata::from([(ttl::TTL_KEY.to_string(), "1".to_string())]);
        store.set(SetRequest { key: "k".into(), value: Bytes::from_static(b"1"), is_json: true, metadata: ttl, ..Default::default() }).await.unwrap();
        let raw = Connection::open(dir.path().join("t.db")).unwrap();
        let mode: String = raw.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let n: i64 = raw.query_row("SELECT COUNT(*) FROM state", [], |r| r.get(0)).unwrap();
            if n == 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "expired row never swept");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let swept: String = raw.query_row("SELECT value FROM metadata WHERE key = 'last-cleanup'", [], |r| r.get(0)).unwrap();
        assert!(!swept.is_empty());
        store.close().await;
    }
}
