//! Streaming subscriptions over gRPC SubscribeTopicEventsAlpha1 (issue 11 B.4): a tonic client
//! against the real binary, with the in-memory and the embedded SQLite brokers. The app has no
//! port: events come back on the stream it opened and its answers settle them. Events go into
//! the sidecar's `pubsub.sqlite` file straight from the broker (the publish API is tested in
//! publish.rs), except for the in-memory broker, which only the publish API reaches.

use std::path::PathBuf;
use std::time::Duration;

use pb::subscribe_topic_events_request_alpha1::SubscribeTopicEventsRequestType as Req;
use pb::subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType as Resp;
use rapr::components::metadata::ComponentMetadata;
use rapr::components::pubsub::sqlite::{BrokerConfig, SqliteBroker};
use rapr::components::pubsub::{PubSub, PublishRequest};
use rapr_proto::runtime::v1 as pb;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::harness::{eventually, Sidecar, SidecarBuilder};

const SUCCESS: i32 = 0;
const RETRY: i32 = 1;
const DROP: i32 = 2;

/// A sidecar with `mem` (pubsub.in-memory) and `lite` (pubsub.sqlite, quick redelivery) and no
/// app, and the path of `lite`'s file.
async fn sidecar() -> (Sidecar, PathBuf) {
    let b = SidecarBuilder::new(&format!("streaming-{}", uuid::Uuid::new_v4().simple()));
    let db = b.dir().join("lite.db");
    let mem = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: mem\nspec:\n  type: pubsub.in-memory\n  version: v1\n";
    let scoped = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: scoped\nspec:\n  type: pubsub.in-memory\n  version: v1\n  metadata:\n  - name: allowedTopics\n    value: open\n";
    let lite = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: lite\nspec:\n  type: pubsub.sqlite\n  version: v1\n  metadata:\n  - name: connectionString\n    value: \"{}\"\n  - name: pollInterval\n    value: 50ms\n  - name: redeliverInterval\n    value: 200ms\n  - name: processingTimeout\n    value: 5s\n",
        db.display()
    );
    (b.file("mem.yaml", mem).file("scoped.yaml", scoped).file("lite.yaml", &lite).start().await, db)
}

fn topic() -> String {
    format!("t-{}", uuid::Uuid::new_v4().simple())
}

/// The app's side of one stream.
struct Stream {
    tx: mpsc::Sender<pb::SubscribeTopicEventsRequestAlpha1>,
    rx: tonic::Streaming<pb::SubscribeTopicEventsResponseAlpha1>,
}

fn initial(pubsub: &str, topic: &str, dead_letter: Option<&str>) -> pb::SubscribeTopicEventsRequestAlpha1 {
    pb::SubscribeTopicEventsRequestAlpha1 {
        subscribe_topic_events_request_type: Some(Req::InitialRequest(pb::SubscribeTopicEventsRequestInitialAlpha1 {
            pubsub_name: pubsub.into(),
            topic: topic.into(),
            metadata: Default::default(),
            dead_letter_topic: dead_letter.map(str::to_string),
        })),
    }
}

/// Opens a stream with `first` as its first request; Ok once `initial_response` arrived.
async fn open_with(sc: &Sidecar, first: pb::SubscribeTopicEventsRequestAlpha1) -> Result<Stream, Status> {
    let (tx, reqs) = mpsc::channel(16);
    tx.send(first).await.expect("channel open");
    let mut rx = sc.grpc().await.subscribe_topic_events_alpha1(ReceiverStream::new(reqs)).await?.into_inner();
    let m = tokio::time::timeout(Duration::from_secs(10), rx.message()).await.expect("an answer to the initial request")?;
    match m.and_then(|m| m.subscribe_topic_events_response_type) {
        Some(Resp::InitialResponse(_)) => Ok(Stream { tx, rx }),
        other => panic!("expected initial_response, got {other:?}"),
    }
}

async fn open(sc: &Sidecar, pubsub: &str, topic: &str, dead_letter: Option<&str>) -> Stream {
    match open_with(sc, initial(pubsub, topic, dead_letter)).await {
        Ok(s) => s,
        Err(e) => panic!("subscribing to {pubsub}/{topic}: {e:?}\n{}", sc.logs()),
    }
}

impl Stream {
    async fn next_event(&mut self) -> pb::TopicEventRequest {
        let m = tokio::time::timeout(Duration::from_secs(15), self.rx.message()).await.expect("an event within 15 s").expect("stream open");
        match m.and_then(|m| m.subscribe_topic_events_response_type) {
            Some(Resp::EventMessage(e)) => e,
            other => panic!("expected an event_message, got {other:?}"),
        }
    }

    /// No event within `d`.
    async fn quiet_for(&mut self, d: Duration) {
        if let Ok(m) = tokio::time::timeout(d, self.rx.message()).await {
            panic!("expected no event, got {m:?}");
        }
    }

    async fn answer(&self, id: &str, status: i32) {
        let p = pb::SubscribeTopicEventsRequestProcessedAlpha1 { id: id.into(), status: Some(pb::TopicEventResponse { status }) };
        self.tx.send(pb::SubscribeTopicEventsRequestAlpha1 { subscribe_topic_events_request_type: Some(Req::EventProcessed(p)) }).await.expect("stream open");
    }
}

/// Publishes a structured CloudEvent into `lite`'s file through the broker; returns its id.
async fn publish(db: &std::path::Path, topic: &str, data: &Value) -> String {
    let pairs: Vec<(String, String)> = [("connectionString", db.display().to_string()), ("pollInterval", "50ms".to_string())].into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let config = BrokerConfig::from_metadata(&mut ComponentMetadata::new("lite", &pairs)).expect("valid broker config");
    let broker = SqliteBroker::open("publisher", config).await.expect("open the shared file");
    let id = uuid::Uuid::new_v4().to_string();
    let ev = json!({
        "specversion": "1.0", "id": id, "source": "streaming-test", "type": "com.dapr.event.sent",
        "datacontenttype": "application/json", "data": data, "topic": topic, "pubsubname": "lite",
    });
    let req = PublishRequest { topic: topic.into(), data: ev.to_string().into(), content_type: Some("application/cloudevents+json".into()), ..Default::default() };
    broker.publish(req).await.expect("publish");
    id
}

fn data(e: &pb::TopicEventRequest) -> Value {
    serde_json::from_slice(&e.data).expect("JSON data")
}

/// The subscriptions `/v1.0/metadata` lists for `topic`.
async fn listed(sc: &Sidecar, topic: &str) -> Vec<Value> {
    let m: Value = sc.client.get(sc.url("/v1.0/metadata")).send().await.expect("metadata").json().await.expect("json");
    m["subscriptions"].as_array().cloned().unwrap_or_default().into_iter().filter(|s| s["topic"] == topic).collect()
}

async fn until_unlisted(sc: &Sidecar, topic: &str, left: usize) {
    eventually(Duration::from_secs(10), "streaming subscriptions to leave /v1.0/metadata", || async { (listed(sc, topic).await.len() == left).then_some(()) }).await;
}

#[tokio::test]
async fn bad_initial_requests_get_daprds_errors() {
    let (sc, _) = sidecar().await;
    let processed = pb::SubscribeTopicEventsRequestAlpha1 { subscribe_topic_events_request_type: Some(Req::EventProcessed(Default::default())) };
    let cases = [
        (processed, tonic::Code::Unknown, "initial request is required"),
        (initial("", "t", None), tonic::Code::Unknown, "pubsubName is required"),
        (initial("mem", "", None), tonic::Code::Unknown, "topic is required"),
        (initial("nope", "t", None), tonic::Code::InvalidArgument, "pubsub nope is not found"),
        (initial("scoped", "closed", None), tonic::Code::Unknown, "failed to create subscription for scoped: subscription to topic 'closed' on pubsub 'scoped' is not allowed"),
    ];
    for (first, code, message) in cases {
        let e = open_with(&sc, first).await.err().expect("refused");
        assert_eq!((e.code(), e.message()), (code, message), "{e:?}");
    }
    let e = open_with(&sc, initial("nope", "t", None)).await.err().expect("refused");
    let d = tonic_types::StatusExt::get_error_details(&e);
    assert_eq!(d.error_info().map(|i| i.reason.as_str()), Some("DAPR_PUBSUB_NOT_FOUND"), "{e:?}");
    // The sidecar keeps serving streams; an allowed topic subscribes.
    let _s = open(&sc, "mem", &topic(), None).await;
    let _o = open(&sc, "scoped", "open", None).await;
}

#[tokio::test]
async fn a_subscription_lives_as_long_as_its_stream() {
    let (sc, _) = sidecar().await;
    let t = topic();
    let first = open(&sc, "lite", &t, Some("dead")).await;
    // Several streams may subscribe to one topic, as in daprd.
    let second = open(&sc, "mem", &t, None).await;
    let subs = listed(&sc, &t).await;
    assert_eq!(subs.len(), 2, "{subs:?}");
    assert!(subs.iter().all(|s| s["type"] == "STREAMING"), "{subs:?}");
    assert!(subs.iter().any(|s| s["pubsubname"] == "lite" && s["deadLetterTopic"] == "dead"), "{subs:?}");
    drop(first);
    until_unlisted(&sc, &t, 1).await;
    drop(second);
    until_unlisted(&sc, &t, 0).await;
}

#[tokio::test]
async fn events_reach_the_stream_and_answers_settle_them() {
    let (sc, db) = sidecar().await;
    let t = topic();
    let mut s = open(&sc, "lite", &t, None).await;
    let mut sent = Vec::new();
    for n in 0..3 {
        sent.push((publish(&db, &t, &json!({ "n": n })).await, json!({ "n": n })));
    }
    // The broker hands messages out concurrently: any order.
    let mut got = Vec::new();
    for _ in 0..3 {
        let e = s.next_event().await;
        assert_eq!((e.topic.as_str(), e.pubsub_name.as_str(), e.path.as_str()), (t.as_str(), "lite", "/"));
        assert_eq!((e.data_content_type.as_str(), e.source.as_str(), e.r#type.as_str()), ("application/json", "streaming-test", "com.dapr.event.sent"));
        got.push((e.id.clone(), data(&e)));
        s.answer(&e.id, SUCCESS).await;
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    sent.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, sent);
    // Settled: nothing comes back after the redelivery interval.
    s.quiet_for(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn retry_redelivers_and_drop_goes_to_the_dead_letter_topic() {
    let (sc, db) = sidecar().await;
    let (retried, dropped, dead) = (topic(), topic(), topic());
    // No dead-letter topic: a RETRY (no inbound retry policy here) leaves the message to the
    // broker, which hands it out again.
    let mut r = open(&sc, "lite", &retried, None).await;
    let id = publish(&db, &retried, &json!({ "k": "retry-me" })).await;
    let e = r.next_event().await;
    assert_eq!(e.id, id);
    r.answer(&e.id, RETRY).await;
    let again = r.next_event().await;
    assert_eq!((again.id.as_str(), data(&again)), (id.as_str(), json!({ "k": "retry-me" })));
    r.answer(&again.id, SUCCESS).await;
    r.quiet_for(Duration::from_secs(1)).await;

    let mut s = open(&sc, "lite", &dropped, Some(&dead)).await;
    let mut d = open(&sc, "lite", &dead, None).await;
    let id = publish(&db, &dropped, &json!({ "k": "drop-me" })).await;
    let e = s.next_event().await;
    assert_eq!(e.id, id);
    s.answer(&e.id, DROP).await;
    let dl = d.next_event().await;
    assert_eq!((dl.id.as_str(), data(&dl)), (id.as_str(), json!({ "k": "drop-me" })), "the dropped event arrives on the dead-letter topic");
    d.answer(&dl.id, SUCCESS).await;
    s.quiet_for(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn an_event_unanswered_when_its_stream_ends_is_redelivered_not_dead_lettered() {
    let (sc, db) = sidecar().await;
    let (t, dead) = (topic(), topic());
    let mut d = open(&sc, "lite", &dead, None).await;
    let mut first = open(&sc, "lite", &t, Some(&dead)).await;
    let id = publish(&db, &t, &json!({ "k": "in-flight" })).await;
    let e = first.next_event().await;
    assert_eq!(e.id, id);
    drop(first);
    until_unlisted(&sc, &t, 0).await;
    let mut second = open(&sc, "lite", &t, Some(&dead)).await;
    let again = second.next_event().await;
    assert_eq!((again.id.as_str(), data(&again)), (id.as_str(), json!({ "k": "in-flight" })));
    second.answer(&again.id, SUCCESS).await;
    second.quiet_for(Duration::from_secs(1)).await;
    d.quiet_for(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_second_initial_request_ends_the_stream() {
    let (sc, _) = sidecar().await;
    let t = topic();
    let mut s = open(&sc, "mem", &t, None).await;
    assert_eq!(listed(&sc, &t).await.len(), 1);
    s.tx.send(initial("mem", &t, None)).await.expect("stream open");
    let end = tokio::time::timeout(Duration::from_secs(10), s.rx.message()).await.expect("the stream ends");
    let e = end.expect_err("an error status");
    assert_eq!((e.code(), e.message()), (tonic::Code::Unknown, "duplicate initial request received"));
    until_unlisted(&sc, &t, 0).await;
}

#[tokio::test]
async fn in_memory_events_published_over_grpc_reach_the_stream() {
    let (sc, _) = sidecar().await;
    let t = topic();
    let mut s = open(&sc, "mem", &t, None).await;
    let req = pb::PublishEventRequest { pubsub_name: "mem".into(), topic: t.clone(), data: br#"{"n":7}"#.to_vec(), data_content_type: "application/json".into(), metadata: Default::default() };
    if let Err(e) = sc.grpc().await.publish_event(req).await {
        panic!("publish: {e:?}\n{}", sc.logs());
    }
    let e = s.next_event().await;
    assert_eq!((e.topic.as_str(), e.pubsub_name.as_str(), e.r#type.as_str()), (t.as_str(), "mem", "com.dapr.event.sent"));
    assert_eq!(data(&e), json!({ "n": 7 }));
    assert!(e.source.starts_with("streaming-"), "source is the app id: {}", e.source);
    s.answer(&e.id, SUCCESS).await;
    s.quiet_for(Duration::from_millis(300)).await;
}
