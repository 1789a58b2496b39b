//! One subscription's consumer task: claims the messages its group may have, hands each to the
//! runtime's handler, and records the handler's [`Outcome`].
//!
//! It looks for messages when a publish of its own process signals (low latency), every
//! `pollInterval` otherwise (publishes of other processes, claims that ended, retries that became
//! due), and again at once while a claim came back full. At most `workers` messages are in the
//! handler at once (one in `single` mode, so a topic's messages arrive in publish order). Each
//! handler call runs on its own task so the loop never waits on the app; the call sends its
//! outcome back to the loop, which records every outcome gathered so far and claims the freed
//! slots in one transaction (`claim::settle_and_claim`): while that write runs the next outcomes
//! gather, so the batch grows with the load. A slot frees only once its outcome is committed.
//! All SQLite work runs on the broker's connection thread.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::claim;
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
    /// Runs until `cancel` fires and every message in the handler has been settled.
    pub async fn run(self) {
        let me = Arc::new(self);
        tracing::debug!(topic = %me.topic, group = %me.group, "sqlite subscription started");
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(i64, Settle)>();
        // Outcomes received, not yet committed; handed out and not yet committed (these included).
        let mut done: Vec<(i64, Settle)> = Vec::new();
        let mut in_flight = 0usize;
        // Whether there may be something to claim (woken, polled, or the last claim was full).
        let mut look = true;
        // Grows while writes fail (file locked for long, disk full), so a broken database is
        // neither hammered nor logged every poll.
        let mut backoff = me.poll;
        let published = Arc::clone(&me.published);
        // Registered once and renewed when it fires, so a publish while a claim runs is not missed.
        let mut woken = Box::pin(published.notified());
        woken.as_mut().enable();
        let poll = tokio::time::sleep(me.poll);
        tokio::pin!(poll);
        loop {
            while let Ok(d) = done_rx.try_recv() {
                done.push(d);
            }
            let stopping = me.cancel.is_cancelled();
            let free = me.workers.saturating_sub(in_flight - done.len());
            let limit = if look && !stopping { free } else { 0 };
            if done.is_empty() && limit == 0 {
                if stopping && in_flight == 0 {
                    break;
                }
                tokio::select! {
                    // Never `None`: this task holds a sender.
                    d = done_rx.recv() => done.extend(d),
                    _ = me.cancel.cancelled(), if !stopping => {}
                    _ = &mut woken, if !stopping => {
                        look = true;
                        woken.set(published.notified());
                        woken.as_mut().enable();
                    }
                    _ = &mut poll, if !stopping => {
                        look = true;
                        poll.as_mut().reset(tokio::time::Instant::now() + me.poll);
                    }
                }
                continue;
            }
            let outcomes = std::mem::take(&mut done);
            if limit > 0 {
                look = false;
                poll.as_mut().reset(tokio::time::Instant::now() + me.poll);
            }
            let (pool_me, batch) = (Arc::clone(&me), outcomes.clone());
            let result = me
                .pool
                .write(move |c| claim::settle_and_claim(c, &pool_me.tables, &pool_me.topic, &pool_me.group, &batch, limit, pool_me.lease_ms))
                .await;
            // Committed or lost, these outcomes are finished with: a lost one leaves its claim to
            // expire and the message to come again (at least once).
            in_flight -= outcomes.len();
            match result {
                Ok(claimed) => {
                    backoff = me.poll;
                    look |= limit > 0 && claimed.len() == limit;
                    in_flight += claimed.len();
                    for c in claimed {
                        if me.cancel.is_cancelled() {
                            // Ended between claim and hand-out: given back with the next write.
                            done.push((c.id, Settle::Release));
                            continue;
                        }
                        let (task_me, tx) = (Arc::clone(&me), done_tx.clone());
                        tokio::spawn(async move {
                            let id = c.id;
                            let how = task_me.deliver(c).await;
                            let _ = tx.send((id, how));
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %me.topic, group = %me.group, error = %e, outcomes = outcomes.len(), retry_in = ?backoff, "sqlite pubsub: claim or settle failed; unrecorded outcomes come back when their claims expire");
                    tokio::select! {
                        _ = me.cancel.cancelled() => {}
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    look = true;
                }
            }
        }
        tracing::debug!(topic = %me.topic, group = %me.group, "sqlite subscription ended");
    }

    /// Hands `c` to the app and turns its answer into what to record.
    async fn deliver(&self, c: Claimed) -> Settle {
        let id = c.id;
        let msg = Message {
            id: id.to_string(),
            topic: self.topic.clone(),
            data: c.data.into(),
            content_type: c.content_type,
            metadata: Default::default(),
            delivery_count: c.delivery_count,
        };
        match self.handler.handle(msg).await {
            Outcome::Ack => Settle::Ack,
            Outcome::Retry => Settle::RetryAt(store::now_ms().saturating_add(self.retry_after_ms)),
            Outcome::Park => {
                tracing::warn!(topic = %self.topic, group = %self.group, message = id, deliveries = c.delivery_count, "sqlite pubsub: message parked; it stays stored and is not delivered again");
                Settle::Park
            }
        }
    }
}
