//! Name resolution for sidecars on one host (or hosts sharing a file): a registry in the manner
//! of Dapr's `nameresolution.sqlite`. Loopback has no multicast, so mDNS cannot work here.
//!
//! Each sidecar registers `app id -> address of its internal gRPC port` in a `hosts` table
//! (Dapr's layout: `registration_id, address, app_id, namespace, last_update`), refreshes the row
//! every `updateInterval - timeout - 1s`, and deletes it on shutdown. Lookups pick a random row
//! refreshed within `updateInterval`, so a killed sidecar drops out by itself.
//!
//! Lookups run on their own reader connection (never behind a registry write) and are cached
//! for `CACHE_TTL` (1 s) per app id in an immutable snapshot (`ArcSwap`):
//! a query per call cost more CPU than the rest of an invocation. A new app is never cached as
//! missing (misses always query), and a dead one is gone at most `CACHE_TTL` after its row goes
//! stale.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use rusqlite::{params, Connection, OpenFlags};

use super::InvokeError;
use crate::components::sqlite_pool::SqlitePool;
use crate::components::state::StoreError;

/// Settings of the resolver (Configuration `spec.nameResolution.configuration`).
#[derive(Debug, Clone, PartialEq)]
pub struct NameResolverConfig {
    /// Database file shared by the sidecars.
    pub connection_string: PathBuf,
    /// How often a sidecar refreshes its row; rows older than this are ignored.
    pub update_interval: Duration,
    /// Per-operation timeout.
    pub timeout: Duration,
    /// Table of registrations.
    pub table_name: String,
}

impl NameResolverConfig {
    /// Dapr's defaults with the database at `path`.
    pub fn at(path: PathBuf) -> Self {
        Self { connection_string: path, update_interval: Duration::from_secs(5), timeout: Duration::from_secs(1), table_name: "hosts".into() }
    }
}

/// How long a lookup's addresses are reused.
const CACHE_TTL: Duration = Duration::from_secs(1);

/// The live addresses of one app id, as last read.
#[derive(Clone)]
struct Cached {
    addresses: Arc<[String]>,
    read_at: Instant,
}

/// The registry client of one sidecar.
pub struct SqliteNameResolver {
    pool: Arc<SqlitePool>,
    table: String,
    update_secs: i64,
    cache: ArcSwap<HashMap<String, Cached>>,
}

/// This sidecar's row, kept fresh until `deregister` (or until dropped, when it goes stale).
pub struct Registration {
    pool: Arc<SqlitePool>,
    table: String,
    id: String,
    address: String,
    refresher: tokio::task::JoinHandle<()>,
}

fn err(e: impl std::fmt::Display) -> InvokeError {
    InvokeError::Resolver(e.to_string())
}

fn store_err(e: StoreError) -> InvokeError {
    InvokeError::Resolver(e.to_string())
}

impl SqliteNameResolver {
    /// Opens (creating) the registry.
    pub async fn open(cfg: &NameResolverConfig) -> Result<Self, InvokeError> {
        if let Some(dir) = cfg.connection_string.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let path = cfg.connection_string.clone();
        let busy = cfg.timeout.max(Duration::from_millis(800));
        // One reader connection beside the writer: a lookup never queues behind this sidecar's
        // registry writes, whose commit (an fsync, or a wait for another sidecar's write lock up
        // to the busy timeout) can take seconds on a loaded machine and would stall every
        // invocation whose cached address just expired. WAL readers are never blocked by writers.
        let pool = SqlitePool::start("nameres", 1, move |_| {
            let c = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            c.busy_timeout(busy).map_err(|e| StoreError::Backend(e.to_string()))?;
            c.pragma_update(None, "journal_mode", "WAL").map_err(|e| StoreError::Backend(e.to_string()))?;
            Ok(c)
        })
        .map_err(store_err)?;
        let t = cfg.table_name.clone();
        pool.write(move |c| {
            c.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {t} (registration_id TEXT PRIMARY KEY, address TEXT NOT NULL, app_id TEXT NOT NULL, namespace TEXT NOT NULL, last_update INTEGER NOT NULL);
                 CREATE UNIQUE INDEX IF NOT EXISTS {t}_address_idx ON {t} (address);
                 CREATE INDEX IF NOT EXISTS {t}_last_update_idx ON {t} (last_update);"
            ))
            .map_err(|e| StoreError::Backend(e.to_string()))
        })
        .await
        .map_err(store_err)?;
        Ok(Self { pool: Arc::new(pool), table: cfg.table_name.clone(), update_secs: cfg.update_interval.as_secs().max(2) as i64, cache: ArcSwap::default() })
    }

    /// Registers `app_id` at `address` and keeps the row fresh until `deregister`.
    pub async fn register(&self, app_id: &str, address: &str) -> Result<Registration, InvokeError> {
        let id = uuid::Uuid::new_v4().to_string();
        let (t, rid, addr, app) = (self.table.clone(), id.clone(), address.to_string(), app_id.to_string());
        self.pool
            .write(move |c| {
                c.execute(&format!("REPLACE INTO {t} (registration_id, address, app_id, namespace, last_update) VALUES (?1, ?2, ?3, '', unixepoch('now'))"), params![rid, addr, app])
                    .map(|_| ())
                    .map_err(|e| StoreError::Backend(e.to_string()))
            })
            .await
            .map_err(store_err)?;
        let (pool, t, rid, addr) = (Arc::clone(&self.pool), self.table.clone(), id.clone(), address.to_string());
        let every = Duration::from_secs((self.update_secs - 2).max(1) as u64);
        let refresher = tokio::spawn(async move {
            // A fixed period, as daprd's ticker: sleeping `every` after each write would add the
            // write's own latency (seconds on a loaded disk) to the row's age, and a busy target
            // dropped out of name resolution ("no host found" in the 10,000-connection test).
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let (t, rid, addr) = (t.clone(), rid.clone(), addr.clone());
                let r = pool
                    .write(move |c| {
                        // A slow commit, for tests (tests/it/invoke_faults.rs).
                        fail::fail_point!("nameres:refresh", |_| Ok(1));
                        c.execute(&format!("UPDATE {t} SET last_update = unixepoch('now') WHERE registration_id = ?1 AND address = ?2"), params![rid, addr])
                            .map_err(|e| StoreError::Backend(e.to_string()))
                    })
                    .await;
                match r {
                    Ok(0) => tracing::error!("name registration was taken over by another sidecar at the same address"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "refreshing the name registration failed"),
                }
            }
        });
        tracing::info!(app_id, address, "registered with name resolution");
        Ok(Registration { pool: Arc::clone(&self.pool), table: self.table.clone(), id, address: address.to_string(), refresher })
    }

    /// A live address of `app_id`.
    pub async fn resolve(&self, app_id: &str) -> Result<String, InvokeError> {
        if let Some(c) = self.cache.load().get(app_id).filter(|c| c.read_at.elapsed() < CACHE_TTL) {
            return Ok(pick(&c.addresses));
        }
        let (t, app, secs) = (self.table.clone(), app_id.to_string(), self.update_secs);
        let found: Vec<String> = self
            .pool
            .read(move |c| {
                let mut q = c.prepare_cached(&format!("SELECT address FROM {t} WHERE app_id = ?1 AND unixepoch('now') - last_update < ?2")).map_err(|e| StoreError::Backend(e.to_string()))?;
                let rows = q.query_map(params![app, secs], |r| r.get::<_, String>(0)).map_err(|e| StoreError::Backend(e.to_string()))?;
                rows.collect::<Result<Vec<_>, _>>().map_err(|e| StoreError::Backend(e.to_string()))
            })
            .await
            .map_err(store_err)?;
        if found.is_empty() {
            self.cache.rcu(|m| {
                let mut m = HashMap::clone(m);
                m.remove(app_id);
                m
            });
            return Err(InvokeError::NotFound);
        }
        let addresses: Arc<[String]> = found.into();
        self.cache.rcu(|m| {
            // Expired entries go as the snapshot is copied, so ids no longer called never pile up.
            let mut m: HashMap<String, Cached> = m.iter().filter(|(_, c)| c.read_at.elapsed() < CACHE_TTL).map(|(k, c)| (k.clone(), c.clone())).collect();
            m.insert(app_id.to_string(), Cached { addresses: Arc::clone(&addresses), read_at: Instant::now() });
            m
        });
        Ok(pick(&addresses))
    }

}

/// One of `addresses` at random: instances of one app id share its calls.
fn pick(addresses: &[String]) -> String {
    match addresses.len() {
        1 => addresses[0].clone(),
        n => addresses[rand::random_range(0..n)].clone(),
    }
}

impl Registration {
    /// Removes this sidecar's row.
    pub async fn deregister(self) {
        self.refresher.abort();
        let (t, rid, addr) = (self.table.clone(), self.id.clone(), self.address.clone());
        let _ = self
            .pool
            .write(move |c| c.execute(&format!("DELETE FROM {t} WHERE registration_id = ?1 AND address = ?2"), params![rid, addr]).map_err(|e| StoreError::Backend(e.to_string())))
            .await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn registers_resolves_and_deregisters() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = NameResolverConfig::at(dir.path().join("nr.db"));
        let a = SqliteNameResolver::open(&cfg).await.unwrap();
        let b = SqliteNameResolver::open(&cfg).await.unwrap();
        assert!(matches!(b.resolve("a").await, Err(InvokeError::NotFound)));
        let reg = a.register("a", "127.0.0.1:5000").await.unwrap();
        assert_eq!(b.resolve("a").await.unwrap(), "127.0.0.1:5000");
        reg.deregister().await;
        // Within the cache's lifetime the last answer stands; after it, the row is gone.
        assert_eq!(b.resolve("a").await.unwrap(), "127.0.0.1:5000");
        tokio::time::sleep(CACHE_TTL).await;
        assert!(matches!(b.resolve("a").await, Err(InvokeError::NotFound)));
    }

    #[tokio::test]
    async fn instances_of_one_app_share_its_calls() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = NameResolverConfig::at(dir.path().join("nr.db"));
        let r = SqliteNameResolver::open(&cfg).await.unwrap();
        let _one = r.register("twin", "127.0.0.1:5001").await.unwrap();
        let _two = r.register("twin", "127.0.0.1:5002").await.unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..64 {
            seen.insert(r.resolve("twin").await.unwrap());
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
    }

    #[tokio::test]
    async fn stale_rows_drop_out() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = NameResolverConfig::at(dir.path().join("nr.db"));
        let b = SqliteNameResolver::open(&cfg).await.unwrap();
        let t = cfg.table_name.clone();
        b.pool
            .write(move |c| {
                c.execute(&format!("INSERT INTO {t} VALUES ('x', '127.0.0.1:1', 'dead', '', unixepoch('now') - 60)"), []).map(|_| ()).map_err(|e| StoreError::Backend(e.to_string()))
            })
            .await
            .unwrap();
        assert!(matches!(b.resolve("dead").await, Err(InvokeError::NotFound)));
    }
}
