//! `pubsub.sqlite`: the embedded, durable broker of `rapr init` — a queue in one SQLite file that
//! every sidecar process on the host shares, with no server.
//!
//! Consumer groups are per `consumerID` (daprd sets it to the app id): every group gets every
//! message; the subscriptions of one group compete, a message being claimed by one of them for
//! `processingTimeout`. `Retry` makes the message visible again after `redeliverInterval`;
//! `Park` keeps it, flagged, never delivered again. Acknowledged messages are swept once every
//! group of the topic acknowledged them (`retentionPeriod` caps the age of any message).
//! rapr's own extension: there is no daprd component of this type (docs/runtime-semantics.md).
//!
//! WAL, `synchronous=NORMAL` as `state.sqlite`: a publish that returned survives a crash of any
//! process; only a power loss can drop the last commits. All SQLite calls run on the pool's
//! connection threads, never on the runtime.

mod claim;
mod config;
mod consumer;
pub mod store;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use config::{BrokerConfig, ConcurrencyMode};

use super::{BulkFailure, BulkPublishRequest, Feature, MessageHandler, PubSub, PubSubError, PublishRequest, SubscribeRequest};
use crate::components::registry::{warn_unread, ComponentError, Registry};
use crate::components::sqlite_pool::{db_err, SqlitePool};
use crate::components::state::StoreError;
use consumer::Consumer;
use store::{NewMessage, Tables};

const FEATURES: &[Feature] = &[Feature::BulkPublish];

/// The broker.
pub struct SqliteBroker {
    pool: Arc<SqlitePool>,
    tables: Tables,
    cfg: BrokerConfig,
    /// Wakes this process's subscriptions when it publishes.
    published: Arc<Notify>,
    /// Parent of every subscription and of the sweep; fired by `close`.
    closing: CancellationToken,
    closed: AtomicBool,
}

fn failed(e: StoreError) -> PubSubError {
    match e {
        StoreError::Unavailable(m) => PubSubError::Unavailable(m),
        other => PubSubError::Failed(other.to_string()),
    }
}

impl SqliteBroker {
    /// Opens (creating if needed) the database and its tables, and starts the sweep.
    pub async fn open(name: &str, cfg: BrokerConfig) -> Result<Self, PubSubError> {
        let c = cfg.clone();
        let pool = Arc::new(SqlitePool::start(&format!("{name}-pubsub"), 0, move |writer| open_connection(&c, writer)).map_err(failed)?);
        let tables = Tables::new(&cfg.table_prefix);
        let t = tables.clone();
        pool.write(move |c| store::migrate(c, &t)).await.map_err(failed)?;
        let broker = Self { pool, tables, cfg, published: Arc::new(Notify::new()), closing: CancellationToken::new(), closed: AtomicBool::new(false) };
        broker.spawn_sweep();
        Ok(broker)
    }

    fn spawn_sweep(&self) {
        let every = self.cfg.cleanup_interval;
        if every.is_zero() {
            return;
        }
        let (pool, tables, stop) = (Arc::clone(&self.pool), self.tables.clone(), self.closing.clone());
        let retention = (!self.cfg.retention_period.is_zero()).then(|| self.cfg.retention_period.as_millis().min(i64::MAX as u128) as i64);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let t = tables.clone();
                match pool.write(move |c| store::sweep(c, &t, retention)).await {
                    Ok(n) => tracing::debug!(removed = n, "sqlite pubsub: swept acknowledged messages"),
                    Err(e) => tracing::warn!(error = %e, "sqlite pubsub: sweep failed"),
                }
            }
        });
    }

    /// Whether `group` still holds message `id` of `topic` (not acknowledged; parked counts).
    /// The conformance suite's probe and the tests' view of the file.
    pub async fn held(&self, topic: &str, group: &str, id: &str) -> Result<bool, PubSubError> {
        let id: i64 = id.parse().map_err(|_| PubSubError::Failed(format!("{id:?} is not a message id of this broker")))?;
        let (t, topic, group) = (self.tables.clone(), topic.to_string(), group.to_string());
        self.pool.write(move |c| store::held(c, &t, &topic, &group, id)).await.map_err(failed)
    }

    async fn insert(&self, topic: String, msgs: Vec<NewMessage>) -> Result<(), PubSubError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PubSubError::Closed);
        }
        if topic.is_empty() {
            return Err(PubSubError::Failed("topic is empty".into()));
        }
        let t = self.tables.clone();
        self.pool.write(move |c| store::publish(c, &t, &topic, &msgs)).await.map_err(failed)?;
        self.published.notify_waiters();
        Ok(())
    }

    fn ms(d: std::time::Duration) -> i64 {
        d.as_millis().min(i64::MAX as u128) as i64
    }
}

fn open_connection(cfg: &BrokerConfig, writer: bool) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&cfg.connection_string, flags).map_err(|e| StoreError::Backend(format!("cannot open {:?}: {e}", cfg.connection_string)))?;
    conn.busy_timeout(cfg.busy_timeout).map_err(db_err)?;
    if writer && !cfg.in_memory() {
        let mode = if cfg.disable_wal { "DELETE" } else { "WAL" };
        conn.pragma_update(None, "journal_mode", mode).map_err(db_err)?;
    }
    // As state.sqlite: NORMAL in WAL keeps every commit across a process crash.
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(db_err)?;
    Ok(conn)
}

#[async_trait]
impl PubSub for SqliteBroker {
    fn features(&self) -> &'static [Feature] {
        FEATURES
    }

    fn max_delivery_count(&self) -> Option<u32> {
        Some(self.cfg.max_delivery_count)
    }

    async fn publish(&self, req: PublishRequest) -> Result<(), PubSubError> {
        self.insert(req.topic, vec![NewMessage { data: req.data.to_vec(), content_type: req.content_type }]).await
    }

    /// One transaction: every entry is published, or every entry is reported failed.
    async fn bulk_publish(&self, req: BulkPublishRequest) -> Result<Vec<BulkFailure>, PubSubError> {
        let ids: Vec<String> = req.entries.iter().map(|e| e.entry_id.clone()).collect();
        let msgs = req.entries.into_iter().map(|e| NewMessage { data: e.data.to_vec(), content_type: Some(e.content_type) }).collect();
        match self.insert(req.topic, msgs).await {
            Ok(()) => Ok(Vec::new()),
            Err(e) => Ok(ids.into_iter().map(|entry_id| BulkFailure { entry_id, error: e.to_string() }).collect()),
        }
    }

    async fn subscribe(&self, req: SubscribeRequest, handler: Arc<dyn MessageHandler>, cancel: CancellationToken) -> Result<(), PubSubError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PubSubError::Closed);
        }
        let group = req
            .metadata
            .iter()
            .find(|(k, v)| k.eq_ignore_ascii_case("consumerID") && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_string())
            .or_else(|| self.cfg.consumer_id.clone())
            .ok_or_else(|| PubSubError::Metadata("consumerID is not set (daprd sets it to the app id)".into()))?;
        let mode = match req.metadata.iter().find(|(k, _)| k.eq_ignore_ascii_case("concurrencyMode")) {
            None => self.cfg.concurrency_mode,
            Some((_, v)) => ConcurrencyMode::parse(v).ok_or_else(|| PubSubError::Metadata(format!("concurrencyMode {v:?} is neither single nor parallel")))?,
        };
        let (t, topic, g) = (self.tables.clone(), req.topic.clone(), group.clone());
        self.pool.write(move |c| store::join_group(c, &t, &topic, &g)).await.map_err(failed)?;
        // Ends with the caller's token or with the broker.
        let stop = self.closing.child_token();
        let (outer, inner) = (cancel, stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = outer.cancelled() => inner.cancel(),
                _ = inner.cancelled() => {}
            }
        });
        let consumer = Consumer {
            pool: Arc::clone(&self.pool),
            tables: self.tables.clone(),
            topic: req.topic,
            group,
            handler,
            workers: if mode == ConcurrencyMode::Single { 1 } else { self.cfg.concurrency },
            lease_ms: (!self.cfg.processing_timeout.is_zero()).then(|| Self::ms(self.cfg.processing_timeout)),
            retry_after_ms: Self::ms(self.cfg.redeliver_interval),
            poll: self.cfg.poll_interval,
            published: Arc::clone(&self.published),
            cancel: stop,
        };
        tokio::spawn(consumer.run());
        Ok(())
    }

    async fn ping(&self) -> Result<(), PubSubError> {
        self.pool.write(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(db_err)).await.map_err(failed)
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.closing.cancel();
    }
}

impl Drop for SqliteBroker {
    /// A broker dropped without `close` still stops its sweep and subscriptions, so the
    /// connection thread ends with the last of them.
    fn drop(&mut self) {
        self.closing.cancel();
    }
}

/// Registers `pubsub.sqlite` (alias `pubsub.sqlite3`).
pub fn register(reg: &mut Registry) {
    reg.add_pubsub(&["pubsub.sqlite", "pubsub.sqlite3"], "v1", |name, mut md| {
        Box::pin(async move {
            let cfg = BrokerConfig::from_metadata(&mut md).map_err(|mut e| {
                e.component = name.clone();
                e
            })?;
            warn_unread(&name, &md);
            let broker = SqliteBroker::open(&name, cfg).await.map_err(|e| ComponentError::Init { name: name.clone(), reason: e.to_string() })?;
            Ok(Arc::new(broker) as Arc<dyn PubSub>)
        })
    });
}

#[cfg(test)]
mod tests;
