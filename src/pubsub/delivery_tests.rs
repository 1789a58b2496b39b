//! `SubscriptionManager` + `Delivery` unit tests: a subscription follows its component across
//! instances (retired, missing, back), the table shows it paused and active, a drain ends it.
//! Broker doubles record each subscribe; the real brokers run in tests/it.

// reason: test-only doubles shared between the test and the processes' tasks; a lock keeps them simple.
#![allow(clippy::disallowed_types)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::components::directory::{Directory, DirectoryHandle};
use crate::components::pubsub::{Feature, MessageHandler, PubSub, PubSubClient, PubSubError, PublishRequest, SubscribeRequest};
use crate::pubsub::app_sink::{AppBatch, AppEvent, AppSink};
use crate::pubsub::handler::DeliveryShared;
use crate::pubsub::manager::{SubscriptionManager, SubscriptionManagerArgs, SubscriptionManagerClient};
use crate::pubsub::outcome::AppAnswer;
use crate::pubsub::{Subscription, SubscriptionKind, SubscriptionTable};
use crate::resiliency::Resiliency;

#[derive(Default)]
struct Broker {
    subscribed: Mutex<Vec<(String, CancellationToken)>>,
}

impl Broker {
    fn subscriptions(&self) -> Vec<(String, CancellationToken)> {
        self.subscribed.lock().unwrap().clone()
    }
}

#[async_trait]
impl PubSub for Broker {
    fn features(&self) -> &'static [Feature] {
        &[]
    }
    async fn publish(&self, _req: PublishRequest) -> Result<(), PubSubError> {
        Ok(())
    }
    async fn subscribe(&self, req: SubscribeRequest, _h: Arc<dyn MessageHandler>, cancel: CancellationToken) -> Result<(), PubSubError> {
        self.subscribed.lock().unwrap().push((req.topic, cancel));
        Ok(())
    }
    async fn ping(&self) -> Result<(), PubSubError> {
        Ok(())
    }
}

struct NoApp;

#[async_trait]
impl AppSink for NoApp {
    async fn deliver(&self, _ev: &AppEvent) -> AppAnswer {
        AppAnswer::Success
    }
    async fn deliver_bulk(&self, b: &AppBatch) -> Vec<AppAnswer> {
        vec![AppAnswer::Success; b.entries.len()]
    }
}

/// Publishes a directory with `broker` as `ps` (or none); returns the instance's retired token.
fn publish(dir: &DirectoryHandle, broker: Option<Arc<Broker>>) -> CancellationToken {
    let retired = CancellationToken::new();
    let mut d = Directory::default();
    match broker {
        Some(b) => {
            d.pubsubs.insert("ps".into(), PubSubClient::new(b, Duration::from_secs(5), TaskTracker::new(), retired.clone()));
        }
        None => {
            d.pubsubs_unavailable.insert("ps".into(), "restarting".into());
        }
    }
    dir.publish(d);
    retired
}

async fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn active(table: &SubscriptionTable) -> Option<bool> {
    table.load().first().map(|s| s.active)
}

#[tokio::test]
async fn a_subscription_follows_its_component_across_instances_and_ends_on_drain() {
    let dir = DirectoryHandle::default();
    let first = Arc::new(Broker::default());
    let retired = publish(&dir, Some(first.clone()));
    let table = SubscriptionTable::default();
    let shared = Arc::new(DeliveryShared { sink: Arc::new(NoApp), draining: CancellationToken::new(), in_flight: TaskTracker::new(), metrics: None });
    let mut other_app = Subscription::new(SubscriptionKind::Declarative, "ps", "theirs", "/x");
    other_app.scopes = vec!["someone-else".into()];
    let subs = vec![Subscription::new(SubscriptionKind::Declarative, "ps", "orders", "/orders"), other_app, Subscription::new(SubscriptionKind::Declarative, "nope", "t", "/t")];
    let args = SubscriptionManagerArgs { app_id: "app".into(), directory: dir.clone(), table: table.clone(), resiliency: Resiliency::none(), shared, load: Box::pin(async move { subs }) };
    let (manager, _) = ractor::Actor::spawn(None, SubscriptionManager, args).await.expect("manager");
    let client = SubscriptionManagerClient::new(manager.clone());

    until("the first subscription", || (first.subscriptions().len() == 1 && active(&table) == Some(true)).then_some(())).await;
    assert_eq!(table.load().len(), 1, "the out-of-scope and unknown-pubsub ones are skipped");
    assert_eq!(first.subscriptions()[0].0, "orders");

    // The host retires the instance: the subscription ends, the delivery pauses.
    let _still_first = retired.clone();
    publish(&dir, None);
    retired.cancel();
    until("the subscription to end", || first.subscriptions()[0].1.is_cancelled().then_some(())).await;
    until("the delivery to pause", || (active(&table) == Some(false)).then_some(())).await;
    assert!(table.load()[0].error.as_deref().unwrap_or_default().contains("restarting"), "{:?}", table.load()[0].error);

    // The component is back on a new instance: subscribed there, active again.
    let second = Arc::new(Broker::default());
    let _retired2 = publish(&dir, Some(second.clone()));
    until("the new subscription", || (second.subscriptions().len() == 1 && active(&table) == Some(true)).then_some(())).await;
    assert_eq!(first.subscriptions().len(), 1, "nothing more on the retired instance");

    client.drain(Duration::from_secs(2)).await;
    until("the drain to end the subscription", || second.subscriptions()[0].1.is_cancelled().then_some(())).await;
    assert_eq!(active(&table), Some(false));
    manager.stop(None);
}

#[test]
fn failed_subscribes_back_off_to_half_a_minute() {
    use crate::pubsub::delivery::backoff;
    let secs: Vec<u64> = (1..=8).map(|f| backoff(f).as_secs()).collect();
    assert_eq!(secs, vec![1, 2, 4, 8, 16, 30, 30, 30]);
}

#[tokio::test]
async fn a_delivery_that_dies_is_restarted_and_its_old_subscription_ended() {
    let dir = DirectoryHandle::default();
    let broker = Arc::new(Broker::default());
    let _retired = publish(&dir, Some(broker.clone()));
    let table = SubscriptionTable::default();
    let shared = Arc::new(DeliveryShared { sink: Arc::new(NoApp), draining: CancellationToken::new(), in_flight: TaskTracker::new(), metrics: None });
    let subs = vec![Subscription::new(SubscriptionKind::Declarative, "ps", "a", "/a"), Subscription::new(SubscriptionKind::Declarative, "ps", "b", "/b")];
    let args = SubscriptionManagerArgs { app_id: "app".into(), directory: dir.clone(), table: table.clone(), resiliency: Resiliency::none(), shared, load: Box::pin(async move { subs }) };
    let (manager, _) = ractor::Actor::spawn(None, SubscriptionManager, args).await.expect("manager");
    until("both subscriptions", || (broker.subscriptions().len() == 2 && table.load().iter().all(|s| s.active)).then_some(())).await;
    let of = |topic: &str| broker.subscriptions().into_iter().filter(|(t, _)| t == topic).map(|(_, c)| c).collect::<Vec<_>>();
    let victim = manager.get_children().into_iter().next().expect("a delivery process");
    victim.kill();
    until("a replacement subscription", || (broker.subscriptions().len() == 3).then_some(())).await;
    let (a, b) = (of("a"), of("b"));
    let (restarted, other) = if a.len() == 2 { (a, b) } else { (b, a) };
    assert_eq!(restarted.len(), 2, "the dead one's topic subscribed again");
    assert!(restarted[0].is_cancelled(), "its old subscription ended");
    assert!(!restarted[1].is_cancelled());
    assert_eq!(other.len(), 1, "the other delivery kept its subscription");
    assert!(!other[0].is_cancelled());
    until("the table active again", || table.load().iter().all(|s| s.active).then_some(())).await;
    manager.stop(None);
}
