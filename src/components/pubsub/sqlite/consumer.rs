//! One subscription's consumer task: claims the messages its group may have, hands each to the
//! runtime's handler, and records the handler's [`Outcome`].
//!
//! It wakes when a publish of its own process signals (low latency) and every `pollInterval`
//! otherwise (publishes of other processes, claims that ended, retries that became due). At
//! most `concurrency` messages are in the handler at once (one in `single` mode, so a topic's
//! messages arrive in publish order). Each handler call runs on its own task so the claim loop
//! never waits on the app; all SQLite work runs on the broker's connection thread.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::store::{self, Claimed, Settle, Tables};
use crate::components::pubsub::{Message, MessageHandler, Outcome};
use crate::components::sqlite_pool::SqlitePool;

/// The longest wait between claims while the database keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Everything a consumer task needs.
pub struct Consumer {
    /// The broker's connections.
    pub pool: Arc<SqlitePool>,
    /// Its tables.
    pub tables: Tables,
    /// The topic.
    pub topic: String,
    /// The consumer group (`consumerID`).
    pub group: String,
    /// Where messages go.
    pub handler: Arc<dyn MessageHandler>,
    /// Handler calls at once.
    pub workers: usize,
    /// Claim length (`None`: until settled).
    pub lease_ms: Option<i64>,
    /// Wait after `Retry`.
    pub retry_after_ms: i64,
    /// Period of the poll.
    pub poll: Duration,
    /// Signalled by this process's publishes.
    pub published: Arc<Notify>,
    /// Ends the subscription.
    pub cancel: CancellationToken,
}

impl Consumer {
    /// Runs until `cancel` fires.
    pub async fn run(self) {
        let slots = Arc::new(Semaphore::new(self.workers));
        let me = Arc::new(self);
        tracing::debug!(topic = %me.topic, group = %me.group, "sqlite subscription started");
        // Grows while claims fail (file locked for long, disk full), so a broken database is
        // neither hammered nor logged every poll.
        let mut backoff = me.poll;
        loop {
            // Register for the wake-up before looking, so a publish in between is not missed.
            let woken = me.published.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = me.cancel.cancelled() => break,
                    // A slot frees when a handler call is settled; released at once, taken below.
                    p = Arc::clone(&slots).acquire_owned() => { drop(p); continue; }
                }
            }
            if me.cancel.is_cancelled() {
                break;
            }
            let (pool_me, limit) = (Arc::clone(&me), free);
            let claimed = me
                .pool
                .write(move |c| store::claim(c, &pool_me.tables, &pool_me.topic, &pool_me.group, limit, pool_me.lease_ms))
                .await;
            let claimed = match claimed {
                Ok(c) => {
                    backoff = me.poll;
                    c
                }
                Err(e) => {
                    tracing::warn!(topic = %me.topic, group = %me.group, error = %e, retry_in = ?backoff, "sqlite pubsub: claim failed");
                    tokio::select! {
                        _ = me.cancel.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            if me.cancel.is_cancelled() {
                for c in claimed {
                    me.settle(c.id, Settle::Release).await;
                }
                break;
            }
            let got = claimed.len();
            for c in claimed {
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    // Invariant break (only this loop takes slots, and it claimed at most `free`):
                    // give the message back rather than exceed the limit.
                    me.settle(c.id, Settle::Release).await;
                    continue;
                };
                let task_me = Arc::clone(&me);
                tokio::spawn(async move {
                    task_me.deliver(c).await;
                    drop(permit);
                });
            }
            if got > 0 && got == free {
                continue;
            }
            tokio::select! {
                _ = me.cancel.cancelled() => break,
                _ = &mut woken => {}
                _ = tokio::time::sleep(me.poll) => {}
            }
        }
        tracing::debug!(topic = %me.topic, group = %me.group, "sqlite subscription ended");
    }

    async fn deliver(&self, c: Claimed) {
        let id = c.id;
        let msg = Message {
            id: id.to_string(),
            topic: self.topic.clone(),
            data: c.data.into(),
            content_type: c.content_type,
            metadata: Default::default(),
            delivery_count: c.delivery_count,
        };
        let how = match self.handler.handle(msg).await {
            Outcome::Ack => Settle::Ack,
            Outcome::Retry => Settle::RetryAt(store::now_ms().saturating_add(self.retry_after_ms)),
            Outcome::Park => {
                tracing::warn!(topic = %self.topic, group = %self.group, message = id, deliveries = c.delivery_count, "sqlite pubsub: message parked; it stays stored and is not delivered again");
                Settle::Park
            }
        };
        self.settle(id, how).await;
    }

    async fn settle(&self, id: i64, how: Settle) {
        let (tables, group) = (self.tables.clone(), self.group.clone());
        if let Err(e) = self.pool.write(move |c| store::settle(c, &tables, &group, id, how)).await {
            // The claim then ends by itself and the message is delivered again (at least once).
            tracing::warn!(topic = %self.topic, group = %self.group, message = id, outcome = ?how, error = %e, "sqlite pubsub: cannot record the outcome");
        }
    }
}
