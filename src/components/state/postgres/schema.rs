//! Dapr's schema for `state.postgresql` v1 and the background upkeep of the store.
//!
//! Migrations follow components-contrib: a metadata table `(key text PRIMARY KEY, value text)`
//! holds the migration level under `migrations`; level 1 creates the state table, level 2 adds
//! `expiredate`. Concurrent sidecars serialise on a row lock (`lock` row, `SELECT ... FOR
//! UPDATE`) as Dapr's do, so rapr and daprd can migrate the same database safely. The DDL runs
//! inside that locking transaction, so a crash mid-migration leaves the previous level intact.
//!
//! As in daprd, the level belongs to the metadata table, not to the state table: every component
//! sharing one metadata table (`dapr_metadata` by default) shares one level, so a second
//! `tableName` pointed at an already-migrated metadata table is never created. rapr keeps that
//! behaviour (it is what daprd does to the same database) and warns at init when the level says
//! migrated but the state table is missing; the cure is a `metadataTableName` per state table.
//!
//! The sweep deletes expired rows every `cleanupInterval`, but only after atomically moving
//! `last-cleanup` forward when it is older than the interval: with several sidecars on one table,
//! one of them sweeps per interval (Dapr's protocol, so it coordinates with daprd too).

use std::time::Duration;

use deadpool_postgres::{GenericClient, Pool};

use super::rows::pg_err;
use super::super::StoreError;

/// SQLSTATE of a unique violation: two sessions racing on `CREATE TABLE IF NOT EXISTS`.
const UNIQUE_VIOLATION: &str = "23505";

/// Brings `table` and `meta` to Dapr's latest v1 level.
pub async fn migrate(client: &mut deadpool_postgres::Object, table: &str, meta: &str) -> Result<(), StoreError> {
    let create_meta = format!("CREATE TABLE IF NOT EXISTS {meta} (key text NOT NULL PRIMARY KEY, value text NOT NULL)");
    let mut attempt = 0;
    loop {
        match client.batch_execute(&create_meta).await {
            Ok(()) => break,
            Err(e) if attempt < 3 && e.code().is_some_and(|c| c.code() == UNIQUE_VIOLATION) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(migration_err(meta, e)),
        }
    }
    client
        .execute(&format!("INSERT INTO {meta} (key, value) VALUES ('lock', 'lock') ON CONFLICT (key) DO NOTHING"), &[])
        .await
        .map_err(|e| migration_err(meta, e))?;
    let tx = client.transaction().await.map_err(pg_err)?;
    tx.query_opt(&format!("SELECT value FROM {meta} WHERE key = 'lock' FOR UPDATE"), &[]).await.map_err(|e| migration_err(meta, e))?;
    let level = tx
        .query_opt(&format!("SELECT value FROM {meta} WHERE key = 'migrations'"), &[])
        .await
        .map_err(|e| migration_err(meta, e))?
        .map(|row| row.try_get::<_, String>(0))
        .transpose()
        .map_err(pg_err)?;
    let level: u32 = match level {
        None => 0,
        Some(v) => v.trim().parse().map_err(|_| StoreError::Backend(format!("invalid migration level {v:?} in {meta}")))?,
    };
    if level >= 1 && !table_exists(&tx, table).await? {
        tracing::warn!(
            table = %table,
            metadata_table = %meta,
            level,
            "the metadata table records migration level {level} but the state table {table} does not exist; as daprd, \
             rapr will not create it (the level is shared by every state table using {meta}): give this component \
             its own metadataTableName"
        );
    }
    let set_level = format!("INSERT INTO {meta} (key, value) VALUES ('migrations', $1) ON CONFLICT (key) DO UPDATE SET value = $1");
    if level < 1 {
        tracing::info!(table = %table, "creating state table");
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                key text NOT NULL PRIMARY KEY,
                value jsonb NOT NULL,
                isbinary boolean NOT NULL,
                insertdate TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
                updatedate TIMESTAMP WITH TIME ZONE NULL
            )"
        ))
        .await
        .map_err(|e| migration_err(table, e))?;
        tx.execute(&set_level, &[&"1"]).await.map_err(|e| migration_err(meta, e))?;
    }
    if level < 2 {
        tracing::info!(table = %table, "adding expiredate to the state table");
        tx.batch_execute(&format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS expiredate TIMESTAMP WITH TIME ZONE"))
            .await
            .map_err(|e| migration_err(table, e))?;
        tx.execute(&set_level, &[&"2"]).await.map_err(|e| migration_err(meta, e))?;
    }
    tx.commit().await.map_err(|e| migration_err(meta, e))
}

/// Whether `table` (optionally schema-qualified, as `tableName` allows) exists.
async fn table_exists(c: &impl GenericClient, table: &str) -> Result<bool, StoreError> {
    let row = c.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table]).await.map_err(|e| migration_err(table, e))?;
    row.try_get(0).map_err(pg_err)
}

fn migration_err(table: &str, e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(format!("migrating table {table}: {}", super::rows::describe(&e)))
}

/// One sweep: claims the interval in `meta`, then deletes expired rows. `Ok(None)` when another
/// sidecar (or an earlier tick) swept less than an interval ago.
pub async fn sweep(pool: &Pool, table: &str, meta: &str, every: Duration) -> Result<Option<u64>, StoreError> {
    let client = pool.get().await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
    // 100 ms of slack so a tick landing just early still sweeps (as Dapr's collector does).
    let min_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX).saturating_sub(100);
    let claimed = client
        .execute(
            &format!(
                "INSERT INTO {meta} AS m (key, value) VALUES ('last-cleanup', now()::text)
                 ON CONFLICT (key) DO UPDATE SET value = now()::text
                 WHERE (EXTRACT('epoch' FROM now() - m.value::timestamp with time zone) * 1000)::bigint > $1"
            ),
            &[&min_ms],
        )
        .await
        .map_err(pg_err)?;
    if claimed == 0 {
        return Ok(None);
    }
    let removed = client
        .execute(&format!("DELETE FROM {table} WHERE expiredate IS NOT NULL AND expiredate < now()"), &[])
        .await
        .map_err(pg_err)?;
    Ok(Some(removed))
}

/// Starts the periodic sweep (when `every` is not zero) and the idle-connection reaper (when
/// `idle` is set). The handles are aborted when the store closes.
pub fn spawn_upkeep(pool: &Pool, table: &str, meta: &str, every: Duration, idle: Option<Duration>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    if !every.is_zero() {
        let (pool, table, meta) = (pool.clone(), table.to_string(), meta.to_string());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                match sweep(&pool, &table, &meta, every).await {
                    Ok(Some(n)) => tracing::debug!(table = %table, removed = n, "removed expired state rows"),
                    Ok(None) => tracing::debug!(table = %table, "expired rows were swept recently; skipping"),
                    Err(e) => tracing::warn!(table = %table, error = %e, "expired state sweep failed"),
                }
            }
        }));
    }
    if let Some(idle) = idle {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let every = (idle / 2).max(Duration::from_secs(1));
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                pool.retain(|_, m| m.last_used() < idle);
            }
        }));
    }
    tasks
}
