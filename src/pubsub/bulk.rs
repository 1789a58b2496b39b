//! `Batcher`: `bulkSubscribe` delivery. The broker hands messages one by one (several at once
//! with its concurrency); a subscription with `bulkSubscribe.enabled` gathers those that reach
//! the app into batches per route, sent when `maxMessagesCount` are waiting or
//! `maxAwaitDurationMs` after the first one (daprd's defaults 100 and 1000 ms), and answers each
//! waiting message with its entry's status. Each message then settles on its own (`outcome.rs`),
//! so a bulk `DROP` is acknowledged only once its dead-letter publish worked, like any drop.
//!
//! One task per subscription instance owns the pending batches; it ends when the handler that
//! feeds it is dropped (the subscription ended). Each batch sent is counted as daprd counts bulk
//! ingress (`dapr_component_pubsub_ingress_bulk_*`: the call, its latency, its entries by status).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::app_sink::{AppBatch, AppEvent, AppSink, BatchEntry};
use super::outcome::AppAnswer;
use super::BulkSubscribe;
use crate::runtime::metrics::Metrics;

/// daprd's default batch size.
pub const DEFAULT_MAX_MESSAGES: usize = 100;
/// daprd's default wait for a batch to fill.
pub const DEFAULT_MAX_AWAIT: Duration = Duration::from_millis(1000);

type Waiting = (AppEvent, oneshot::Sender<AppAnswer>);

/// Front door of one subscription's batching task.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Waiting>,
}

/// The batch limits of a `bulkSubscribe` (zero or negative values take daprd's defaults).
pub fn limits(b: &BulkSubscribe) -> (usize, Duration) {
    let max = if b.max_messages_count > 0 { b.max_messages_count as usize } else { DEFAULT_MAX_MESSAGES };
    let wait = if b.max_await_duration_ms > 0 { Duration::from_millis(b.max_await_duration_ms as u64) } else { DEFAULT_MAX_AWAIT };
    (max, wait)
}

impl Batcher {
    /// Starts the batching task over `sink`, counting batches in `metrics`.
    pub fn start(sink: Arc<dyn AppSink>, bulk: &BulkSubscribe, metrics: Option<Metrics>) -> Self {
        let (max, wait) = limits(bulk);
        let (tx, rx) = mpsc::channel(max.max(1) * 2);
        tokio::spawn(run(sink, rx, max, wait, metrics));
        Self { tx }
    }

    /// Adds `ev` to the next batch of its route and waits for its entry's answer (`RETRY` if the
    /// batching task is gone).
    pub async fn submit(&self, ev: AppEvent) -> AppAnswer {
        let (tx, rx) = oneshot::channel();
        if self.tx.send((ev, tx)).await.is_err() {
            return AppAnswer::Retry;
        }
        rx.await.unwrap_or(AppAnswer::Retry)
    }
}

/// Pending entries of one route and when their batch is due.
struct Pending {
    due: Instant,
    entries: Vec<Waiting>,
}

async fn run(sink: Arc<dyn AppSink>, mut rx: mpsc::Receiver<Waiting>, max: usize, wait: Duration, metrics: Option<Metrics>) {
    let mut pending: HashMap<String, Pending> = HashMap::new();
    loop {
        let next_due = pending.values().map(|p| p.due).min();
        let got = match next_due {
            Some(due) => tokio::select! {
                m = rx.recv() => Some(m),
                _ = tokio::time::sleep_until(due) => None,
            },
            None => Some(rx.recv().await),
        };
        match got {
            Some(Some(w)) => {
                let path = w.0.path.clone();
                let p = pending.entry(path.clone()).or_insert_with(|| Pending { due: Instant::now() + wait, entries: Vec::new() });
                p.entries.push(w);
                if p.entries.len() >= max {
                    if let Some(p) = pending.remove(&path) {
                        send(&sink, p.entries, metrics.as_ref()).await;
                    }
                }
            }
            // Every handler is gone: answer what waits, then end.
            Some(None) => {
                for (_, p) in pending.drain() {
                    send(&sink, p.entries, metrics.as_ref()).await;
                }
                return;
            }
            None => {
                let now = Instant::now();
                let due: Vec<String> = pending.iter().filter(|(_, p)| p.due <= now).map(|(k, _)| k.clone()).collect();
                for k in due {
                    if let Some(p) = pending.remove(&k) {
                        send(&sink, p.entries, metrics.as_ref()).await;
                    }
                }
            }
        }
    }
}

/// Sends one batch and answers each of its entries.
async fn send(sink: &Arc<dyn AppSink>, entries: Vec<Waiting>, metrics: Option<&Metrics>) {
    let Some((first, _)) = entries.first() else { return };
    let mut batch = AppBatch { pubsub: first.pubsub.clone(), topic: first.topic.clone(), path: first.path.clone(), entries: Vec::with_capacity(entries.len()) };
    let mut replies = Vec::with_capacity(entries.len());
    for (ev, reply) in entries {
        batch.entries.push(BatchEntry { entry_id: uuid::Uuid::new_v4().to_string(), event: ev });
        replies.push(reply);
    }
    let started = std::time::Instant::now();
    let answers = sink.deliver_bulk(&batch).await;
    let mut statuses = [("SUCCESS", 0u64), ("RETRY", 0), ("DROP", 0)];
    for (i, reply) in replies.into_iter().enumerate() {
        let answer = answers.get(i).copied().unwrap_or(AppAnswer::Retry);
        let at = match answer {
            AppAnswer::Success => 0,
            AppAnswer::Retry => 1,
            AppAnswer::Drop | AppAnswer::NotFound | AppAnswer::Unimplemented => 2,
        };
        statuses[at].1 += 1;
        let _ = reply.send(answer);
    }
    if let Some(m) = metrics {
        m.pubsub_ingress_bulk(&batch.pubsub, &batch.topic, Some(started), statuses);
    }
}

#[cfg(test)]
mod tests {
    // reason: test-only; the sink records batches from the batcher's task, a lock keeps it simple.
    #![allow(clippy::disallowed_types)]

    use super::*;
    use crate::components::pubsub::Message;
    use crate::pubsub::cloudevents::Event;
    use std::sync::Mutex; // reason: test-only recorder shared with the batcher task (see the allow above).

    #[derive(Default)]
    struct Recorder {
        batches: Mutex<Vec<Vec<String>>>,
    }

    #[async_trait::async_trait]
    impl AppSink for Recorder {
        async fn deliver(&self, _ev: &AppEvent) -> AppAnswer {
            AppAnswer::Success
        }
        async fn deliver_bulk(&self, batch: &AppBatch) -> Vec<AppAnswer> {
            self.batches.lock().unwrap().push(batch.entries.iter().map(|e| e.event.id().to_string()).collect());
            // Odd ids are dropped, and the app leaves the last entry unanswered.
            let mut out: Vec<AppAnswer> = batch.entries.iter().map(|e| if e.event.id().ends_with(['1', '3', '5', '7', '9']) { AppAnswer::Drop } else { AppAnswer::Success }).collect();
            out.pop();
            out
        }
    }

    fn ev(id: &str, path: &str) -> AppEvent {
        let mut e = Event::new();
        e.insert("id".into(), id.into());
        AppEvent { pubsub: "ps".into(), topic: "t".into(), path: path.into(), event: Arc::new(e), message: Arc::new(Message::default()), raw: false }
    }

    #[test]
    fn limits_default_as_daprd() {
        assert_eq!(limits(&BulkSubscribe::default()), (100, Duration::from_millis(1000)));
        assert_eq!(limits(&BulkSubscribe { enabled: true, max_messages_count: 3, max_await_duration_ms: 20 }), (3, Duration::from_millis(20)));
    }

    #[tokio::test]
    async fn full_batches_go_at_once_partial_ones_after_the_wait_per_route_and_answers_map_back() {
        let rec = Arc::new(Recorder::default());
        let b = Batcher::start(rec.clone(), &BulkSubscribe { enabled: true, max_messages_count: 3, max_await_duration_ms: 100 }, None);
        let started = std::time::Instant::now();
        let calls: Vec<_> = [("e1", "/a"), ("e2", "/a"), ("e3", "/a"), ("e4", "/b")]
            .into_iter()
            .map(|(id, p)| {
                let b = b.clone();
                let e = ev(id, p);
                tokio::spawn(async move { b.submit(e).await })
            })
            .collect();
        let mut answers = Vec::new();
        for c in calls {
            answers.push(c.await.expect("submit"));
        }
        let mut batches = rec.batches.lock().unwrap().clone();
        batches.iter_mut().for_each(|b| b.sort());
        batches.sort();
        assert_eq!(batches, vec![vec!["e1".to_string(), "e2".into(), "e3".into()], vec!["e4".to_string()]]);
        assert!(started.elapsed() >= Duration::from_millis(100), "the partial batch waited");
        // The last entry of each batch was not answered: RETRY.
        let by_id: HashMap<&str, AppAnswer> = ["e1", "e2", "e3", "e4"].into_iter().zip(answers).collect();
        assert_eq!(by_id["e4"], AppAnswer::Retry);
        assert_eq!(by_id.values().filter(|a| **a == AppAnswer::Retry).count(), 2);
        for (id, a) in &by_id {
            let want = if id.ends_with(['1', '3']) { AppAnswer::Drop } else { AppAnswer::Success };
            assert!(*a == AppAnswer::Retry || *a == want, "{id}: {a:?}");
        }
    }
}
