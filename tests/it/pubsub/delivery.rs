//! Delivery to the app: answers, retries, dead letters, poison limit, health pause, concurrency, drain (issue 11 B.5-B.7).
//!
//! Runs the real binary with the embedded `pubsub.sqlite` broker (it redelivers and counts
//! deliveries) and the recording app of `app.rs`; subscriptions are declarative files. Events are
//! published by the test into the same database file (the broker is shared by processes), as
//! CloudEvents; the publish API has its own tests. Every topic is unique per test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rapr::components::metadata::ComponentMetadata;
use rapr::components::pubsub::sqlite::{BrokerConfig, SqliteBroker};
use rapr::components::pubsub::{PubSub, PublishRequest};
use serde_json::{json, Value};

use super::app::{Answer, SubscriberApp};
use crate::harness::{eventually, Sidecar, SidecarBuilder};
use crate::telemetry::{metrics_port, sample, scrape};

const WAIT: Duration = Duration::from_secs(20);

pub(super) fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// `pubsub.sqlite` named `ps` in `dir`, fast redelivery, poison limit 3.
fn broker_yaml(dir: &Path, extra: &[(&str, &str)]) -> String {
    let mut md = format!("  - name: connectionString\n    value: \"{}\"\n  - name: redeliverInterval\n    value: \"200\"\n  - name: pollInterval\n    value: 50ms\n  - name: maxDeliveryCount\n    value: \"3\"\n", db_file(dir).display());
    for (k, v) in extra {
        md.push_str(&format!("  - name: {k}\n    value: \"{v}\"\n"));
    }
    format!("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: ps\nspec:\n  type: pubsub.sqlite\n  version: v1\n  metadata:\n{md}")
}

/// A declarative v2alpha1 subscription of `topic` to `route` on `ps`.
fn subscription_yaml(name: &str, topic: &str, route: &str, dead_letter: Option<&str>) -> String {
    let dl = dead_letter.map(|d| format!("  deadLetterTopic: {d}\n")).unwrap_or_default();
    format!("apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: {name}\nspec:\n  pubsubname: ps\n  topic: {topic}\n  routes:\n    default: {route}\n{dl}")
}

/// The test's side of the broker: the database file the sidecars use, and a publisher on it.
pub(super) struct Broker {
    dir: tempfile::TempDir,
    publisher: SqliteBroker,
}

impl Broker {
    pub(super) async fn open() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let pairs: Vec<(String, String)> = vec![("connectionString".into(), db_file(dir.path()).display().to_string())];
        let cfg = BrokerConfig::from_metadata(&mut ComponentMetadata::new("ps", &pairs)).expect("valid test config");
        let publisher = SqliteBroker::open("test-publisher", cfg).await.expect("open the broker file");
        Self { dir, publisher }
    }
}

fn db_file(dir: &Path) -> PathBuf {
    dir.join("ps.db")
}

/// A sidecar for `app` with the broker (its metadata over the defaults) and `subs` (topic, route,
/// dead letter).
pub(super) async fn sidecar(app_id: &str, app: &SubscriberApp, broker: &Broker, md: &[(&str, &str)], subs: &[(&str, &str, Option<&str>)], extra: impl FnOnce(SidecarBuilder) -> SidecarBuilder) -> Sidecar {
    sidecar_with(app_id, &app.port_arg(), broker, md, subs, extra).await
}

/// As [`sidecar`], for an app on `app_port` (any protocol).
pub(super) async fn sidecar_with(app_id: &str, app_port: &str, broker: &Broker, md: &[(&str, &str)], subs: &[(&str, &str, Option<&str>)], extra: impl FnOnce(SidecarBuilder) -> SidecarBuilder) -> Sidecar {
    let mut b = SidecarBuilder::new(app_id).args(&["--app-port", app_port]);
    // No `consumerID`: the runtime defaults it to the app id, as daprd (the broker refuses to
    // subscribe without one).
    b = b.file("ps.yaml", &broker_yaml(broker.dir.path(), md));
    for (i, (topic, route, dl)) in subs.iter().enumerate() {
        b = b.file(&format!("sub{i}.yaml"), &subscription_yaml(&format!("sub{i}"), topic, route, *dl));
    }
    extra(b).start().await
}

/// Publishes `body` as it is on `topic` with `content_type` (a malformed event, say).
pub(super) async fn publish_raw(broker: &Broker, topic: &str, body: &str, content_type: &str) {
    let req = PublishRequest { topic: topic.to_string(), data: body.to_string().into(), content_type: Some(content_type.into()), metadata: Default::default() };
    broker.publisher.publish(req).await.expect("publish");
}

/// Publishes a CloudEvent with `data` on `topic`, as the publish API would.
pub(super) async fn publish(broker: &Broker, topic: &str, data: Value) {
    let ev = json!({"id": uuid::Uuid::new_v4().to_string(), "specversion": "1.0", "type": "com.dapr.event.sent", "source": "test", "datacontenttype": "application/json", "data": data, "topic": topic, "pubsubname": "ps"});
    let req = PublishRequest { topic: topic.to_string(), data: ev.to_string().into(), content_type: Some("application/cloudevents+json".into()), metadata: Default::default() };
    broker.publisher.publish(req).await.expect("publish");
}

/// Publishes a probe on `topic` until `route` got one: the subscription is running.
pub(super) async fn warm_up(broker: &Broker, app: &SubscriberApp, topic: &str, route: &str) {
    eventually(WAIT, &format!("the subscription of {topic} to run"), || async {
        if app.received(route).is_empty() {
            publish(broker, topic, json!({"probe": true})).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (!app.received(route).is_empty()).then_some(())
    })
    .await;
}

/// The events with `data.n == n` that reached `route`.
pub(super) fn with_n(app: &SubscriberApp, route: &str, n: i64) -> usize {
    app.received(route).iter().filter(|r| r.json().pointer("/data/n").and_then(Value::as_i64) == Some(n)).count()
}

#[tokio::test]
async fn success_drop_and_404_ack_once_and_dead_letter_the_dropped_ones() {
    let (ok, drop, gone, dead) = (unique("ok"), unique("drop"), unique("gone"), unique("dead"));
    let app = SubscriberApp::start(json!([])).await;
    app.answer("/drop", Answer::Drop);
    app.answer("/gone", Answer::Status(404));
    let broker = Broker::open().await;
    let sc = sidecar("deliv-answers", &app, &broker, &[], &[(&ok, "/ok", None), (&drop, "/drop", Some(&dead)), (&gone, "/gone", Some(&dead)), (&dead, "/dead", None)], |b| b).await;
    warm_up(&broker, &app, &ok, "/ok").await;
    publish(&broker, &ok, json!({"n": 1})).await;
    publish(&broker, &drop, json!({"n": 2})).await;
    publish(&broker, &gone, json!({"n": 3})).await;
    eventually(WAIT, "both dropped events in the dead-letter topic", || async { (with_n(&app, "/dead", 2) == 1 && with_n(&app, "/dead", 3) == 1).then_some(()) }).await;
    let first = app.received("/ok").into_iter().find(|r| r.json().pointer("/data/n") == Some(&json!(1))).expect("the event");
    assert_eq!(first.content_type, "application/cloudevents+json");
    assert_eq!(first.json()["topic"], json!(ok));
    assert_eq!(first.json()["pubsubname"], "ps");
    assert_eq!(first.headers.get("pubsubname").map(String::as_str), Some("ps"));
    // Acknowledged: nothing comes back after several redeliver intervals.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(with_n(&app, "/ok", 1), 1);
    assert_eq!(with_n(&app, "/drop", 2), 1);
    assert_eq!(with_n(&app, "/gone", 3), 1);
    assert_eq!(with_n(&app, "/dead", 2), 1);
    let text = scrape(&sc, metrics_port(&sc).await).await;
    let count = |topic: &str, ps: &str, st: &str| sample(&text, "dapr_component_pubsub_ingress_count", &[("topic", topic), ("process_status", ps), ("status", st)]).unwrap_or(0.0);
    assert!(count(&drop, "drop", "success") >= 1.0, "{text}");
    assert!(count(&gone, "drop", "drop") >= 1.0, "{text}");
    assert!(count(&ok, "success", "success") >= 2.0, "{text}");
}

#[tokio::test]
async fn retry_is_redelivered_and_parked_at_the_poison_limit() {
    let topic = unique("retry");
    let app = SubscriberApp::start(json!([])).await;
    let broker = Broker::open().await;
    let sc = sidecar("deliv-poison", &app, &broker, &[], &[(&topic, "/retry", None)], |b| b).await;
    warm_up(&broker, &app, &topic, "/retry").await;
    app.answer("/retry", Answer::Retry);
    publish(&broker, &topic, json!({"n": 7})).await;
    eventually(WAIT, "three deliveries (the poison limit)", || async { (with_n(&app, "/retry", 7) >= 3).then_some(()) }).await;
    // Parked: kept, not redelivered.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(with_n(&app, "/retry", 7), 3, "delivered exactly maxDeliveryCount times");
    assert!(sc.logs().contains("parked at the poison limit"), "{}", sc.logs());
    let text = scrape(&sc, metrics_port(&sc).await).await;
    assert_eq!(sample(&text, "rapr_pubsub_parked_count", &[("topic", &topic)]), Some(1.0), "{text}");
    let md: Value = sc.client.get(sc.url("/v1.0/metadata")).send().await.expect("metadata").json().await.expect("json");
    let state = md["extended"][format!("rapr.subscription.ps/{topic}")].as_str().unwrap_or_default().to_string();
    assert_eq!(state, "active; parked 1", "{md}");
}

#[tokio::test]
async fn bulk_subscribe_batches_events_and_settles_each_entry() {
    let (topic, dead) = (unique("bulk"), unique("bulk-dead"));
    let app = SubscriberApp::start(json!([])).await;
    let broker = Broker::open().await;
    let bulk = format!("apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: bulk\nspec:\n  pubsubname: ps\n  topic: {topic}\n  routes:\n    default: /bulk\n  deadLetterTopic: {dead}\n  bulkSubscribe:\n    enabled: true\n    maxMessagesCount: 3\n    maxAwaitDurationMs: 300\n");
    let sc = sidecar("deliv-bulk", &app, &broker, &[], &[(&dead, "/dead", None)], |b| b.file("bulk.yaml", &bulk)).await;
    warm_up(&broker, &app, &dead, "/dead").await;
    app.answer("/bulk", Answer::Drop);
    for n in 0..3 {
        publish(&broker, &topic, json!({"n": 200 + n})).await;
    }
    eventually(WAIT, "every dropped entry in the dead-letter topic", || async { ((200..203).all(|n| with_n(&app, "/dead", n) == 1)).then_some(()) }).await;
    let batches = app.received("/bulk");
    let entries: usize = batches.iter().map(|r| r.json()["entries"].as_array().map_or(0, Vec::len)).sum();
    assert_eq!(entries, 3, "each event once, in batches");
    assert!(batches.len() < 3, "events waited for each other (maxAwaitDurationMs): {} requests", batches.len());
    let first = &batches[0];
    assert_eq!(first.content_type, "application/json");
    assert_eq!(first.json()["topic"], json!(topic));
    assert_eq!(first.json()["entries"][0]["event"]["pubsubname"], "ps");
    assert!(first.json()["entries"][0]["entryId"].as_str().is_some_and(|id| !id.is_empty()));
    // Settled: nothing comes back.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let again: usize = app.received("/bulk").iter().map(|r| r.json()["entries"].as_array().map_or(0, Vec::len)).sum();
    assert_eq!(again, 3);
    // daprd's bulk ingress views: one count per app call, its entries by status.
    let text = scrape(&sc, metrics_port(&sc).await).await;
    let calls = sample(&text, "dapr_component_pubsub_ingress_bulk_count", &[("component", "ps"), ("process_status", ""), ("topic", &topic)]);
    assert_eq!(calls, Some(batches.len() as f64), "{text}");
    assert_eq!(sample(&text, "dapr_component_pubsub_ingress_bulk_event_count", &[("process_status", "DROP"), ("topic", &topic)]), Some(3.0), "{text}");
    assert_eq!(sample(&text, "dapr_component_pubsub_ingress_bulk_latencies_count", &[("topic", &topic)]), Some(batches.len() as f64), "{text}");
}

#[tokio::test]
async fn exhausted_inbound_retries_leave_the_message_for_redelivery() {
    let topic = unique("flaky");
    let app = SubscriberApp::start(json!([])).await;
    let resiliency = "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    retries:\n      once:\n        policy: constant\n        duration: 20ms\n        maxRetries: 1\n  targets:\n    components:\n      ps:\n        inbound:\n          retry: once\n";
    let broker = Broker::open().await;
    let _sc = sidecar("deliv-exhausted", &app, &broker, &[], &[(&topic, "/flaky", None)], |b| b.file("resiliency.yaml", resiliency)).await;
    warm_up(&broker, &app, &topic, "/flaky").await;
    app.answer("/flaky", Answer::Status(500));
    publish(&broker, &topic, json!({"n": 9})).await;
    // Two attempts per delivery (the policy), then the broker redelivers: a third arrives.
    eventually(WAIT, "a redelivery after the policy gave up", || async { (with_n(&app, "/flaky", 9) >= 3).then_some(()) }).await;
    app.answer("/flaky", Answer::Success);
    let before = with_n(&app, "/flaky", 9);
    eventually(WAIT, "the redelivery that succeeds", || async { (with_n(&app, "/flaky", 9) > before).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let settled = with_n(&app, "/flaky", 9);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(with_n(&app, "/flaky", 9), settled, "acknowledged after the success");
}

#[tokio::test]
async fn a_failed_dead_letter_publish_keeps_the_message_until_it_works() {
    let (topic, dead) = (unique("dlfp"), unique("dlfp-dead"));
    let app = SubscriberApp::start(json!([])).await;
    app.answer("/drop", Answer::Drop);
    // The first two dead-letter publishes fail, then the point is off.
    let broker = Broker::open().await;
    let sc = sidecar("deliv-dlfail", &app, &broker, &[], &[(&topic, "/drop", Some(&dead)), (&dead, "/dead", None)], |b| b.env("FAILPOINTS", "pubsub:deadletter:publish=2*return->off")).await;
    publish(&broker, &topic, json!({"n": 4})).await;
    eventually(WAIT, "the event in the dead-letter topic", || async { (with_n(&app, "/dead", 4) == 1).then_some(()) }).await;
    assert!(with_n(&app, "/drop", 4) >= 3, "redelivered while the dead-letter publish failed: {}", with_n(&app, "/drop", 4));
    assert!(sc.logs().contains("failpoint pubsub:deadletter:publish"), "{}", sc.logs());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(with_n(&app, "/dead", 4), 1);
}

#[tokio::test]
async fn delivery_waits_while_the_app_is_unhealthy() {
    let topic = unique("health");
    let app = SubscriberApp::start(json!([])).await;
    let flags = ["--enable-app-health-check", "--app-health-probe-interval", "1", "--app-health-probe-timeout", "500", "--app-health-threshold", "1", "--app-health-check-path", "/healthz"];
    let broker = Broker::open().await;
    let sc = sidecar("deliv-health", &app, &broker, &[], &[(&topic, "/h", None)], |b| b.args(&flags)).await;
    warm_up(&broker, &app, &topic, "/h").await;
    app.set_healthy(false);
    // An invocation of the app fails once the sidecar sees it unhealthy.
    eventually(WAIT, "the sidecar to see the app unhealthy", || async {
        let r = sc.client.post(sc.url("/v1.0/invoke/deliv-health/method/ping")).send().await.ok()?;
        let body = r.text().await.ok()?;
        body.contains("app is not in a healthy state").then_some(())
    })
    .await;
    publish(&broker, &topic, json!({"n": 5})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(with_n(&app, "/h", 5), 0, "nothing delivered to an unhealthy app");
    app.set_healthy(true);
    eventually(WAIT, "delivery once the app is healthy", || async { (with_n(&app, "/h", 5) == 1).then_some(()) }).await;
}

#[tokio::test]
async fn app_max_concurrency_bounds_deliveries_in_flight() {
    let topic = unique("conc");
    let app = SubscriberApp::start(json!([])).await;
    let broker = Broker::open().await;
    let _sc = sidecar("deliv-conc", &app, &broker, &[], &[(&topic, "/c", None)], |b| b.args(&["--app-max-concurrency", "1"])).await;
    warm_up(&broker, &app, &topic, "/c").await;
    app.answer("/c", Answer::Slow(Duration::from_millis(200), Box::new(Answer::Success)));
    for n in 0..4 {
        publish(&broker, &topic, json!({"n": 100 + n})).await;
    }
    eventually(WAIT, "four deliveries", || async { ((100..104).all(|n| with_n(&app, "/c", n) >= 1)).then_some(()) }).await;
    assert_eq!(app.max_in_flight(), 1);
}

#[tokio::test]
async fn sigterm_drains_the_delivery_in_the_apps_hands() {
    let topic = unique("drain");
    let broker = Broker::open().await;
    let md: &[(&str, &str)] = &[("processingTimeout", "500")];
    let app = SubscriberApp::start(json!([])).await;
    let subs = [(topic.as_str(), "/d", None)];
    let mut sc = sidecar("deliv-drain", &app, &broker, md, &subs, |b| b.args(&["--dapr-graceful-shutdown-seconds", "10"])).await;
    warm_up(&broker, &app, &topic, "/d").await;
    app.answer("/d", Answer::Slow(Duration::from_millis(1500), Box::new(Answer::Success)));
    publish(&broker, &topic, json!({"n": 11})).await;
    eventually(WAIT, "the slow delivery to start", || async { (with_n(&app, "/d", 11) == 1).then_some(()) }).await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sc.pid() as i32), nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = sc.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{status}: {}", sc.logs());
    assert!(sc.logs().contains("draining pub/sub deliveries"), "{}", sc.logs());
    assert!(!sc.logs().contains("deliveries in flight; they stay unacknowledged"), "drained in time: {}", sc.logs());
    // The drained delivery was acknowledged: a new sidecar on the same broker does not get it.
    app.answer("/d", Answer::Success);
    let _again = sidecar("deliv-drain", &app, &broker, md, &subs, |b| b).await;
    publish(&broker, &topic, json!({"n": 12})).await;
    eventually(WAIT, "the new sidecar to deliver", || async { (with_n(&app, "/d", 12) == 1).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(with_n(&app, "/d", 11), 1, "not redelivered after the drain");
}

#[tokio::test]
async fn a_subscription_the_component_scopes_forbid_stays_inactive_and_gets_nothing() {
    let (allowed, forbidden) = (unique("allowed"), unique("forbidden"));
    let app = SubscriberApp::start(json!([])).await;
    let broker = Broker::open().await;
    let scopes = format!("deliv-scopes={allowed}");
    let sc = sidecar("deliv-scopes", &app, &broker, &[("subscriptionScopes", &scopes)], &[(&allowed, "/a", None), (&forbidden, "/f", None)], |b| b).await;
    warm_up(&broker, &app, &allowed, "/a").await;
    publish(&broker, &forbidden, json!({"n": 1})).await;
    let md: Value = sc.client.get(sc.url("/v1.0/metadata")).send().await.expect("metadata").json().await.expect("json");
    let state = md["extended"][format!("rapr.subscription.ps/{forbidden}")].as_str().unwrap_or_default().to_string();
    assert!(state.starts_with("inactive: subscription to topic") && state.contains("is not allowed"), "{md}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(app.received("/f").is_empty());
}
