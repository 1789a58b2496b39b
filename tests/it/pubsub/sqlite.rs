//! The embedded broker pubsub.sqlite (issue 11 C.9): through the sidecar (loads, is listed with
//! its capability, a bad value fails it naming the key), and several PROCESSES sharing one file
//! with no server: consumers of one group compete, another group gets everything, and a
//! SIGKILLed consumer's unacknowledged messages come back to the next one.
//!
//! Twice: at the trait level, the consumer processes being this test binary started again on
//! [`child_consumer`] (ignored, so a normal run never starts it by itself) with its job in
//! environment variables, each writing a line per delivery to a file the parent reads; and
//! through sidecar processes delivering to real apps (the last tests).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rapr::components::metadata::ComponentMetadata;
use rapr::components::pubsub::sqlite::{BrokerConfig, SqliteBroker};
use rapr::components::pubsub::{Message, MessageHandler, Metadata, Outcome, PubSub, PublishRequest, SubscribeRequest};
use tokio_util::sync::CancellationToken;

use super::{component_status as status, metadata};
use super::app::{Answer, SubscriberApp};
use crate::harness::{eventually, Sidecar, SidecarBuilder};

fn component(name: &str, metadata: &[(&str, &str)]) -> String {
    super::component_yaml(name, "pubsub.sqlite", "", metadata)
}


#[tokio::test]
async fn loads_and_is_listed_with_bulk_publish() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ps.db").display().to_string();
    let sc = SidecarBuilder::new("pssqlite-load")
        .file("ps.yaml", &component("ps", &[("connectionString", &db), ("consumerID", "{appID}"), ("processingTimeout", "2s")]))
        .start()
        .await;
    let m = metadata(&sc).await;
    let c = m["components"].as_array().and_then(|cs| cs.iter().find(|c| c["name"] == "ps").cloned()).unwrap_or_else(|| panic!("ps is listed: {m}"));
    assert_eq!((c["type"].as_str(), c["version"].as_str()), (Some("pubsub.sqlite"), Some("v1")), "{c}");
    assert_eq!(c["capabilities"], serde_json::json!(["BULK_PUBLISH"]), "{c}");
    assert_eq!(status(&sc, "ps").await, None, "ready: no status line");
    assert!(!sc.logs().contains("metadata keys not used"), "every key is read: {}", sc.logs());
    assert!(Path::new(&db).exists(), "the broker created its file");
}

#[tokio::test]
async fn a_bad_value_fails_the_component_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ps.db").display().to_string();
    let sc = SidecarBuilder::new("pssqlite-bad")
        .file("bad.yaml", &component("bad", &[("connectionString", &db), ("concurrencyMode", "many")]))
        .file("nopath.yaml", &component("nopath", &[]))
        .memory("mem")
        .allow_unhealthy()
        .start()
        .await;
    for (name, key) in [("bad", "concurrencyMode"), ("nopath", "connectionString")] {
        let s = eventually(Duration::from_secs(15), "the component to be reported failed", || async { status(&sc, name).await }).await;
        assert!(s.contains(key), "{name}: {s}");
    }
    let r = sc.client.post(sc.url("/v1.0/state/mem")).body(r#"[{"key":"k","value":1}]"#).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204, "the sidecar keeps serving");
}

/// The broker settings every process of a test uses: short claims and polls.
fn config(db: &Path) -> BrokerConfig {
    let pairs: Vec<(String, String)> = [
        ("connectionString", db.display().to_string()),
        ("processingTimeout", "1s".to_string()),
        ("redeliverInterval", "200ms".to_string()),
        ("pollInterval", "50ms".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    BrokerConfig::from_metadata(&mut ComponentMetadata::new("ps", &pairs)).expect("valid test config")
}

/// A consumer process: `mode` is `ack` (acknowledge after 20 ms) or `hold` (never answer).
struct ChildConsumer {
    child: Child,
    out: PathBuf,
}

impl ChildConsumer {
    fn start(db: &Path, topic: &str, group: &str, mode: &str, out: PathBuf) -> Self {
        let exe = std::env::current_exe().expect("the test binary's path");
        let child = Command::new(exe)
            .args(["--exact", "pubsub::sqlite::child_consumer", "--ignored", "--nocapture", "--test-threads=1"])
            .env("RAPR_PS_CHILD_DB", db)
            .env("RAPR_PS_CHILD_TOPIC", topic)
            .env("RAPR_PS_CHILD_GROUP", group)
            .env("RAPR_PS_CHILD_MODE", mode)
            .env("RAPR_PS_CHILD_OUT", &out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a consumer process");
        Self { child, out }
    }

    /// `(payload, delivery_count)` per delivery so far.
    fn seen(&self) -> Vec<(String, u32)> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split_once(' '))
            .filter_map(|(p, n)| n.parse().ok().map(|n| (p.to_string(), n)))
            .collect()
    }

    /// SIGKILL: no chance to give anything back.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildConsumer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The body of a consumer process; does nothing unless started by [`ChildConsumer::start`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a consumer process the sqlite tests start; not a test by itself"]
async fn child_consumer() {
    let Ok(db) = std::env::var("RAPR_PS_CHILD_DB") else { return };
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} set by the parent"));
    let (topic, group, mode, out) = (var("RAPR_PS_CHILD_TOPIC"), var("RAPR_PS_CHILD_GROUP"), var("RAPR_PS_CHILD_MODE"), var("RAPR_PS_CHILD_OUT"));
    let broker = SqliteBroker::open("child", config(Path::new(&db))).await.expect("open the shared file");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handler = Arc::new(Record { tx, hold: mode == "hold" });
    let md = Metadata::from([("consumerID".to_string(), group), ("concurrencyMode".to_string(), "single".to_string())]);
    broker.subscribe(SubscribeRequest { topic, metadata: md }, handler, CancellationToken::new()).await.expect("subscribe");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&out).expect("open the output file");
    // Lives until the parent kills it (or the parent's test ends and drops it).
    let lifetime = tokio::time::sleep(Duration::from_secs(120));
    tokio::pin!(lifetime);
    loop {
        tokio::select! {
            _ = &mut lifetime => break,
            m = rx.recv() => {
                let Some(m): Option<Message> = m else { break };
                writeln!(file, "{} {}", String::from_utf8_lossy(&m.data), m.delivery_count).expect("write the output file");
                file.flush().expect("flush the output file");
            }
        }
    }
}

struct Record {
    tx: tokio::sync::mpsc::UnboundedSender<Message>,
    hold: bool,
}

#[async_trait]
impl MessageHandler for Record {
    async fn handle(&self, msg: Message) -> Outcome {
        let _ = self.tx.send(msg);
        if self.hold {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        Outcome::Ack
    }
}

async fn publish(broker: &SqliteBroker, topic: &str, payload: &str) {
    broker.publish(PublishRequest { topic: topic.into(), data: Bytes::from(payload.to_string()), ..Default::default() }).await.expect("publish");
}

fn payloads(seen: &[(String, u32)]) -> Vec<String> {
    let mut v: Vec<String> = seen.iter().map(|(p, _)| p.clone()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_sharing_the_file_compete_within_a_group_and_each_group_gets_everything() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    let topic = format!("orders-{}", uuid::Uuid::new_v4().simple());
    let publisher = SqliteBroker::open("publisher", config(&db)).await.unwrap();
    let a1 = ChildConsumer::start(&db, &topic, "app-a", "ack", dir.path().join("a1.out"));
    let a2 = ChildConsumer::start(&db, &topic, "app-a", "ack", dir.path().join("a2.out"));
    let b = ChildConsumer::start(&db, &topic, "app-b", "ack", dir.path().join("b.out"));
    // Every consumer polls the file; wait until each took the first message of its group.
    publish(&publisher, &topic, "m00").await;
    eventually(Duration::from_secs(30), "both groups to get the first message", || async {
        (b.seen().len() == 1 && a1.seen().len() + a2.seen().len() == 1).then_some(())
    })
    .await;
    let n = 30;
    for i in 1..n {
        publish(&publisher, &topic, &format!("m{i:02}")).await;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let want: Vec<String> = (0..n).map(|i| format!("m{i:02}")).collect();
    eventually(Duration::from_secs(30), "every message in both groups", || async {
        (b.seen().len() >= n && a1.seen().len() + a2.seen().len() >= n).then_some(())
    })
    .await;
    // Longer than a claim: anything handed out twice would show now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let group_a: Vec<(String, u32)> = a1.seen().into_iter().chain(a2.seen()).collect();
    assert_eq!(payloads(&group_a), want, "app-a's two processes together got each message exactly once");
    assert!(!a1.seen().is_empty() && !a2.seen().is_empty(), "both app-a processes got work: {} / {}", a1.seen().len(), a2.seen().len());
    assert_eq!(payloads(&b.seen()), want, "app-b got every message once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_consumers_unacknowledged_messages_come_back_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    let topic = format!("jobs-{}", uuid::Uuid::new_v4().simple());
    let publisher = SqliteBroker::open("publisher", config(&db)).await.unwrap();
    let mut first = ChildConsumer::start(&db, &topic, "worker", "hold", dir.path().join("first.out"));
    // Single mode holds one message at a time: the first is claimed, the others wait in the file.
    for i in 0..3 {
        publish(&publisher, &topic, &format!("j{i}")).await;
    }
    eventually(Duration::from_secs(30), "the first consumer to take a message", || async { (!first.seen().is_empty()).then_some(()) }).await;
    first.kill();
    let taken = first.seen();
    assert_eq!(taken.len(), 1, "a held message blocks a single-mode consumer: {taken:?}");
    let second = ChildConsumer::start(&db, &topic, "worker", "ack", dir.path().join("second.out"));
    let got = eventually(Duration::from_secs(30), "the restarted consumer to get all three", || async {
        let s = second.seen();
        (s.len() >= 3).then_some(s)
    })
    .await;
    assert_eq!(payloads(&got), ["j0", "j1", "j2"]);
    let again = got.iter().find(|(p, _)| *p == taken[0].0).expect("the killed consumer's message came back");
    assert_eq!(again.1, 2, "its delivery count shows the first delivery: {got:?}");
    assert!(got.iter().filter(|(p, _)| *p != taken[0].0).all(|(_, n)| *n == 1), "the others are first deliveries: {got:?}");
    // And the group holds none of them any more once the acknowledgements are recorded.
    eventually(Duration::from_secs(10), "every message acknowledged for the group", || async {
        for id in ["1", "2", "3"] {
            if publisher.held(&topic, "worker", id).await.unwrap() {
                return None;
            }
        }
        Some(())
    })
    .await;
}

// ---- Through sidecars and real apps -------------------------------------------------------------

const WAIT: Duration = Duration::from_secs(30);

/// A sidecar of `app_id` for `app`, with `ps` on the shared file `db`, subscribing `topic` to `/in`.
async fn app_sidecar(app_id: &str, app: &SubscriberApp, db: &Path, topic: &str, extra: &[(&str, &str)]) -> Sidecar {
    let db = db.display().to_string();
    let mut md = vec![("connectionString", db.as_str()), ("pollInterval", "50ms"), ("redeliverInterval", "200ms")];
    md.extend_from_slice(extra);
    let sub = format!("apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: s\nspec:\n  pubsubname: ps\n  topic: {topic}\n  routes:\n    default: /in\n");
    SidecarBuilder::new(app_id).args(&["--app-port", &app.port_arg()]).file("ps.yaml", &component("ps", &md)).file("sub.yaml", &sub).start().await
}

async fn publish_n(sc: &Sidecar, topic: &str, n: i64) {
    let r = sc.client.post(sc.url(&format!("/v1.0/publish/ps/{topic}"))).json(&serde_json::json!({ "n": n })).send().await.expect("publish");
    assert_eq!(r.status(), 204, "publish to {topic}: {}", r.text().await.unwrap_or_default());
}

/// Two sidecar processes of one app id share the file's messages (each gets some, none twice);
/// a sidecar of another app id gets every message.
#[tokio::test]
async fn sidecars_of_one_app_id_compete_and_another_app_id_gets_everything() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    let topic = format!("share-{}", uuid::Uuid::new_v4().simple());
    let (a, b, c) = (SubscriberApp::start(serde_json::json!([])).await, SubscriberApp::start(serde_json::json!([])).await, SubscriberApp::start(serde_json::json!([])).await);
    for app in [&a, &b] {
        // Slow, one at a time: one sidecar cannot take everything before the other joins.
        app.answer("/in", Answer::Slow(Duration::from_millis(100), Box::new(Answer::Success)));
    }
    let single = [("concurrencyMode", "single")];
    let sa = app_sidecar("sq-shared", &a, &db, &topic, &single).await;
    let sb = app_sidecar("sq-shared", &b, &db, &topic, &single).await;
    let sc = app_sidecar("sq-other", &c, &db, &topic, &[]).await;
    for side in [&sa, &sb, &sc] {
        super::wait_active(side, "ps", &topic).await;
    }
    let n = 30;
    for i in 0..n {
        publish_n(&sa, &topic, i).await;
    }
    c.wait_for("/in", n as usize, WAIT).await;
    eventually(WAIT, "the shared app id to take every message", || async { (a.received("/in").len() + b.received("/in").len() >= n as usize).then_some(()) }).await;
    // Give an acknowledged message time to come back, were it going to.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let ids = |app: &SubscriberApp| app.received("/in").iter().map(|r| r.event_id()).collect::<Vec<_>>();
    let (ia, ib) = (ids(&a), ids(&b));
    assert!(!ia.is_empty() && !ib.is_empty(), "each sidecar got some: {} / {}", ia.len(), ib.len());
    let all: std::collections::HashSet<&String> = ia.iter().chain(&ib).collect();
    assert_eq!((all.len(), ia.len() + ib.len()), (n as usize, n as usize), "every message once in the shared app id");
    assert_eq!(c.received("/in").len(), n as usize, "the other app id got every message once");
}

/// A sidecar SIGKILLed while its app holds a message: the next sidecar of that app id gets it
/// once the dead one's claim ends.
#[tokio::test]
async fn a_sigkilled_sidecars_unacknowledged_message_comes_back_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    let topic = format!("kill-{}", uuid::Uuid::new_v4().simple());
    let (first, second) = (SubscriberApp::start(serde_json::json!([])).await, SubscriberApp::start(serde_json::json!([])).await);
    first.answer("/in", Answer::Slow(Duration::from_secs(60), Box::new(Answer::Success)));
    let claim = [("processingTimeout", "3s")];
    let doomed = app_sidecar("sq-kill", &first, &db, &topic, &claim).await;
    publish_n(&doomed, &topic, 7).await;
    let held = first.wait_for("/in", 1, WAIT).await;
    let id = held[0].event_id();
    let status = Command::new("kill").args(["-9", &doomed.pid().to_string()]).status().expect("run kill");
    assert!(status.success(), "SIGKILL the sidecar");
    let _next = app_sidecar("sq-kill", &second, &db, &topic, &claim).await;
    let got = second.wait_for("/in", 1, WAIT).await;
    assert_eq!(got[0].event_id(), id, "the killed sidecar's message");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(second.received("/in").len(), 1, "acknowledged once by the new sidecar");
}
