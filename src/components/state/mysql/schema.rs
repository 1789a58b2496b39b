//! Creating Dapr's MySQL layout and sweeping expired rows.
//!
//! The schema, state table (with its `expiredate` index, added to tables from before Dapr 1.11)
//! and metadata table are created exactly as components-contrib creates them, so databases move
//! between Dapr and rapr. The sweep coordinates through the `last-cleanup` row of the metadata
//! table, like Dapr's: when several sidecars share a table only one sweeps per interval.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool};

use super::config::MysqlConfig;
use super::db_err;
use crate::components::state::StoreError;

/// Connects without a database and creates `schemaName` when it does not exist.
pub async fn ensure_schema(cfg: &MysqlConfig) -> Result<(), StoreError> {
    let mut conn = Conn::new(cfg.server_opts()).await.map_err(|e| connect_err(cfg, e))?;
    let exists: Option<i64> = conn
        .exec_first("SELECT EXISTS (SELECT SCHEMA_NAME FROM information_schema.schemata WHERE SCHEMA_NAME = ?)", (cfg.schema_name.as_str(),))
        .await
        .map_err(db_err)?;
    if exists != Some(1) {
        tracing::info!(schema = %cfg.schema_name, "creating MySQL schema");
        // The name passed `valid_identifier`, so interpolating it is safe.
        conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS {}", cfg.schema_name)).await.map_err(db_err)?;
    }
    // A failed goodbye does not matter: the schema is in place.
    let _ = conn.disconnect().await;
    Ok(())
}

/// Describes a connection failure without the password.
pub fn connect_err(cfg: &MysqlConfig, e: mysql_async::Error) -> StoreError {
    let d = &cfg.dsn;
    let addr = d.socket.clone().unwrap_or_else(|| format!("{}:{}", d.host, d.port));
    StoreError::Backend(format!("cannot connect to MySQL at {addr} as user {:?}: {e}", d.user))
}

/// Creates the state and metadata tables in the pool's schema when missing.
pub async fn ensure_tables(pool: &Pool, cfg: &MysqlConfig) -> Result<(), StoreError> {
    let mut conn = pool.get_conn().await.map_err(|e| connect_err(cfg, e))?;
    let (schema, table, meta) = (&cfg.schema_name, &cfg.table_name, &cfg.metadata_table_name);
    if !table_exists(&mut conn, schema, table).await? {
        tracing::info!(table = %table, "creating MySQL state table");
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                id VARCHAR(255) NOT NULL PRIMARY KEY,
                value JSON NOT NULL,
                isbinary BOOLEAN NOT NULL,
                insertDate TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
                updateDate TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
                eTag VARCHAR(36) NOT NULL,
                expiredate TIMESTAMP NULL,
                INDEX expiredate_idx(expiredate)
            )"
        ))
        .await
        .map_err(db_err)?;
    }
    let has_expiry: Option<i64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = ? AND table_name = ? AND column_name = 'expiredate'",
            (schema.as_str(), table.as_str()),
        )
        .await
        .map_err(db_err)?;
    if has_expiry != Some(1) {
        tracing::info!(table = %table, "adding the expiredate column to a MySQL state table from before Dapr 1.11");
        conn.query_drop(format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS expiredate TIMESTAMP NULL")).await.map_err(db_err)?;
        conn.query_drop(format!("CREATE INDEX IF NOT EXISTS expiredate_idx ON {table} (expiredate)")).await.map_err(db_err)?;
    }
    if !table_exists(&mut conn, schema, meta).await? {
        tracing::info!(table = %meta, "creating MySQL metadata table");
        conn.query_drop(format!("CREATE TABLE IF NOT EXISTS {meta} (id VARCHAR(255) NOT NULL PRIMARY KEY, value TEXT NOT NULL)"))
            .await
            .map_err(db_err)?;
    }
    Ok(())
}

async fn table_exists(conn: &mut Conn, schema: &str, table: &str) -> Result<bool, StoreError> {
    let n: Option<i64> = conn
        .exec_first("SELECT EXISTS (SELECT TABLE_NAME FROM information_schema.tables WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?)", (schema, table))
        .await
        .map_err(db_err)?;
    Ok(n == Some(1))
}

/// Starts the periodic sweep of expired rows; the task ends when aborted.
pub fn spawn_cleanup(pool: Pool, table: String, meta: String, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            match sweep(&pool, &table, &meta, every).await {
                Ok(Some(n)) => tracing::debug!(table = %table, removed = n, "removed expired state rows"),
                Ok(None) => tracing::debug!(table = %table, "expired state sweep ran recently elsewhere"),
                Err(e) => tracing::warn!(table = %table, error = %e, "expired state sweep failed"),
            }
        }
    })
}

/// One sweep: claims the interval through `last-cleanup`, then deletes expired rows.
/// `None` when another process swept within the interval.
pub async fn sweep(pool: &Pool, table: &str, meta: &str, every: Duration) -> Result<Option<u64>, StoreError> {
    let mut conn = pool.get_conn().await.map_err(db_err)?;
    // 100 ms of slack so a sweeper on an exact schedule is not refused by rounding.
    let slack_ms = (every.as_millis() as i64 - 100).max(0);
    let claim = format!(
        "INSERT INTO {meta} (id, value) VALUES ('last-cleanup', CURRENT_TIMESTAMP)
         ON DUPLICATE KEY UPDATE value = IF(CURRENT_TIMESTAMP > DATE_ADD(value, INTERVAL ?*1000 MICROSECOND), CURRENT_TIMESTAMP, value)"
    );
    conn.exec_drop(claim, (slack_ms,)).await.map_err(db_err)?;
    if conn.affected_rows() == 0 {
        return Ok(None);
    }
    conn.query_drop(format!("DELETE FROM {table} WHERE expiredate IS NOT NULL AND expiredate <= CURRENT_TIMESTAMP")).await.map_err(db_err)?;
    Ok(Some(conn.affected_rows()))
}
