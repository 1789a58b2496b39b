//! Facade tests over `pubsub.in-memory` with a recording subscriber: the envelope that reaches
//! the broker, scopes, raw payloads, bulk entry checks.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::components::directory::Directory;
use crate::components::pubsub::memory::MemoryBus;
use crate::components::pubsub::{Message, MessageHandler, Outcome, PubSub, SubscribeRequest};
use crate::pubsub::cloudevents::decode;
use crate::pubsub::scopes::Scopes;

struct Record(mpsc::UnboundedSender<Message>);

#[async_trait]
impl MessageHandler for Record {
    async fn handle(&self, msg: Message) -> Outcome {
        let _ = self.0.send(msg);
        Outcome::Ack
    }
}

/// A broker with scopes, as `PubSubKind::build` wraps one.
struct WithScopes(MemoryBus, Scopes);

#[async_trait]
impl PubSub for WithScopes {
    fn features(&self) -> &'static [Feature] {
        self.0.features()
    }
    async fn publish(&self, req: PublishRequest) -> Result<(), PubSubError> {
        self.0.publish(req).await
    }
    async fn subscribe(&self, req: SubscribeRequest, h: Arc<dyn MessageHandler>, c: CancellationToken) -> Result<(), PubSubError> {
        self.0.subscribe(req, h, c).await
    }
    fn scopes(&self) -> Option<&Scopes> {
        Some(&self.1)
    }
    async fn ping(&self) -> Result<(), PubSubError> {
        Ok(())
    }
}

async fn setup(scopes: Scopes) -> (PubSubApi, PubSubClient, mpsc::UnboundedReceiver<Message>) {
    setup_with(Arc::new(WithScopes(MemoryBus::new(), scopes))).await
}

async fn setup_with(broker: Arc<WithScopes>) -> (PubSubApi, PubSubClient, mpsc::UnboundedReceiver<Message>) {
    let client = PubSubClient::new(broker, Duration::from_secs(5), TaskTracker::new(), CancellationToken::new());
    let mut d = Directory::default();
    d.pubsubs.insert("ps".into(), client.clone());
    let dir = DirectoryHandle::default();
    dir.publish(d);
    let (tx, rx) = mpsc::unbounded_channel();
    client.subscribe(SubscribeRequest { topic: "orders*".into(), ..Default::default() }, Arc::new(Record(tx)), &CancellationToken::new()).await.unwrap();
    (PubSubApi::new(dir, Resiliency::none(), "pub-app"), client, rx)
}

fn args(topic: &str, data: &'static str, ct: &str, md: &[(&str, &str)]) -> PublishArgs {
    PublishArgs {
        pubsub: "ps".into(),
        topic: topic.into(),
        data: Bytes::from_static(data.as_bytes()),
        content_type: ct.into(),
        metadata: md.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        trace_parent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        trace_state: String::new(),
    }
}

#[tokio::test]
async fn publishes_the_envelope_daprd_builds() {
    let (api, client, mut rx) = setup(Scopes::default()).await;
    api.publish(&client, args("orders/eu", r#"{"n":5}"#, "application/json", &[("cloudevent.subject", "s"), ("ttlInSeconds", "60")]), false).await.unwrap();
    let msg = rx.recv().await.unwrap();
    let ev = decode(&msg, false).unwrap();
    assert_eq!(ev["data"]["n"], 5);
    assert_eq!((ev["topic"].as_str(), ev["pubsubname"].as_str(), ev["source"].as_str()), (Some("orders/eu"), Some("ps"), Some("pub-app")));
    assert_eq!(ev["subject"], "s");
    assert!(ev.contains_key("expiration"), "in-memory has no native TTL");
    assert_eq!(ev["traceparent"], "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    assert_eq!(msg.metadata["ttlInSeconds"], "60", "the request metadata travels with the message");
}

#[tokio::test]
async fn raw_payload_is_published_unchanged() {
    let (api, client, mut rx) = setup(Scopes::default()).await;
    api.publish(&client, args("orders/x", "not json", "text/plain", &[("rawPayload", "true")]), true).await.unwrap();
    let msg = rx.recv().await.unwrap();
    assert_eq!(msg.data.as_ref(), b"not json");
    assert_eq!(msg.metadata["traceid"], "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "gRPC raw publishes carry the trace in metadata");
    let bad = api.publish(&client, args("orders/x", "x", "", &[("rawPayload", "maybe")]), false).await;
    assert!(matches!(bad, Err(PubSubApiError::Metadata { .. })), "{bad:?}");
}

#[tokio::test]
async fn refusals() {
    let (api, client, _rx) = setup(Scopes::parse(Some("pub-app=orders/ok"), None, None, None)).await;
    let e = api.publish(&client, args("orders/other", "x", "", &[]), false).await;
    assert!(matches!(e, Err(PubSubApiError::Forbidden { .. })), "{e:?}");
    api.publish(&client, args("orders/ok", "x", "", &[]), false).await.unwrap();
    let e = api.publish(&client, args("orders/ok", "[1]", "application/cloudevents+json", &[]), false).await;
    assert!(matches!(e, Err(PubSubApiError::CloudEvent { .. })), "{e:?}");
    let md = Metadata::new();
    assert!(matches!(api.component("", "t", &md, true), Err(PubSubApiError::NameEmpty { .. })));
    assert!(matches!(api.component("nope", "t", &md, true), Err(PubSubApiError::NotFound { metadata: None, .. })));
    assert!(matches!(api.component("nope", "t", &md, false), Err(PubSubApiError::NotFound { metadata: Some(_), .. })));
    assert!(matches!(api.component("ps", "", &md, true), Err(PubSubApiError::TopicEmpty { .. })));
}

#[tokio::test]
async fn bulk_checks_ids_and_wraps_each_entry() {
    let (api, client, mut rx) = setup(Scopes::default()).await;
    let entry = |id: &str, data: &'static str| BulkEntryArgs { entry_id: id.into(), event: Bytes::from_static(data.as_bytes()), content_type: "text/plain".into(), metadata: None };
    let dup = BulkArgs { pubsub: "ps".into(), topic: "orders/b".into(), entries: vec![entry("1", "a"), entry("1", "b")], ..Default::default() };
    assert!(matches!(api.bulk_publish(&client, dup).await, Err(PubSubApiError::MarshalEvents { .. })));
    let empty = BulkArgs { pubsub: "ps".into(), topic: "orders/b".into(), entries: vec![entry("", "a")], ..Default::default() };
    assert!(matches!(api.bulk_publish(&client, empty).await, Err(PubSubApiError::MarshalEvents { .. })));
    let ok = BulkArgs { pubsub: "ps".into(), topic: "orders/b".into(), entries: vec![entry("1", "a"), entry("2", "b")], ..Default::default() };
    api.bulk_publish(&client, ok).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let ev: Value = serde_json::from_slice(&rx.recv().await.unwrap().data).unwrap();
        got.push(ev["data"].as_str().unwrap().to_string());
    }
    got.sort();
    assert_eq!(got, ["a", "b"]);
}

#[tokio::test]
async fn bulk_failures_list_the_entries() {
    let broker = Arc::new(WithScopes(MemoryBus::new(), Scopes::default()));
    let (api, client, _rx) = setup_with(broker.clone()).await;
    broker.0.close().await;
    let entry = |id: &str| BulkEntryArgs { entry_id: id.into(), event: Bytes::from_static(b"x"), content_type: "text/plain".into(), metadata: None };
    let req = BulkArgs { pubsub: "ps".into(), topic: "orders/b".into(), entries: vec![entry("1"), entry("2")], ..Default::default() };
    match api.bulk_publish(&client, req).await {
        Err(PubSubApiError::BulkPartial { failed, .. }) => {
            let mut ids: Vec<_> = failed.iter().map(|f| f.entry_id.as_str()).collect();
            ids.sort();
            assert_eq!(ids, ["1", "2"]);
            assert!(failed.iter().all(|f| f.error.contains("closing")), "{failed:?}");
        }
        other => panic!("{other:?}"),
    }
}
