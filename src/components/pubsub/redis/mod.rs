//! `pubsub.redis`: Dapr's Redis Streams broker, data-compatible with components-contrib's (a
//! topic is a stream; an entry carries the payload in field `data` and the publish request's
//! metadata as JSON in field `metadata`; the consumer group and the consumer are both named
//! `consumerID`, so every sidecar of one app id shares the work and other app ids each get
//! every message).
//!
//! Delivery differs from Dapr's on purpose (issue 11 B.6, docs/runtime-semantics.md): an entry
//! is `XACK`ed only when the runtime answers [`Outcome::Ack`]. `Retry` leaves it pending, and
//! the reclaim loop hands it out again once it has been idle for `processingTimeout`;
//! `Park` moves it to the consumer `<consumerID>-parked`, which the reclaim loop never reads: it
//! stays in the stream and the pending list, counted, until an operator deals with it.
//!
//! Connections: one `ConnectionManager` (multiplexed, reconnects by itself) for publishing,
//! acknowledging and reclaiming, and one more per subscription for its blocking `XREADGROUP`,
//! which would otherwise hold up every other command on the shared connection. Init pings and
//! fails while Redis is unreachable (the host retries with backoff); a subscription's loops
//! retry with backoff while Redis is away and resume when it returns.
//!
//! Needs Redis 6.2 or later (`XPENDING ... IDLE`, exclusive ranges); contrib also runs on 5.x.

mod metadata;
mod reply;
mod stream;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, RedisError};
use async_trait::async_trait;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use metadata::StreamsConfig;
use stream::StreamLoop;

use super::{Feature, MessageHandler, PubSub, PubSubError, PublishRequest, SubscribeRequest};
use crate::components::registry::{warn_unread, ComponentError, Registry};
use crate::components::state::redis::RedisConfig;

/// How long `close` waits for handler calls still running.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Registers the broker's Dapr type name with the registry.
pub fn register(reg: &mut Registry) {
    reg.add_pubsub(&["pubsub.redis"], "v1", |name, mut md| {
        Box::pin(async move {
            let cfg = StreamsConfig::from_metadata(&mut md).map_err(|mut e| {
                e.component = name.clone();
                e
            })?;
            warn_unread(&name, &md);
            let broker = RedisStreams::connect(cfg).await.map_err(|e| ComponentError::Init { name: name.clone(), reason: e.to_string() })?;
            Ok(Arc::new(broker) as Arc<dyn PubSub>)
        })
    });
}

/// Opens a reconnecting connection to the configured server; `response` bounds one answer.
async fn open(cfg: &RedisConfig, response: Option<Duration>) -> Result<ConnectionManager, String> {
    let mut settings = RedisConnectionInfo::default().set_db(cfg.db);
    if let Some(u) = &cfg.username {
        settings = settings.set_username(u);
    }
    if let Some(p) = &cfg.password {
        settings = settings.set_password(p);
    }
    let info = ConnectionAddr::Tcp(cfg.host.clone(), cfg.port).into_connection_info().map_err(|e| e.to_string())?.set_redis_settings(settings);
    let client = ::redis::Client::open(info).map_err(|e| e.to_string())?;
    let (min_delay, max_delay) = cfg.retry_delays();
    let manager = ConnectionManagerConfig::new()
        .set_number_of_retries(cfg.max_retries)
        .set_min_delay(min_delay)
        .set_max_delay(max_delay)
        .set_connection_timeout(Some(cfg.dial_timeout))
        .set_response_timeout(response);
    let within = cfg.call_timeout();
    tokio::time::timeout(within, ConnectionManager::new_with_config(client, manager))
        .await
        .map_err(|_| format!("no connection within {within:?}"))?
        .map_err(|e| e.to_string())
}

/// What a subscription shares with the broker: settings, the shared connection, the call
/// deadline, the concurrency slots and the task tracker `close` waits on.
pub(crate) struct Shared {
    cfg: StreamsConfig,
    conn: ConnectionManager,
    timeout: Duration,
    address: String,
    slots: Arc<Semaphore>,
    tasks: TaskTracker,
}

impl Shared {
    /// Runs one command on the shared connection under the call deadline.
    async fn call<T: ::redis::FromRedisValue>(&self, cmd: &::redis::Cmd) -> Result<T, PubSubError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Err(_) => Err(PubSubError::Timeout(self.timeout)),
            Ok(r) => r.map_err(|e| self.failure(e)),
        }
    }

    fn failure(&self, e: RedisError) -> PubSubError {
        if e.is_timeout() {
            PubSubError::Timeout(self.timeout)
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            PubSubError::Unavailable(format!("redis streams at {}: {e}", self.address))
        } else {
            PubSubError::Failed(format!("redis streams at {}: {e}", self.address))
        }
    }
}

/// The Redis Streams broker.
pub struct RedisStreams {
    shared: Arc<Shared>,
    closing: CancellationToken,
}

impl RedisStreams {
    /// Connects and checks the server answers `PING`.
    pub async fn connect(cfg: StreamsConfig) -> Result<Self, PubSubError> {
        let address = cfg.conn.address();
        let unreachable = |e: String| PubSubError::Unavailable(format!("redis streams: error connecting to redis at {address}: {e}"));
        let response = cfg.conn.read_timeout.max(cfg.conn.write_timeout);
        let conn = open(&cfg.conn, response).await.map_err(unreachable)?;
        if cfg.max_len_approx > 0 && cfg.stream_ttl.is_some() {
            tracing::warn!("redis streams: maxLenApprox and streamTTL cannot be used together; only maxLenApprox trims the streams");
        }
        if !cfg.redelivers() {
            tracing::warn!(
                "redis streams: processingTimeout or redeliverInterval is 0: messages a handler did not acknowledge stay pending and are never delivered again"
            );
        }
        let shared = Shared {
            slots: Arc::new(Semaphore::new(cfg.concurrency)),
            timeout: cfg.conn.call_timeout(),
            cfg,
            conn,
            address: address.clone(),
            tasks: TaskTracker::new(),
        };
        let broker = Self { shared: Arc::new(shared), closing: CancellationToken::new() };
        broker.ping().await.map_err(|e| unreachable(e.to_string()))?;
        // A user whose ACL forbids INFO is not refused: the version is then not checked.
        let info: String = broker.shared.call(::redis::cmd("INFO").arg("server")).await.unwrap_or_default();
        if let Some(v) = server_version(&info).filter(|v| *v < (6, 2)) {
            return Err(PubSubError::Failed(format!("redis streams: the server at {address} runs Redis {}.{}; pubsub.redis needs 6.2 or later", v.0, v.1)));
        }
        Ok(broker)
    }
}

/// A subscription metadata value (keys compared as Dapr's, case-insensitively), if set.
fn sub_md(req: &SubscribeRequest, key: &str) -> Option<String> {
    req.metadata.iter().find(|(k, v)| k.eq_ignore_ascii_case(key) && !v.trim().is_empty()).map(|(_, v)| v.trim().to_string())
}

/// (major, minor) of `redis_version` in an `INFO server` answer; `None` when absent (a
/// server that hides it is given the benefit of the doubt).
fn server_version(info: &str) -> Option<(u32, u32)> {
    let v = info.lines().find_map(|l| l.trim().strip_prefix("redis_version:"))?;
    let mut parts = v.split('.').map(|p| p.trim().parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

#[async_trait]
impl PubSub for RedisStreams {
    fn features(&self) -> &'static [Feature] {
        // As contrib's: no native TTL, so the runtime writes `expiration` into the envelope.
        &[]
    }

    fn max_delivery_count(&self) -> Option<u32> {
        Some(self.shared.cfg.max_delivery_count)
    }

    async fn publish(&self, req: PublishRequest) -> Result<(), PubSubError> {
        if self.closing.is_cancelled() {
            return Err(PubSubError::Closed);
        }
        let metadata = serde_json::to_vec(&req.metadata).map_err(|e| PubSubError::Metadata(e.to_string()))?;
        let mut cmd = ::redis::cmd("XADD");
        cmd.arg(&req.topic);
        if let Some((kind, threshold)) = self.shared.cfg.trim(now_ms()) {
            cmd.arg(kind).arg("~").arg(threshold);
        }
        cmd.arg("*").arg("data").arg(req.data.as_ref()).arg("metadata").arg(metadata);
        let _id: String = self.shared.call(&cmd).await.map_err(|e| match e {
            PubSubError::Failed(m) => PubSubError::Failed(format!("redis streams: error from publish: {m}")),
            other => other,
        })?;
        Ok(())
    }

    async fn subscribe(&self, req: SubscribeRequest, handler: Arc<dyn MessageHandler>, cancel: CancellationToken) -> Result<(), PubSubError> {
        if self.closing.is_cancelled() {
            return Err(PubSubError::Closed);
        }
        let cfg = &self.shared.cfg;
        let group = sub_md(&req, "consumerID")
            .or_else(|| cfg.consumer_id.clone())
            .ok_or_else(|| PubSubError::Metadata("consumerID is required to subscribe (the runtime sets it to the app id)".into()))?;
        // The blocking read's answer may take the whole block time on top of the usual deadline.
        let reader = open(&cfg.conn, Some(cfg.block() + self.shared.timeout))
            .await
            .map_err(|e| PubSubError::Unavailable(format!("redis streams: error connecting to redis at {}: {e}", self.shared.address)))?;
        // One token for the loops: the subscription's cancel or the broker closing.
        let stop = self.closing.child_token();
        let (outer, inner) = (cancel.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = outer.cancelled() => inner.cancel(),
                _ = inner.cancelled() => {}
            }
        });
        let sub = Arc::new(StreamLoop::new(self.shared.clone(), req, group, reader, handler, stop.clone()));
        if let Err(e) = sub.create_group().await {
            stop.cancel();
            return Err(e);
        }
        let tasks = &self.shared.tasks;
        tasks.spawn(sub.clone().poll_loop());
        tasks.spawn(sub.reclaim_loop());
        Ok(())
    }

    async fn ping(&self) -> Result<(), PubSubError> {
        let pong: String = self.shared.call(&::redis::cmd("PING")).await?;
        if pong != "PONG" {
            return Err(PubSubError::Failed(format!("redis streams at {}: unexpected PING answer {pong:?}", self.shared.address)));
        }
        Ok(())
    }

    async fn close(&self) {
        self.closing.cancel();
        let tasks = &self.shared.tasks;
        tasks.close();
        if tokio::time::timeout(CLOSE_GRACE, tasks.wait()).await.is_err() {
            tracing::warn!(running = tasks.len(), "redis streams: handler calls still running at close; their messages stay pending");
        }
    }
}

#[cfg(test)]
mod tests;
