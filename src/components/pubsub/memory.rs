//! `pubsub.in-memory`: a process-local bus, as components-contrib's namesake (an event bus with
//! wildcard topics: a subscription to `orders*` gets `orders/eu`, not `orders` itself).
//!
//! Every subscription to a matching topic gets each message (fan-out; no consumer groups).
//! A subscription handles its messages one at a time in publish order, as contrib's
//! "transactional" bus does; rapr queues up to [`QUEUE`] of them per subscription instead of
//! making the publisher wait for the previous handler call, and a publish waits only when a
//! queue is full.
//!
//! Nothing is kept: the bus has nowhere to put a message a handler did not accept, so
//! `Outcome::Retry` and `Outcome::Park` drop it with an error log, exactly as contrib drops on a
//! handler error. It is therefore exempt from rapr's no-loss guarantee (docs/runtime-semantics.md,
//! pub/sub), and messages published while nobody subscribes are gone.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Feature, Message, MessageHandler, Outcome, PubSub, PubSubError, PublishRequest, SubscribeRequest};
use crate::components::registry::{warn_unread, Registry};

/// Messages waiting per subscription before a publish waits for room.
pub const QUEUE: usize = 1024;
/// How long `close` waits for handler calls still running.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
const FEATURES: &[Feature] = &[Feature::SubscribeWildcards];

/// Registers `pubsub.in-memory`.
pub fn register(reg: &mut Registry) {
    reg.add_pubsub(&["pubsub.in-memory"], "v1", |name, mut md| {
        Box::pin(async move {
            // The runtime sets it on every pub/sub component; a bus has no consumer groups.
            let _ = md.string(&["consumerID"]);
            warn_unread(&name, &md);
            Ok(Arc::new(MemoryBus::new()) as Arc<dyn PubSub>)
        })
    });
}

struct Sub {
    /// The subscribed topic (a trailing `*` matches any longer topic with that prefix).
    topic: String,
    tx: mpsc::Sender<Message>,
}

/// The in-memory bus.
pub struct MemoryBus {
    subs: Arc<DashMap<u64, Sub>>,
    next_sub: AtomicU64,
    next_msg: AtomicU64,
    closed: AtomicBool,
    closing: CancellationToken,
    workers: TaskTracker,
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

/// contrib's event bus matching: the same topic, or a subscription `p*` and a topic that starts
/// with `p` and is longer.
fn matches(subscribed: &str, topic: &str) -> bool {
    if subscribed == topic {
        return true;
    }
    subscribed.strip_suffix('*').is_some_and(|prefix| topic.len() > prefix.len() && topic.starts_with(prefix))
}

impl MemoryBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self {
            subs: Arc::new(DashMap::new()),
            next_sub: AtomicU64::new(1),
            next_msg: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            closing: CancellationToken::new(),
            workers: TaskTracker::new(),
        }
    }
}

#[async_trait]
impl PubSub for MemoryBus {
    fn features(&self) -> &'static [Feature] {
        FEATURES
    }

    async fn publish(&self, req: PublishRequest) -> Result<(), PubSubError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PubSubError::Closed);
        }
        let targets: Vec<(u64, String, mpsc::Sender<Message>)> =
            self.subs.iter().filter(|s| matches(&s.topic, &req.topic)).map(|s| (*s.key(), s.topic.clone(), s.tx.clone())).collect();
        let id = self.next_msg.fetch_add(1, Ordering::Relaxed).to_string();
        for (sub, topic, tx) in targets {
            // As contrib, the message carries the subscription's topic and the publish metadata.
            let msg = Message { id: id.clone(), topic, data: req.data.clone(), content_type: req.content_type.clone(), metadata: req.metadata.clone(), delivery_count: 1 };
            if tx.send(msg).await.is_err() {
                tracing::debug!(subscription = sub, "in-memory subscription ended while publishing; skipped");
            }
        }
        Ok(())
    }

    async fn subscribe(&self, req: SubscribeRequest, handler: Arc<dyn MessageHandler>, cancel: CancellationToken) -> Result<(), PubSubError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PubSubError::Closed);
        }
        let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
        let sub = self.next_sub.fetch_add(1, Ordering::Relaxed);
        self.subs.insert(sub, Sub { topic: req.topic.clone(), tx });
        let subs = self.subs.clone();
        let closing = self.closing.clone();
        self.workers.spawn(async move {
            loop {
                let msg = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => break,
                    _ = closing.cancelled() => break,
                    m = rx.recv() => match m { Some(m) => m, None => break },
                };
                let (id, topic) = (msg.id.clone(), msg.topic.clone());
                let outcome = handler.handle(msg).await;
                if outcome != Outcome::Ack {
                    tracing::error!(topic = %topic, message = %id, ?outcome, "pubsub.in-memory cannot redeliver: message dropped");
                }
            }
            subs.remove(&sub);
        });
        Ok(())
    }

    async fn ping(&self) -> Result<(), PubSubError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PubSubError::Closed);
        }
        Ok(())
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.closing.cancel();
        self.workers.close();
        if tokio::time::timeout(CLOSE_GRACE, self.workers.wait()).await.is_err() {
            tracing::warn!("pubsub.in-memory: handler calls still running after {CLOSE_GRACE:?}; closing anyway");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::pubsub::conformance::{matrix, run, Capabilities, Target};
    use crate::components::pubsub::Metadata;
    use bytes::Bytes;

    struct Record(mpsc::UnboundedSender<Message>, Outcome);

    #[async_trait]
    impl MessageHandler for Record {
        async fn handle(&self, msg: Message) -> Outcome {
            let _ = self.0.send(msg);
            self.1
        }
    }

    fn publish(topic: &str, data: &'static str) -> PublishRequest {
        PublishRequest { topic: topic.into(), data: Bytes::from_static(data.as_bytes()), content_type: None, metadata: Metadata::from([("k".to_string(), "v".to_string())]) }
    }

    #[test]
    fn wildcards_as_contrib() {
        assert!(matches("a/b", "a/b"));
        assert!(matches("a/*", "a/b/c"));
        assert!(matches("a*", "a/b"));
        assert!(!matches("a*", "a"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("b*", "a/b"));
    }

    #[tokio::test]
    async fn fans_out_in_order_and_drops_what_is_not_acknowledged() {
        let bus = MemoryBus::new();
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        bus.subscribe(SubscribeRequest { topic: "t/*".into(), ..Default::default() }, Arc::new(Record(tx1, Outcome::Ack)), cancel.clone()).await.unwrap();
        bus.subscribe(SubscribeRequest { topic: "t/x".into(), ..Default::default() }, Arc::new(Record(tx2, Outcome::Retry)), cancel.child_token()).await.unwrap();
        for d in ["1", "2", "3"] {
            bus.publish(publish("t/x", d)).await.unwrap();
        }
        for want in ["1", "2", "3"] {
            let a = rx1.recv().await.unwrap();
            assert_eq!((a.data.as_ref(), a.topic.as_str(), a.metadata["k"].as_str()), (want.as_bytes(), "t/*", "v"));
            assert_eq!(rx2.recv().await.unwrap().data.as_ref(), want.as_bytes());
        }
        // A Retry answer is not redelivered.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(rx2.try_recv().is_err());
        cancel.cancel();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(bus.subs.is_empty(), "cancelled subscriptions leave the bus");
        bus.publish(publish("t/x", "4")).await.unwrap();
        bus.close().await;
        assert!(matches!(bus.publish(publish("t/x", "5")).await, Err(PubSubError::Closed)));
        assert!(bus.ping().await.is_err());
    }

    #[tokio::test]
    async fn conformance() {
        let target = Target {
            label: "pubsub.in-memory".into(),
            broker: Arc::new(MemoryBus::new()),
            caps: Capabilities::IN_MEMORY,
            still_stored: None,
            redelivery_within: Duration::from_millis(300),
            subscribe_metadata: Metadata::new(),
        };
        let report = run(target).await;
        println!("{}", matrix(std::slice::from_ref(&report)));
        assert!(report.failures().is_empty(), "{:#?}", report.failures());
    }
}
