//! `EventHandler` unit tests: every path of one message, against a scripted app sink and a
//! broker double that records dead-letter publishes (the real brokers run in tests/it).

// reason: test-only doubles shared between the test and the handler's tasks; a lock keeps them simple.
#![allow(clippy::disallowed_types)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use ractor::{Actor, ActorRef};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::pubsub::app_sink::{AppBatch, AppEvent, AppSink};
use crate::pubsub::handler::{DeliveryShared, EventHandler};
use crate::pubsub::manager::{SubscriptionManager, SubscriptionManagerArgs, SubscriptionManagerMsg};
use crate::pubsub::outcome::AppAnswer;
use crate::pubsub::routing::Routes;
use crate::pubsub::{Rule, Subscription, SubscriptionKind, SubscriptionTable};
use crate::components::directory::DirectoryHandle;
use crate::components::pubsub::{Feature, Message, MessageHandler, Outcome, PubSub, PubSubClient, PubSubError, PublishRequest, SubscribeRequest};
use crate::resiliency::retry::{BackoffPolicy, RetrySpec};
use crate::resiliency::{Policy, Resiliency};

#[derive(Default)]
struct Broker {
    published: Mutex<Vec<PublishRequest>>,
    fail_publish: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl PubSub for Broker {
    fn features(&self) -> &'static [Feature] {
        &[]
    }
    fn max_delivery_count(&self) -> Option<u32> {
        Some(3)
    }
    async fn publish(&self, req: PublishRequest) -> Result<(), PubSubError> {
        if self.fail_publish.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(PubSubError::Unavailable("down".into()));
        }
        self.published.lock().unwrap().push(req);
        Ok(())
    }
    async fn subscribe(&self, _req: SubscribeRequest, _h: Arc<dyn MessageHandler>, _c: CancellationToken) -> Result<(), PubSubError> {
        Ok(())
    }
    async fn ping(&self) -> Result<(), PubSubError> {
        Ok(())
    }
}

/// Answers from a script (then SUCCESS), records every event.
#[derive(Default)]
struct Sink {
    script: Mutex<VecDeque<AppAnswer>>,
    got: Mutex<Vec<AppEvent>>,
}

#[async_trait]
impl AppSink for Sink {
    async fn deliver(&self, ev: &AppEvent) -> AppAnswer {
        self.got.lock().unwrap().push(ev.clone());
        self.script.lock().unwrap().pop_front().unwrap_or(AppAnswer::Success)
    }
    async fn deliver_bulk(&self, batch: &AppBatch) -> Vec<AppAnswer> {
        vec![AppAnswer::Success; batch.entries.len()]
    }
}

struct Fixture {
    handler: EventHandler,
    broker: Arc<Broker>,
    sink: Arc<Sink>,
    table: SubscriptionTable,
    manager: ActorRef<SubscriptionManagerMsg>,
}

impl Fixture {
    fn answers(&self, a: &[AppAnswer]) {
        self.sink.script.lock().unwrap().extend(a.iter().copied());
    }
    fn calls(&self) -> usize {
        self.sink.got.lock().unwrap().len()
    }
    fn dead_letters(&self) -> Vec<String> {
        self.broker.published.lock().unwrap().iter().map(|p| p.topic.clone()).collect()
    }
}

async fn fixture(dead_letter: bool, rules: Vec<Rule>, policy: Policy) -> Fixture {
    let mut sub = Subscription::new(SubscriptionKind::Programmatic, "ps", "orders", "/orders");
    if !rules.is_empty() {
        sub.rules = rules;
    }
    sub.dead_letter_topic = dead_letter.then(|| "dead".to_string());
    let broker = Arc::new(Broker::default());
    let client = PubSubClient::new(broker.clone(), Duration::from_secs(5), TaskTracker::new(), CancellationToken::new());
    let sink = Arc::new(Sink::default());
    let shared = Arc::new(DeliveryShared { sink: sink.clone(), draining: CancellationToken::new(), in_flight: TaskTracker::new(), metrics: None });
    let table = SubscriptionTable::default();
    let args = SubscriptionManagerArgs {
        app_id: "app".into(),
        directory: DirectoryHandle::default(),
        table: table.clone(),
        resiliency: Resiliency::none(),
        shared: shared.clone(),
        load: Box::pin(async { vec![Subscription::new(SubscriptionKind::Programmatic, "absent", "t", "/t")] }),
    };
    let (manager, _) = Actor::spawn(None, SubscriptionManager, args).await.expect("manager starts");
    let handler = EventHandler { index: 0, routes: Routes::compile(&sub).expect("rules compile"), subscription: Arc::new(sub), client, policy, shared, manager: manager.clone(), batcher: None };
    Fixture { handler, broker, sink, table, manager }
}

fn event(extra: serde_json::Value, count: u32) -> Message {
    let mut ev = json!({"id": "e1", "specversion": "1.0", "type": "com.dapr.event.sent", "source": "pub", "datacontenttype": "application/json", "data": {"n": 5}});
    if let (Some(o), serde_json::Value::Object(x)) = (ev.as_object_mut(), extra) {
        o.extend(x);
    }
    Message { id: "m1".into(), topic: "orders".into(), data: Bytes::from(ev.to_string()), content_type: Some("application/cloudevents+json".into()), metadata: Default::default(), delivery_count: count }
}

async fn handle(f: &Fixture, msg: Message) -> Outcome {
    f.handler.handle(msg).await
}

#[tokio::test]
async fn success_acks_and_the_app_gets_the_event_on_its_route() {
    let f = fixture(false, vec![], Policy::none()).await;
    assert_eq!(handle(&f, event(json!({}), 1)).await, Outcome::Ack);
    let got = f.sink.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/orders");
    assert_eq!(got[0].id(), "e1");
    assert_eq!(got[0].metadata().get("pubsubName").map(String::as_str), Some("ps"));
    f.manager.stop(None);
}

#[tokio::test]
async fn retry_stays_unacked_without_a_dead_letter_topic_and_goes_there_with_one() {
    let f = fixture(false, vec![], Policy::none()).await;
    f.answers(&[AppAnswer::Retry]);
    assert_eq!(handle(&f, event(json!({}), 1)).await, Outcome::Retry);
    assert!(f.dead_letters().is_empty());

    let f = fixture(true, vec![], Policy::none()).await;
    f.answers(&[AppAnswer::Retry]);
    assert_eq!(handle(&f, event(json!({}), 1)).await, Outcome::Ack);
    assert_eq!(f.dead_letters(), vec!["dead"]);
}

#[tokio::test]
async fn drop_and_not_found_ack_or_dead_letter_and_a_failed_dead_letter_keeps_the_message() {
    for answer in [AppAnswer::Drop, AppAnswer::NotFound] {
        let f = fixture(false, vec![], Policy::none()).await;
        f.answers(&[answer]);
        assert_eq!(handle(&f, event(json!({}), 1)).await, Outcome::Ack, "{answer:?}");
        assert!(f.dead_letters().is_empty());

        let f = fixture(true, vec![], Policy::none()).await;
        f.broker.fail_publish.store(true, std::sync::atomic::Ordering::SeqCst);
        f.answers(&[answer]);
        assert_eq!(handle(&f, event(json!({}), 1)).await, Outcome::Retry, "{answer:?}: the dead-letter publish failed");
    }
}

#[tokio::test]
async fn the_inbound_policy_retries_the_app_before_settling() {
    let spec = RetrySpec { backoff: BackoffPolicy::Constant { interval: Duration::from_millis(1) }, max_retries: Some(2), ..Default::default() };
    let f = fixture(false, vec![], Policy::new("p", None, Some(Arc::new(spec)), None)).await;
    f.answers(&[AppAnswer::Retry, AppAnswer::Retry]);
    assert_eq!(handle(&f, event(json!({}), 1)).await, Outcome::Ack, "third attempt succeeds");
    assert_eq!(f.calls(), 3);
    f.answers(&[AppAnswer::Retry, AppAnswer::Retry, AppAnswer::Retry]);
    assert_eq!(handle(&f, event(json!({}), 1)).await, Outcome::Retry, "exhausted: kept for redelivery");
    assert_eq!(f.calls(), 6);
}

#[tokio::test]
async fn a_failure_at_the_poison_limit_parks_or_dead_letters() {
    let f = fixture(false, vec![], Policy::none()).await;
    f.answers(&[AppAnswer::Retry]);
    assert_eq!(handle(&f, event(json!({}), 3)).await, Outcome::Park);
    f.answers(&[AppAnswer::Retry]);
    assert_eq!(handle(&f, event(json!({}), 2)).await, Outcome::Retry, "below the limit");
    assert_eq!(handle(&f, event(json!({}), 4)).await, Outcome::Park, "past the limit: not delivered again");
    assert_eq!(f.calls(), 2);
    let f = fixture(true, vec![], Policy::none()).await;
    f.answers(&[AppAnswer::Retry]);
    assert_eq!(handle(&f, event(json!({}), 3)).await, Outcome::Ack);
    assert_eq!(f.dead_letters(), vec!["dead"]);
    // A subscription naming an unconfigured pub/sub was skipped, not listed.
    assert!(f.table.load().is_empty());
}

#[tokio::test]
async fn expired_and_unrouted_events_never_reach_the_app_and_ack_only_through_the_dead_letter_topic() {
    let expired = json!({"expiration": "2000-01-01T00:00:00Z"});
    let f = fixture(false, vec![], Policy::none()).await;
    assert_eq!(handle(&f, event(expired.clone(), 1)).await, Outcome::Ack);
    let f = fixture(true, vec![], Policy::none()).await;
    f.broker.fail_publish.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(handle(&f, event(expired, 1)).await, Outcome::Retry);
    assert_eq!(f.calls(), 0);

    let rules = vec![Rule { match_expr: "event.data.n == 6.0".into(), path: "/six".into() }];
    let f = fixture(true, rules.clone(), Policy::none()).await;
    assert_eq!(handle(&f, event(json!({}), 1)).await, Outcome::Ack);
    assert_eq!(f.dead_letters(), vec!["dead"]);
    assert_eq!(f.calls(), 0);
    let f = fixture(false, rules, Policy::none()).await;
    assert_eq!(handle(&f, event(json!({"data": {"n": 6}}), 1)).await, Outcome::Ack);
    assert_eq!(f.sink.got.lock().unwrap()[0].path, "/six");
}

#[tokio::test]
async fn a_malformed_event_is_kept_and_a_draining_handler_takes_nothing() {
    let f = fixture(false, vec![], Policy::none()).await;
    let bad = Message { id: "m".into(), data: Bytes::from_static(b"{not json"), content_type: Some("application/cloudevents+json".into()), delivery_count: 1, ..Default::default() };
    assert_eq!(handle(&f, bad).await, Outcome::Retry);
    f.handler.shared.draining.cancel();
    assert_eq!(handle(&f, event(json!({}), 1)).await, Outcome::Retry);
    assert_eq!(f.calls(), 0);
}
