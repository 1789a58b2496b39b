//! Streaming subscriptions over gRPC SubscribeTopicEventsAlpha1 (issue 11 B.4): a tonic client
//! against the real binary, with the in-memory and the embedded SQLite brokers. The app has no
//! port: events come back on the stream it opened and its answers settle them. (The event flow
//! tests need the publish API and follow it.)

use std::time::Duration;

use rapr_proto::runtime::v1 as pb;
use pb::subscribe_topic_events_request_alpha1::SubscribeTopicEventsRequestType as Req;
use pb::subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType as Resp;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::harness::{eventually, Sidecar, SidecarBuilder};

fn memory_pubsub(name: &str) -> String {
    format!("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: pubsub.in-memory\n  version: v1\n")
}

fn sqlite_pubsub(name: &str, dir: &std::path::Path) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: pubsub.sqlite\n  version: v1\n  metadata:\n  - name: connectionString\n    value: \"{}\"\n  - name: redeliverInterval\n    value: 200ms\n  - name: processingTimeout\n    value: 2s\n",
        dir.join(format!("{name}.db")).display()
    )
}

/// A sidecar with `mem` (pubsub.in-memory) and `lite` (pubsub.sqlite) and no app.
async fn sidecar() -> Sidecar {
    let b = SidecarBuilder::new(&format!("streaming-{}", uuid::Uuid::new_v4().simple()));
    let lite = sqlite_pubsub("lite", &b.dir());
    b.file("mem.yaml", &memory_pubsub("mem")).file("lite.yaml", &lite).start().await
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

/// The streaming subscriptions `/v1.0/metadata` lists for `topic`.
async fn listed(sc: &Sidecar, topic: &str) -> Vec<Value> {
    let m: Value = sc.client.get(sc.url("/v1.0/metadata")).send().await.expect("metadata").json().await.expect("json");
    m["subscriptions"].as_array().cloned().unwrap_or_default().into_iter().filter(|s| s["topic"] == topic).collect()
}

#[tokio::test]
async fn bad_initial_requests_get_daprds_errors() {
    let sc = sidecar().await;
    let processed = pb::SubscribeTopicEventsRequestAlpha1 { subscribe_topic_events_request_type: Some(Req::EventProcessed(Default::default())) };
    let cases = [
        (processed, tonic::Code::Unknown, "initial request is required"),
        (initial("", "t", None), tonic::Code::Unknown, "pubsubName is required"),
        (initial("mem", "", None), tonic::Code::Unknown, "topic is required"),
        (initial("nope", "t", None), tonic::Code::InvalidArgument, "pubsub nope is not found"),
    ];
    for (first, code, message) in cases {
        let e = open_with(&sc, first).await.err().expect("refused");
        assert_eq!((e.code(), e.message()), (code, message), "{e:?}");
    }
    let e = open_with(&sc, initial("nope", "t", None)).await.err().expect("refused");
    let d = tonic_types::StatusExt::get_error_details(&e);
    assert_eq!(d.error_info().map(|i| i.reason.as_str()), Some("DAPR_PUBSUB_NOT_FOUND"), "{e:?}");
    // The sidecar keeps serving streams.
    let t = topic();
    let _s = open(&sc, "mem", &t, None).await;
}

#[tokio::test]
async fn a_second_initial_request_ends_the_stream() {
    let sc = sidecar().await;
    let t = topic();
    let mut s = open(&sc, "mem", &t, None).await;
    let subs = listed(&sc, &t).await;
    assert_eq!(subs.len(), 1, "{subs:?}");
    assert_eq!((subs[0]["type"].as_str(), subs[0]["pubsubname"].as_str()), (Some("STREAMING"), Some("mem")));
    s.tx.send(initial("mem", &t, None)).await.expect("stream open");
    let end = tokio::time::timeout(Duration::from_secs(10), s.rx.message()).await.expect("the stream ends");
    let e = end.expect_err("an error status");
    assert_eq!((e.code(), e.message()), (tonic::Code::Unknown, "duplicate initial request received"));
    eventually(Duration::from_secs(10), "the subscription to end", || async { listed(&sc, &t).await.is_empty().then_some(()) }).await;
}

#[tokio::test]
async fn a_subscription_lives_as_long_as_its_stream() {
    let sc = sidecar().await;
    let t = topic();
    let first = open(&sc, "lite", &t, Some("dead")).await;
    // Several streams may subscribe to one topic, as in daprd.
    let second = open(&sc, "lite", &t, None).await;
    let subs = listed(&sc, &t).await;
    assert_eq!(subs.len(), 2, "{subs:?}");
    assert!(subs.iter().all(|s| s["type"] == "STREAMING" && s["pubsubname"] == "lite"), "{subs:?}");
    assert!(subs.iter().any(|s| s["deadLetterTopic"] == "dead"), "{subs:?}");
    drop(first);
    eventually(Duration::from_secs(10), "one subscription left", || async { (listed(&sc, &t).await.len() == 1).then_some(()) }).await;
    drop(second);
    eventually(Duration::from_secs(10), "no subscription left", || async { listed(&sc, &t).await.is_empty().then_some(()) }).await;
}
