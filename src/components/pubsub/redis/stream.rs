//! One subscription of `pubsub.redis`: the loop that reads new entries (`XREADGROUP ... >`), the
//! loop that hands out entries left pending (`XPENDING ... IDLE processingTimeout` every
//! `redeliverInterval`, then `XCLAIM`), and settling each handler answer (`XACK` on `Ack` only,
//! nothing on `Retry`, `XCLAIM` to the parked consumer on `Park`).
//!
//! Both loops feed the component's concurrency slots; the read loop waits for a slot per entry
//! in stream order, so `concurrency: 1` keeps a stream's order. An entry this subscription has
//! handed to its handler and not settled is "owned": the reclaim loop skips it, so a slow
//! handler never gets a second copy from this sidecar while it still works on the first, and
//! each reclaim pass first resets their idle time so other sidecars of the group leave them be.
//! Errors (Redis away, the group gone after a restart without persistence) are logged and
//! retried with backoff; cancelling the stop token ends both loops, while handler calls already
//! running finish and settle.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::Value;
use dashmap::DashSet;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::reply::{self, Entry};
use super::Shared;
use crate::components::pubsub::{Message, MessageHandler, Metadata, Outcome, PubSubError, SubscribeRequest};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Attempts at settling one answer before leaving the entry pending (a failed `XACK` means a
/// duplicate later, never a loss).
const SETTLE_ATTEMPTS: u32 = 3;

/// Refreshes the idle time of the entries (ARGV[3..]) still pending for consumer ARGV[2] of group
/// ARGV[1] on stream KEYS[1]: `XCLAIM ... JUSTID` to the same consumer counts no delivery.
static REFRESH: std::sync::LazyLock<::redis::Script> = std::sync::LazyLock::new(|| {
    ::redis::Script::new(
        r"
local n = 0
for i = 3, #ARGV do
  local row = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #row > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
",
    )
});

/// One subscription's loops and state.
pub(super) struct StreamLoop {
    shared: Arc<Shared>,
    stream: String,
    /// The consumer group and consumer name: the subscription's `consumerID`, else the component's.
    group: String,
    /// Concurrency slots: the component's, or one of its own for `concurrencyMode: single`.
    slots: Arc<Semaphore>,
    reader: ConnectionManager,
    handler: Arc<dyn MessageHandler>,
    stop: CancellationToken,
    owned: Arc<DashSet<String>>,
}

/// Removes an entry from the owned set however its handler task ends (a panic included).
struct Owned {
    set: Arc<DashSet<String>>,
    id: String,
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.set.remove(&self.id);
    }
}

/// Doubling delay between failed attempts, reset after a success.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(BACKOFF_MIN)
    }

    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        d
    }
}

fn is_nogroup(e: &PubSubError) -> bool {
    e.to_string().contains("NOGROUP")
}

impl StreamLoop {
    /// A subscription of `req.topic` in consumer group `group`.
    pub(super) fn new(shared: Arc<Shared>, req: SubscribeRequest, group: String, reader: ConnectionManager, handler: Arc<dyn MessageHandler>, stop: CancellationToken) -> Self {
        let slots = match super::sub_md(&req, "concurrencyMode") {
            Some(m) if m.eq_ignore_ascii_case("single") => Arc::new(Semaphore::new(1)),
            _ => shared.slots.clone(),
        };
        Self { shared, stream: req.topic, group, slots, reader, handler, stop, owned: Arc::new(DashSet::new()) }
    }

    fn group(&self) -> &str {
        &self.group
    }

    /// `XGROUP CREATE <stream> <group> 0 MKSTREAM`: a new group starts at the stream's first
    /// entry, as contrib's; an existing group is fine.
    pub(super) async fn create_group(&self) -> Result<(), PubSubError> {
        let mut cmd = ::redis::cmd("XGROUP");
        cmd.arg("CREATE").arg(&self.stream).arg(self.group()).arg("0").arg("MKSTREAM");
        match self.shared.call::<Value>(&cmd).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sleeps `d` unless stopped first; false when stopped.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// Reads new entries until stopped.
    pub(super) async fn poll_loop(self: Arc<Self>) {
        let cfg = &self.shared.cfg;
        let block = cfg.block();
        let deadline = block + self.shared.timeout;
        let mut backoff = Backoff::new();
        let mut cmd = ::redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(self.group()).arg(self.group()).arg("COUNT").arg(cfg.queue_depth);
        cmd.arg("BLOCK").arg(block.as_millis() as u64).arg("STREAMS").arg(&self.stream).arg(">");
        while !self.stop.is_cancelled() {
            let mut conn = self.reader.clone();
            let read = tokio::select! {
                _ = self.stop.cancelled() => return,
                r = tokio::time::timeout(deadline, cmd.query_async::<Value>(&mut conn)) => r,
            };
            let batch = match read {
                Err(_) => Err(PubSubError::Timeout(deadline)),
                Ok(r) => r.map_err(|e| self.shared.failure(e)),
            }
            .and_then(|v| reply::read_group(&v).map_err(PubSubError::Failed));
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    if is_nogroup(&e) {
                        tracing::warn!(stream = %self.stream, group = %self.group(), "redis streams: the consumer group is gone (data loss on the server, or the stream was deleted); recreating it");
                        if let Err(e) = self.create_group().await {
                            tracing::warn!(stream = %self.stream, error = %e, "redis streams: recreating the consumer group failed");
                        }
                    } else {
                        tracing::warn!(stream = %self.stream, error = %e, "redis streams: error reading from stream; retrying");
                    }
                    if !self.pause(backoff.next()).await {
                        return;
                    }
                    continue;
                }
            };
            backoff = Backoff::new();
            let ids: Vec<String> = batch.entries.iter().map(|e| e.id.clone()).collect();
            self.own(&ids);
            for entry in batch.entries {
                if !self.dispatch(entry, 1).await {
                    // Stopped: the rest stay pending for the reclaim loop of any instance.
                    return;
                }
            }
        }
    }

    /// Hands out entries left pending until stopped.
    pub(super) async fn reclaim_loop(self: Arc<Self>) {
        if !self.shared.cfg.redelivers() {
            return;
        }
        let mut tick = tokio::time::interval(self.shared.cfg.redeliver_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.keep_owned().await {
                tracing::debug!(stream = %self.stream, error = %e, "redis streams: could not refresh the messages being handled");
            }
            if let Err(e) = self.reclaim_once().await {
                if !is_nogroup(&e) {
                    tracing::warn!(stream = %self.stream, error = %e, "redis streams: error reclaiming pending messages; retrying at the next interval");
                }
            }
        }
    }

    /// Resets the idle time of the entries this subscription is handling, so a handler slower
    /// than `processingTimeout` does not get its message reclaimed by another sidecar of the
    /// group while it still works on it. One script per batch, so an entry settled meanwhile
    /// (acknowledged, or parked: now another consumer's) is left alone.
    async fn keep_owned(&self) -> Result<(), PubSubError> {
        let ids: Vec<String> = self.owned.iter().map(|id| id.key().clone()).collect();
        for chunk in ids.chunks(self.shared.cfg.queue_depth.max(1)) {
            let mut inv = REFRESH.prepare_invoke();
            inv.key(&self.stream).arg(self.group()).arg(self.group());
            for id in chunk {
                inv.arg(id);
            }
            let mut conn = self.shared.conn.clone();
            match tokio::time::timeout(self.shared.timeout, inv.invoke_async::<i64>(&mut conn)).await {
                Err(_) => return Err(PubSubError::Timeout(self.shared.timeout)),
                Ok(r) => r.map_err(|e| self.shared.failure(e))?,
            };
        }
        Ok(())
    }

    /// One pass over this consumer's pending entries idle for `processingTimeout`, a page of
    /// `queueDepth` at a time.
    pub(super) async fn reclaim_once(&self) -> Result<(), PubSubError> {
        let cfg = &self.shared.cfg;
        let idle_ms = cfg.processing_timeout.as_millis() as u64;
        let mut start = "-".to_string();
        while !self.stop.is_cancelled() {
            let mut cmd = ::redis::cmd("XPENDING");
            cmd.arg(&self.stream).arg(self.group()).arg("IDLE").arg(idle_ms).arg(&start).arg("+").arg(cfg.queue_depth).arg(self.group());
            let rows = reply::pending(&self.shared.call::<Value>(&cmd).await?).map_err(PubSubError::Failed)?;
            let Some(last) = rows.last().map(|r| r.id.clone()) else { return Ok(()) };
            let full_page = rows.len() >= cfg.queue_depth;
            let deliveries: HashMap<String, u32> = rows.into_iter().filter(|r| !self.owned.contains(&r.id)).map(|r| (r.id, r.deliveries)).collect();
            if !deliveries.is_empty() {
                let mut claim = ::redis::cmd("XCLAIM");
                claim.arg(&self.stream).arg(self.group()).arg(self.group()).arg(idle_ms);
                let mut ids: Vec<&String> = deliveries.keys().collect();
                ids.sort_by_key(|id| id_key(id));
                for id in &ids {
                    claim.arg(id.as_str());
                }
                // Another sidecar may have claimed some first: XCLAIM's idle check leaves those out.
                let batch = reply::claim(&self.shared.call::<Value>(&claim).await?).map_err(PubSubError::Failed)?;
                for id in &batch.gone {
                    // Trimmed away (maxLenApprox, streamTTL): nothing is left to deliver.
                    tracing::warn!(stream = %self.stream, id = %id, "redis streams: a pending message was trimmed from the stream; removing it from the pending list");
                    self.settle(id, Outcome::Ack).await;
                }
                let ids: Vec<String> = batch.entries.iter().map(|e| e.id.clone()).collect();
                self.own(&ids);
                for entry in batch.entries {
                    let count = deliveries.get(&entry.id).copied().unwrap_or(0).saturating_add(1);
                    if !self.dispatch(entry, count).await {
                        return Ok(());
                    }
                }
            }
            if !full_page {
                return Ok(());
            }
            start = format!("({last}");
        }
        Ok(())
    }

    fn own(&self, ids: &[String]) {
        for id in ids {
            self.owned.insert(id.clone());
        }
    }

    /// Waits for a concurrency slot and runs the handler on `entry` in a task of its own; false
    /// when stopped before a slot was free.
    async fn dispatch(&self, entry: Entry, delivery_count: u32) -> bool {
        let permit = tokio::select! {
            _ = self.stop.cancelled() => return false,
            p = self.slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return false,
            },
        };
        let guard = Owned { set: self.owned.clone(), id: entry.id.clone() };
        let msg = self.message(entry, delivery_count);
        let handler = self.handler.clone();
        let settler = Settler { shared: self.shared.clone(), stream: self.stream.clone(), group: self.group.clone() };
        self.shared.tasks.spawn(async move {
            let _permit = permit;
            let _guard = guard;
            let id = msg.id.clone();
            let outcome = handler.handle(msg).await;
            settler.settle(&id, outcome).await;
        });
        true
    }

    fn message(&self, entry: Entry, delivery_count: u32) -> Message {
        let metadata: Metadata = match entry.metadata {
            None => Metadata::new(),
            Some(raw) => serde_json::from_slice(&raw).unwrap_or_else(|e| {
                tracing::warn!(stream = %self.stream, id = %entry.id, error = %e, "redis streams: could not read the message's metadata");
                Metadata::new()
            }),
        };
        Message { id: entry.id, topic: self.stream.clone(), data: entry.data, content_type: None, metadata, delivery_count }
    }

    async fn settle(&self, id: &str, outcome: Outcome) {
        Settler { shared: self.shared.clone(), stream: self.stream.clone(), group: self.group.clone() }.settle(id, outcome).await;
    }
}

/// Acts on a handler's answer for one entry.
struct Settler {
    shared: Arc<Shared>,
    stream: String,
    group: String,
}

impl Settler {
    async fn settle(&self, id: &str, outcome: Outcome) {
        let parked = format!("{}-parked", self.group);
        let cmd = match outcome {
            Outcome::Retry => return,
            Outcome::Ack => {
                let mut c = ::redis::cmd("XACK");
                c.arg(&self.stream).arg(&self.group).arg(id);
                c
            }
            Outcome::Park => {
                tracing::error!(stream = %self.stream, id = %id, consumer = %parked, "redis streams: message parked: it stays pending under the parked consumer and is not delivered again");
                let mut c = ::redis::cmd("XCLAIM");
                c.arg(&self.stream).arg(&self.group).arg(&parked).arg(0).arg(id).arg("JUSTID");
                c
            }
        };
        let mut backoff = Backoff::new();
        for attempt in 1..=SETTLE_ATTEMPTS {
            match self.shared.call::<Value>(&cmd).await {
                Ok(_) => return,
                Err(e) if attempt == SETTLE_ATTEMPTS => {
                    tracing::warn!(stream = %self.stream, id = %id, ?outcome, error = %e, "redis streams: could not settle the message; it stays pending and is delivered again")
                }
                Err(_) => tokio::time::sleep(backoff.next()).await,
            }
        }
    }
}

/// Sort key of an entry id `<ms>-<seq>` (numeric, so `10-0` follows `9-0`).
fn id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}
