//! Broker-level tests of `pubsub.redis` against the shared Redis at 127.0.0.1:6379 (unique stream
//! names per test), and one against a private redis-server this test starts and restarts.

use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ::redis::Value;
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::*;
use crate::components::metadata::ComponentMetadata;
use crate::components::pubsub::{Message, Metadata, Outcome};

fn config(port: u16, group: &str, extra: &[(&str, &str)]) -> StreamsConfig {
    let mut pairs = vec![
        ("redisHost".to_string(), format!("127.0.0.1:{port}")),
        ("consumerID".to_string(), group.to_string()),
        ("processingTimeout".to_string(), "300".to_string()),
        ("redeliverInterval".to_string(), "100".to_string()),
    ];
    pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    StreamsConfig::from_metadata(&mut ComponentMetadata::new("redis-pubsub", &pairs)).expect("valid test metadata")
}

async fn broker(group: &str, extra: &[(&str, &str)]) -> RedisStreams {
    RedisStreams::connect(config(6379, group, extra)).await.expect("the shared redis at 127.0.0.1:6379")
}

fn unique(what: &str) -> String {
    format!("rapr-test-{what}-{}", uuid::Uuid::new_v4())
}

/// Answers each message with the next scripted outcome (then `Ack`) and reports it.
struct Script {
    outcomes: Vec<Outcome>,
    calls: AtomicUsize,
    seen: mpsc::UnboundedSender<Message>,
}

#[async_trait]
impl MessageHandler for Script {
    async fn handle(&self, msg: Message) -> Outcome {
        let outcome = self.outcomes.get(self.calls.fetch_add(1, Ordering::SeqCst)).copied().unwrap_or(Outcome::Ack);
        let _ = self.seen.send(msg);
        outcome
    }
}

fn script(outcomes: &[Outcome]) -> (Arc<Script>, mpsc::UnboundedReceiver<Message>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Arc::new(Script { outcomes: outcomes.to_vec(), calls: AtomicUsize::new(0), seen: tx }), rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Message>) -> Message {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("a delivery within 10 s").expect("handler alive")
}

async fn nothing_within(rx: &mut mpsc::UnboundedReceiver<Message>, d: Duration) {
    if let Ok(Some(m)) = tokio::time::timeout(d, rx.recv()).await {
        panic!("unexpected delivery {} (count {})", m.id, m.delivery_count);
    }
}

/// Polls `f` until it holds (10 s at most).
async fn eventually<F, Fut>(mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not met within 10 s");
}

fn publish_req(topic: &str, data: &str) -> PublishRequest {
    PublishRequest { topic: topic.into(), data: Bytes::from(data.to_string()), content_type: None, metadata: Metadata::new() }
}

/// `XPENDING <stream> <group>` summary: total and per-consumer counts.
async fn pending(b: &RedisStreams, stream: &str, group: &str) -> (i64, Vec<(String, String)>) {
    let v: Value = b.shared.call(::redis::cmd("XPENDING").arg(stream).arg(group)).await.expect("XPENDING");
    let Value::Array(parts) = v else { panic!("XPENDING summary: {v:?}") };
    let total = match &parts[0] {
        Value::Int(n) => *n,
        other => panic!("count {other:?}"),
    };
    let consumers = match &parts[3] {
        Value::Array(cs) => cs
            .iter()
            .map(|c| {
                let Value::Array(p) = c else { panic!("{c:?}") };
                let t = |v: &Value| match v {
                    Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    other => format!("{other:?}"),
                };
                (t(&p[0]), t(&p[1]))
            })
            .collect(),
        _ => vec![],
    };
    (total, consumers)
}

async fn cleanup(b: &RedisStreams, stream: &str) {
    let _: Result<Value, _> = b.shared.call(::redis::cmd("DEL").arg(stream)).await;
}

#[tokio::test]
async fn delivers_with_metadata_and_acks_on_ack() {
    let (stream, group) = (unique("ack"), unique("group"));
    let b = broker(&group, &[]).await;
    let (h, mut rx) = script(&[]);
    let cancel = CancellationToken::new();
    b.subscribe(SubscribeRequest { topic: stream.clone(), metadata: Metadata::new() }, h, cancel.clone()).await.unwrap();
    let mut req = publish_req(&stream, "{\"n\":1}");
    req.metadata.insert("ttlInSeconds".into(), "30".into());
    b.publish(req).await.unwrap();
    let m = next(&mut rx).await;
    assert_eq!((m.topic.as_str(), m.data.as_ref(), m.delivery_count), (stream.as_str(), b"{\"n\":1}".as_ref(), 1));
    assert_eq!(m.metadata.get("ttlInSeconds").map(String::as_str), Some("30"));
    eventually(|| async { pending(&b, &stream, &group).await.0 == 0 }).await;
    nothing_within(&mut rx, Duration::from_millis(800)).await;
    cancel.cancel();
    cleanup(&b, &stream).await;
}

#[tokio::test]
async fn retry_leaves_it_pending_and_it_comes_back_counted() {
    let (stream, group) = (unique("retry"), unique("group"));
    let b = broker(&group, &[]).await;
    let (h, mut rx) = script(&[Outcome::Retry, Outcome::Retry]);
    let cancel = CancellationToken::new();
    b.subscribe(SubscribeRequest { topic: stream.clone(), metadata: Metadata::new() }, h, cancel.clone()).await.unwrap();
    b.publish(publish_req(&stream, "x")).await.unwrap();
    let first = next(&mut rx).await;
    assert_eq!(first.delivery_count, 1);
    assert_eq!(pending(&b, &stream, &group).await.0, 1, "a retried message is not acknowledged");
    let second = next(&mut rx).await;
    let third = next(&mut rx).await;
    assert_eq!((second.id.as_str(), second.delivery_count), (first.id.as_str(), 2));
    assert_eq!((third.id.as_str(), third.delivery_count), (first.id.as_str(), 3));
    eventually(|| async { pending(&b, &stream, &group).await.0 == 0 }).await;
    cancel.cancel();
    cleanup(&b, &stream).await;
}

#[tokio::test]
async fn park_keeps_it_pending_and_never_redelivers() {
    let (stream, group) = (unique("park"), unique("group"));
    let b = broker(&group, &[]).await;
    let (h, mut rx) = script(&[Outcome::Park]);
    let cancel = CancellationToken::new();
    b.subscribe(SubscribeRequest { topic: stream.clone(), metadata: Metadata::new() }, h, cancel.clone()).await.unwrap();
    b.publish(publish_req(&stream, "poison")).await.unwrap();
    assert_eq!(next(&mut rx).await.delivery_count, 1);
    nothing_within(&mut rx, Duration::from_millis(1500)).await;
    let (total, consumers) = pending(&b, &stream, &group).await;
    assert_eq!(total, 1, "a parked message stays in the pending list");
    assert_eq!(consumers, vec![(format!("{group}-parked"), "1".to_string())]);
    cancel.cancel();
    cleanup(&b, &stream).await;
}

#[tokio::test]
async fn concurrency_one_keeps_stream_order() {
    let (stream, group) = (unique("order"), unique("group"));
    let b = broker(&group, &[("concurrency", "1"), ("queueDepth", "7")]).await;
    for i in 0..40 {
        b.publish(publish_req(&stream, &i.to_string())).await.unwrap();
    }
    let (h, mut rx) = script(&[]);
    let cancel = CancellationToken::new();
    b.subscribe(SubscribeRequest { topic: stream.clone(), metadata: Metadata::new() }, h, cancel.clone()).await.unwrap();
    for i in 0..40 {
        assert_eq!(next(&mut rx).await.data.as_ref(), i.to_string().as_bytes());
    }
    cancel.cancel();
    cleanup(&b, &stream).await;
}

#[tokio::test]
async fn cancel_stops_taking_messages_and_they_stay_in_the_stream() {
    let (stream, group) = (unique("cancel"), unique("group"));
    let b = broker(&group, &[]).await;
    let (h, mut rx) = script(&[]);
    let cancel = CancellationToken::new();
    b.subscribe(SubscribeRequest { topic: stream.clone(), metadata: Metadata::new() }, h, cancel.clone()).await.unwrap();
    cancel.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.publish(publish_req(&stream, "later")).await.unwrap();
    nothing_within(&mut rx, Duration::from_millis(1000)).await;
    // A new subscription of the same group gets it.
    let (h2, mut rx2) = script(&[]);
    let cancel2 = CancellationToken::new();
    b.subscribe(SubscribeRequest { topic: stream.clone(), metadata: Metadata::new() }, h2, cancel2.clone()).await.unwrap();
    assert_eq!(next(&mut rx2).await.data.as_ref(), b"later");
    cancel2.cancel();
    b.close().await;
    assert!(matches!(b.publish(publish_req(&stream, "closed")).await, Err(PubSubError::Closed)));
    let other = broker(&group, &[]).await;
    cleanup(&other, &stream).await;
}

#[tokio::test]
async fn publish_trims_with_max_len() {
    let (stream, group) = (unique("trim"), unique("group"));
    let b = broker(&group, &[("maxLenApprox", "10")]).await;
    for i in 0..2000 {
        b.publish(publish_req(&stream, &i.to_string())).await.unwrap();
    }
    let len: i64 = b.shared.call(::redis::cmd("XLEN").arg(&stream)).await.unwrap();
    assert!(len < 2000, "MAXLEN ~ 10 trims (approximately): {len}");
    cleanup(&b, &stream).await;
}

#[tokio::test]
async fn unreachable_at_init_is_an_error() {
    let port = crate::net_ports::free_port().unwrap();
    let Err(e) = RedisStreams::connect(config(port, "g", &[("dialTimeout", "300"), ("redisMaxRetries", "-1")])).await else { panic!("connected to nothing") };
    assert!(matches!(e, PubSubError::Unavailable(_)), "{e}");
}

fn redis_server(port: u16, dir: &std::path::Path) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--save", "", "--appendonly", "yes", "--dir"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start redis-server")
}

async fn listening(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("redis-server on {port} did not listen");
}

/// Redis goes away mid-stream (graceful SHUTDOWN, appendonly on) and comes back: the
/// subscription resumes by itself, and a message retried before the restart is delivered again.
#[tokio::test]
async fn resumes_after_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::net_ports::free_port().unwrap();
    let mut server = redis_server(port, dir.path());
    listening(port).await;
    let b = RedisStreams::connect(config(port, "g", &[])).await.unwrap();
    let (h, mut rx) = script(&[Outcome::Retry, Outcome::Retry]);
    let cancel = CancellationToken::new();
    b.subscribe(SubscribeRequest { topic: "s".into(), metadata: Metadata::new() }, h, cancel.clone()).await.unwrap();
    b.publish(publish_req("s", "before")).await.unwrap();
    let before = next(&mut rx).await;
    assert_eq!(before.delivery_count, 1);
    let _: Result<Value, _> = b.shared.call(&::redis::cmd("SHUTDOWN")).await;
    let _ = server.wait();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(b.publish(publish_req("s", "while down")).await.is_err(), "Redis is down");
    let mut server = redis_server(port, dir.path());
    listening(port).await;
    let again = next(&mut rx).await;
    assert_eq!((again.data.as_ref(), again.delivery_count), (b"before".as_ref(), 2), "pending survived the restart");
    eventually(|| async { b.publish(publish_req("s", "after")).await.is_ok() }).await;
    loop {
        let m = next(&mut rx).await;
        if m.data.as_ref() == b"after" {
            assert_eq!(m.delivery_count, 1);
            break;
        }
    }
    cancel.cancel();
    let _ = server.kill();
    let _ = server.wait();
}

/// The shared conformance suite against the shared Redis (fresh topics and groups per check).
#[tokio::test]
async fn conformance() {
    use crate::components::pubsub::conformance::{matrix, run, Capabilities, Probe, Target};
    let b = Arc::new(broker(&unique("component-group"), &[]).await);
    let probe_conn = b.clone();
    // "Held for the group": in the group's pending list (acknowledged entries leave it; parked
    // ones stay, under the parked consumer).
    let still_stored: Probe = Arc::new(move |topic: String, group: String, id: String| {
        let b = probe_conn.clone();
        Box::pin(async move {
            let mut cmd = ::redis::cmd("XPENDING");
            cmd.arg(&topic).arg(&group).arg(&id).arg(&id).arg(1);
            let v: Value = b.shared.call(&cmd).await.map_err(|e| e.to_string())?;
            Ok(matches!(v, Value::Array(rows) if !rows.is_empty()))
        })
    });
    let target = Target {
        label: "pubsub.redis".into(),
        broker: b.clone(),
        caps: Capabilities::DURABLE,
        still_stored: Some(still_stored),
        // processingTimeout 300 ms, checked every 100 ms.
        redelivery_within: Duration::from_millis(600),
        subscribe_metadata: Metadata::new(),
    };
    let report = run(target).await;
    println!("{}", matrix(std::slice::from_ref(&report)));
    assert!(report.failures().is_empty(), "{:#?}", report.failures());
}

/// A handler slower than `processingTimeout` keeps its message: the other sidecar of the group
/// (here a second broker instance) does not reclaim it while it is being handled.
#[tokio::test]
async fn a_slow_handler_keeps_its_message_from_other_sidecars() {
    let (stream, group) = (unique("slow"), unique("group"));
    let a = broker(&group, &[]).await;
    let b = broker(&group, &[]).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let slow = Arc::new(Slow { seen: tx.clone(), delay: Duration::from_millis(1500) });
    let fast = Arc::new(Slow { seen: tx, delay: Duration::ZERO });
    let cancel = CancellationToken::new();
    a.subscribe(SubscribeRequest { topic: stream.clone(), metadata: Metadata::new() }, slow, cancel.clone()).await.unwrap();
    b.publish(publish_req(&stream, "one")).await.unwrap();
    let first = next(&mut rx).await;
    // Only now the second sidecar: its first read finds nothing new, its reclaim pass finds the
    // message idle unless the first keeps it.
    b.subscribe(SubscribeRequest { topic: stream.clone(), metadata: Metadata::new() }, fast, cancel.clone()).await.unwrap();
    nothing_within(&mut rx, Duration::from_millis(2000)).await;
    eventually(|| async { pending(&a, &stream, &group).await.0 == 0 }).await;
    assert_eq!(first.delivery_count, 1);
    cancel.cancel();
    cleanup(&a, &stream).await;
}

/// Reports, waits, acknowledges.
struct Slow {
    seen: mpsc::UnboundedSender<Message>,
    delay: Duration,
}

#[async_trait]
impl MessageHandler for Slow {
    async fn handle(&self, msg: Message) -> Outcome {
        let _ = self.seen.send(msg);
        tokio::time::sleep(self.delay).await;
        Outcome::Ack
    }
}

/// The group vanishes under a running subscription (a server restarted without persistence, an
/// operator's `XGROUP DESTROY`): the read loop recreates it and delivery goes on.
#[tokio::test]
async fn a_vanished_group_is_recreated() {
    let (stream, group) = (unique("nogroup"), unique("group"));
    let b = broker(&group, &[]).await;
    let (h, mut rx) = script(&[]);
    let cancel = CancellationToken::new();
    b.subscribe(SubscribeRequest { topic: stream.clone(), metadata: Metadata::new() }, h, cancel.clone()).await.unwrap();
    b.publish(publish_req(&stream, "one")).await.unwrap();
    assert_eq!(next(&mut rx).await.data.as_ref(), b"one");
    let destroyed: i64 = b.shared.call(::redis::cmd("XGROUP").arg("DESTROY").arg(&stream).arg(&group)).await.unwrap();
    assert_eq!(destroyed, 1);
    b.publish(publish_req(&stream, "two")).await.unwrap();
    // The recreated group starts at the stream's beginning, as contrib's: "one" comes again.
    let mut seen = Vec::new();
    while !seen.iter().any(|d: &Bytes| d.as_ref() == b"two") {
        seen.push(next(&mut rx).await.data);
    }
    cancel.cancel();
    cleanup(&b, &stream).await;
}

#[test]
fn server_version_from_info() {
    assert_eq!(super::server_version("# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n"), Some((7, 0)));
    assert_eq!(super::server_version("redis_version:6.2.1"), Some((6, 2)));
    assert_eq!(super::server_version("redis_version:garbage"), None);
    assert_eq!(super::server_version("# Server"), None);
}
