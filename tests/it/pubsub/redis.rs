//! pubsub.redis through the sidecar (issue 11 C.10): the component loads and is listed, a bad
//! value fails it naming the key while the sidecar keeps serving, and a broker down at start
//! fails it until a PRIVATE redis-server (free port, appendonly on, graceful shutdown) appears,
//! after which the host's retry brings it up with no restart. Delivery to the recording app:
//! an entry as Dapr's publisher writes it (`data`, `metadata` fields) is delivered and `XACK`ed;
//! one the app keeps retrying stays pending, comes back, and is parked at the poison limit
//! (still in `XPENDING`, under `<consumerID>-parked`); a broker restarted mid-stream loses nothing
//! and delivery resumes with no sidecar restart; the publish API writes Dapr's entry layout.
//! The shared server is never stopped.

use std::time::Duration;

use serde_json::{json, Value};

use super::{component_status as status, metadata};
use super::app::{Answer, SubscriberApp};
use crate::harness::private_server::{redis_server, PrivateServer};
use crate::harness::{eventually, free_port, Sidecar, SidecarBuilder};

const SHARED: &str = "127.0.0.1:6379";

fn component(name: &str, metadata: &[(&str, &str)]) -> String {
    super::component_yaml(name, "pubsub.redis", "  initTimeout: 2s\n", metadata)
}


fn listed(m: &Value, name: &str) -> Option<Value> {
    m["components"].as_array()?.iter().find(|c| c["name"] == name).cloned()
}

#[tokio::test]
async fn loads_and_is_listed_as_pubsub_redis() {
    let sc = SidecarBuilder::new("psredis-load")
        .file("ps.yaml", &component("ps", &[("redisHost", SHARED), ("processingTimeout", "500"), ("redeliverInterval", "200")]))
        .start()
        .await;
    let m = metadata(&sc).await;
    let c = listed(&m, "ps").unwrap_or_else(|| panic!("ps is listed: {m}"));
    assert_eq!((c["type"].as_str(), c["version"].as_str()), (Some("pubsub.redis"), Some("v1")), "{c}");
    assert_eq!(status(&sc, "ps").await, None, "ready: no status line");
    assert!(!sc.logs().contains("metadata keys not used"), "every key is read: {}", sc.logs());
}

#[tokio::test]
async fn a_bad_value_fails_the_component_naming_the_key() {
    let sc = SidecarBuilder::new("psredis-bad")
        .file("bad.yaml", &component("bad", &[("redisHost", SHARED), ("processingTimeout", "-5")]))
        .file("tls.yaml", &component("tls", &[("redisHost", SHARED), ("enableTLS", "true")]))
        .memory("mem")
        .allow_unhealthy()
        .start()
        .await;
    for (name, key) in [("bad", "processingTimeout"), ("tls", "enableTLS")] {
        let s = eventually(Duration::from_secs(15), "the component to be reported failed", || async { status(&sc, name).await }).await;
        assert!(s.contains(key), "{name}: {s}");
    }
    let r = sc.client.post(sc.url("/v1.0/state/mem")).body(r#"[{"key":"k","value":1}]"#).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204, "the sidecar keeps serving");
}

#[tokio::test]
async fn broker_down_at_start_comes_up_when_redis_appears() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let host = format!("127.0.0.1:{port}");
    let sc = SidecarBuilder::new("psredis-late")
        .file("late.yaml", &component("late", &[("redisHost", &host), ("dialTimeout", "500")]))
        .allow_unhealthy()
        .start()
        .await;
    let s = eventually(Duration::from_secs(15), "late to be reported failed", || async {
        status(&sc, "late").await.filter(|s| s.contains("error connecting to redis"))
    })
    .await;
    assert!(s.contains(&host), "{s}");

    let _server = PrivateServer::started("the private redis-server", port, redis_server(port, dir.path(), true)).await;
    eventually(Duration::from_secs(45), "late to come up", || async { status(&sc, "late").await.is_none().then_some(()) }).await;
    assert!(listed(&metadata(&sc).await, "late").is_some());
    assert!(sc.logs().contains("retrying component"), "the host retried: {}", sc.logs());
}

const WAIT: Duration = Duration::from_secs(20);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

async fn conn(addr: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{addr}/")).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// Writes an entry as Dapr's publisher does: the CloudEvent in `data`, the request metadata as
/// JSON in `metadata`.
async fn xadd(addr: &str, topic: &str, n: i64) {
    let event = json!({"specversion": "1.0", "id": unique("ev"), "source": "publisher", "type": "com.dapr.event.sent",
        "datacontenttype": "application/json", "topic": topic, "pubsubname": "ps", "data": {"n": n}});
    let _: String = redis::cmd("XADD").arg(topic).arg("*").arg("data").arg(event.to_string()).arg("metadata").arg("{}").query_async(&mut conn(addr).await).await.unwrap();
}

/// The `XPENDING` summary: total, smallest and largest id, (consumer, count) pairs.
type PendingSummary = (i64, Option<String>, Option<String>, Option<Vec<(String, String)>>);

/// `XPENDING <topic> <group>`: the total and (consumer, count) pairs.
async fn pending(addr: &str, topic: &str, group: &str) -> (i64, Vec<(String, String)>) {
    let (total, _, _, consumers): PendingSummary = redis::cmd("XPENDING").arg(topic).arg(group).query_async(&mut conn(addr).await).await.unwrap();
    (total, consumers.unwrap_or_default())
}

async fn drop_stream(addr: &str, topic: &str) {
    let _: i64 = redis::cmd("DEL").arg(topic).query_async(&mut conn(addr).await).await.unwrap();
}

/// A declarative subscription of `topic` to `route` on `ps`.
fn subscription(topic: &str, route: &str) -> String {
    format!("apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: s-{topic}\nspec:\n  pubsubname: ps\n  topic: {topic}\n  routes:\n    default: {route}\n")
}

/// A sidecar for `app` with `ps` on `addr` (fast redelivery, poison limit 3) subscribing `topic`.
/// No `consumerID`: the consumer group is the app id, as daprd defaults it.
async fn subscriber(app_id: &str, app: &SubscriberApp, addr: &str, topic: &str, route: &str) -> Sidecar {
    let md = [("redisHost", addr), ("processingTimeout", "300"), ("redeliverInterval", "100"), ("maxDeliveryCount", "3"), ("dialTimeout", "500"), ("readTimeout", "1s")];
    SidecarBuilder::new(app_id)
        .args(&["--app-port", &app.port_arg()])
        .file("ps.yaml", &component("ps", &md))
        .file("sub.yaml", &subscription(topic, route))
        .start()
        .await
}

fn with_n(app: &SubscriberApp, route: &str, n: i64) -> usize {
    app.received(route).iter().filter(|r| r.json().pointer("/data/n").and_then(Value::as_i64) == Some(n)).count()
}

#[tokio::test]
async fn a_dapr_written_entry_is_delivered_and_acknowledged() {
    let (topic, group) = (unique("rdeliver"), unique("rdeliver-app"));
    let app = SubscriberApp::start(json!([])).await;
    xadd(SHARED, &topic, 1).await;
    let sc = subscriber(&group, &app, SHARED, &topic, "/in").await;
    let got = app.wait_for("/in", 1, WAIT).await;
    assert_eq!(got[0].json().pointer("/data/n"), Some(&json!(1)), "{:?}", got[0].json());
    assert_eq!(got[0].content_type, "application/cloudevents+json");
    eventually(WAIT, "the entry acknowledged", || async { (pending(SHARED, &topic, &group).await.0 == 0).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(with_n(&app, "/in", 1), 1, "acknowledged: not delivered again");
    drop(sc);
    drop_stream(SHARED, &topic).await;
}

#[tokio::test]
async fn a_retried_entry_stays_pending_comes_back_and_is_parked_at_the_limit() {
    let (topic, group) = (unique("rpoison"), unique("rpoison-app"));
    let app = SubscriberApp::start(json!([])).await;
    app.answer("/in", Answer::Retry);
    let sc = subscriber(&group, &app, SHARED, &topic, "/in").await;
    xadd(SHARED, &topic, 7).await;
    eventually(WAIT, "three deliveries (the poison limit)", || async { (with_n(&app, "/in", 7) >= 3).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(with_n(&app, "/in", 7), 3, "delivered maxDeliveryCount times, then parked");
    let (total, consumers) = pending(SHARED, &topic, &group).await;
    assert_eq!(total, 1, "never acknowledged");
    assert_eq!(consumers, vec![(format!("{group}-parked"), "1".to_string())]);
    assert!(sc.logs().contains("parked"), "{}", sc.logs());
    drop(sc);
    drop_stream(SHARED, &topic).await;
}

#[tokio::test]
async fn a_broker_restart_mid_stream_loses_nothing_and_delivery_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = PrivateServer::started("the private redis-server", port, redis_server(port, dir.path(), true)).await;
    let (topic, group) = ("orders", "rrestart-app");
    let app = SubscriberApp::start(json!([])).await;
    let sc = subscriber(group, &app, &addr, topic, "/in").await;
    let pid = sc.pid();
    xadd(&addr, topic, 1).await;
    app.wait_for("/in", 1, WAIT).await;
    eventually(WAIT, "the first entry acknowledged", || async { (pending(&addr, topic, group).await.0 == 0).then_some(()) }).await;

    // A message the app keeps retrying is pending when the broker goes away.
    app.answer("/in", Answer::Retry);
    xadd(&addr, topic, 2).await;
    eventually(WAIT, "the second entry delivered", || async { (with_n(&app, "/in", 2) >= 1).then_some(()) }).await;
    assert_eq!(pending(&addr, topic, group).await.0, 1, "pending before the restart");
    server.stop_with("TERM");
    let before = with_n(&app, "/in", 2);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.start().await;
    app.answer("/in", Answer::Success);
    xadd(&addr, topic, 3).await;
    eventually(WAIT, "the retried and the new entry delivered after the restart", || async {
        (with_n(&app, "/in", 2) > before && with_n(&app, "/in", 3) >= 1).then_some(())
    })
    .await;
    eventually(WAIT, "everything acknowledged", || async { (pending(&addr, topic, group).await.0 == 0).then_some(()) }).await;
    assert_eq!(sc.pid(), pid, "the same sidecar process");
    assert_eq!(status(&sc, "ps").await, None, "ps is ready again");
}

/// `concurrency: 1` on the component: one stream's entries reach the app in stream order.
#[tokio::test]
async fn concurrency_one_keeps_the_stream_order_to_the_app() {
    let (topic, group) = (unique("rorder"), unique("rorder-app"));
    let app = SubscriberApp::start(json!([])).await;
    for n in 0..30 {
        xadd(SHARED, &topic, n).await;
    }
    let md = [("redisHost", SHARED), ("consumerID", group.as_str()), ("concurrency", "1")];
    let _sc = SidecarBuilder::new(&group)
        .args(&["--app-port", &app.port_arg()])
        .file("ps.yaml", &component("ps", &md))
        .file("sub.yaml", &subscription(&topic, "/in"))
        .start()
        .await;
    let got: Vec<i64> = app.wait_for("/in", 30, WAIT).await.iter().filter_map(|r| r.json().pointer("/data/n").and_then(Value::as_i64)).collect();
    assert_eq!(got, (0..30).collect::<Vec<i64>>());
    drop_stream(SHARED, &topic).await;
}

/// Two sidecars of one app id share a stream's entries (each gets some, none gets one twice);
/// a sidecar of another app id gets every entry.
#[tokio::test]
async fn sidecars_of_one_app_id_share_the_work_and_other_app_ids_get_everything() {
    let topic = unique("rshare");
    let (group, other) = (unique("rshare-app"), unique("rshare-other"));
    let (a, b, c) = (SubscriberApp::start(json!([])).await, SubscriberApp::start(json!([])).await, SubscriberApp::start(json!([])).await);
    for app in [&a, &b] {
        // The app is slow enough that one sidecar cannot take every entry first.
        app.answer("/in", Answer::Slow(Duration::from_millis(50), Box::new(Answer::Success)));
    }
    let sa = subscriber(&group, &a, SHARED, &topic, "/in").await;
    let sb = subscriber(&group, &b, SHARED, &topic, "/in").await;
    let sc = subscriber(&other, &c, SHARED, &topic, "/in").await;
    for side in [&sa, &sb, &sc] {
        super::wait_active(side, "ps", &topic).await;
    }
    let n = 40;
    for i in 0..n {
        xadd(SHARED, &topic, i).await;
    }
    c.wait_for("/in", n as usize, WAIT).await;
    eventually(WAIT, "the shared group to take every entry", || async { (a.received("/in").len() + b.received("/in").len() >= n as usize).then_some(()) }).await;
    eventually(WAIT, "the shared group to acknowledge every entry", || async { (pending(SHARED, &topic, &group).await.0 == 0).then_some(()) }).await;
    let ids = |app: &SubscriberApp| app.received("/in").iter().map(|r| r.event_id()).collect::<Vec<_>>();
    let (ia, ib) = (ids(&a), ids(&b));
    assert!(!ia.is_empty() && !ib.is_empty(), "each sidecar got some: {} / {}", ia.len(), ib.len());
    let all: std::collections::HashSet<&String> = ia.iter().chain(&ib).collect();
    assert_eq!((all.len(), ia.len() + ib.len()), (n as usize, n as usize), "every entry once");
    assert_eq!(c.received("/in").len(), n as usize, "the other app id got every entry once");
    drop_stream(SHARED, &topic).await;
}

/// Publishing through the sidecar writes the entry as Dapr's does (the CloudEvent in `data`,
/// the request metadata as JSON in `metadata`), and the subscriber gets it.
#[tokio::test]
async fn publish_through_the_sidecar_writes_daprs_entry_layout() {
    let (topic, group) = (unique("rpublish"), unique("rpublish-app"));
    let app = SubscriberApp::start(json!([])).await;
    let sc = subscriber(&group, &app, SHARED, &topic, "/in").await;
    let r = sc.client.post(sc.url(&format!("/v1.0/publish/ps/{topic}?metadata.note=hi"))).json(&json!({"n": 5})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204, "{}", r.text().await.unwrap_or_default());
    let got = app.wait_for("/in", 1, WAIT).await;
    assert_eq!(got[0].json().pointer("/data/n"), Some(&json!(5)));
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE").arg(&topic).arg("-").arg("+").query_async(&mut conn(SHARED).await).await.unwrap();
    assert_eq!(entries.len(), 1);
    let fields: std::collections::HashMap<_, _> = entries[0].1.iter().cloned().collect();
    let event: Value = serde_json::from_str(&fields["data"]).unwrap();
    assert_eq!((event["data"]["n"].as_i64(), event["pubsubname"].as_str(), event["topic"].as_str()), (Some(5), Some("ps"), Some(topic.as_str())), "{event}");
    assert_eq!(event["source"], json!(group), "the publisher's app id");
    let metadata: Value = serde_json::from_str(&fields["metadata"]).unwrap();
    assert_eq!(metadata["note"], "hi", "{metadata}");
    eventually(WAIT, "the entry acknowledged", || async { (pending(SHARED, &topic, &group).await.0 == 0).then_some(()) }).await;
    drop(sc);
    drop_stream(SHARED, &topic).await;
}
