//! The at-least-once proofs (issue 11 D.11), on the embedded broker and on Redis: a publisher
//! sidecar publishes acknowledged messages while the subscriber's sidecar is SIGKILLed and
//! restarted twice (and, for Redis, the private broker is restarted once); afterwards every
//! acknowledged message reached the app at least once. Duplicates are printed, never failed.
//!
//! Each fault is shown to have hit: publishes were acknowledged while the subscriber was down,
//! deliveries were in the app's hands at each kill, and (Redis) entries were pending in the
//! consumer group when the broker stopped. The size is `RAPR_PUBSUB_PROOF_MESSAGES` (default
//! 1,000; 10,000 in the opt-in run whose figures are in docs/benchmarks.md). These run alone (a
//! nextest group in .config/nextest.toml).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use super::app::{Answer, SubscriberApp};
use crate::harness::private_server::{redis_server, PrivateServer};
use crate::harness::{eventually, free_port, Sidecar, SidecarBuilder};

const PUBLISHERS: usize = 4;
const SUBSCRIBER: &str = "proof-sub";

/// How many acknowledged messages a run publishes.
fn size() -> usize {
    std::env::var("RAPR_PUBSUB_PROOF_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000)
}

/// Where the messages go.
enum Broker {
    /// `pubsub.sqlite` on a file both sidecars open.
    Sqlite(PathBuf),
    /// `pubsub.redis` on a private redis-server.
    Redis(String),
}

impl Broker {
    fn yaml(&self) -> String {
        let md: Vec<(&str, String)> = match self {
            Broker::Sqlite(file) => vec![
                ("connectionString", file.display().to_string()),
                ("processingTimeout", "2000".into()),
                ("redeliverInterval", "500".into()),
                ("pollInterval", "50ms".into()),
            ],
            Broker::Redis(addr) => vec![("redisHost", addr.clone()), ("processingTimeout", "2000".into()), ("redeliverInterval", "500".into())],
        };
        let kind = match self {
            Broker::Sqlite(_) => "pubsub.sqlite",
            Broker::Redis(_) => "pubsub.redis",
        };
        let md: Vec<(&str, &str)> = md.iter().map(|(k, v)| (*k, v.as_str())).collect();
        super::component_yaml("ps", kind, "", &md)
    }
}

fn subscription_yaml(topic: &str) -> String {
    format!("apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: proof\nspec:\n  pubsubname: ps\n  topic: {topic}\n  routes:\n    default: /ev\nscopes:\n- {SUBSCRIBER}\n")
}

async fn subscriber(broker: &Broker, topic: &str, app: &SubscriberApp) -> Sidecar {
    SidecarBuilder::new(SUBSCRIBER)
        .args(&["--app-port", &app.port_arg()])
        .file("ps.yaml", &broker.yaml())
        .file("sub.yaml", &subscription_yaml(topic))
        .start()
        .await
}

/// Kills `sc` with SIGKILL (no drain, no goodbye) and reaps it.
fn kill9(sc: Sidecar) {
    kill(Pid::from_raw(sc.pid() as i32), Signal::SIGKILL).expect("SIGKILL the sidecar");
    drop(sc);
}

/// `w-n` of every event the app got, with how often.
fn delivered(app: &SubscriberApp) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in app.received("/ev") {
        let v = r.json();
        if let (Some(w), Some(n)) = (v.pointer("/data/w").and_then(Value::as_u64), v.pointer("/data/n").and_then(Value::as_u64)) {
            *out.entry(format!("{w}-{n}")).or_insert(0) += 1;
        }
    }
    out
}

/// Publishers that keep publishing through the publisher sidecar and record what was acknowledged.
struct Publishers {
    acked: tokio::sync::mpsc::UnboundedReceiver<String>,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Publishers {
    fn start(publisher: &Sidecar, topic: &str) -> Self {
        let (tx, acked) = tokio::sync::mpsc::unbounded_channel();
        let (count, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let url = publisher.url(&format!("/v1.0/publish/ps/{topic}"));
        let tasks = (0..PUBLISHERS)
            .map(|w| {
                let (client, url, acked, count, stop) = (publisher.client.clone(), url.clone(), tx.clone(), count.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        let r = client.post(&url).json(&json!({"w": w, "n": n})).timeout(Duration::from_secs(10)).send().await;
                        match r {
                            Ok(r) if r.status().as_u16() == 204 => {
                                let _ = acked.send(format!("{w}-{n}"));
                                count.fetch_add(1, Ordering::SeqCst);
                            }
                            // Not acknowledged (the broker is restarting): not owed to anyone.
                            _ => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                        // A steady stream, not a flood: the faults must land mid-stream.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Self { acked, count, stop, tasks }
    }

    fn acked(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until `n` more publishes were acknowledged than at the call.
    async fn wait_more(&self, n: usize, what: &str) {
        let from = self.acked();
        eventually(Duration::from_secs(60), what, || async move { (self.acked() >= from + n).then_some(()) }).await;
    }

    async fn stop(mut self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        let mut set = BTreeSet::new();
        while let Ok(id) = self.acked.try_recv() {
            set.insert(id);
        }
        set
    }
}

/// SIGKILLs the subscriber while the app holds deliveries, checks publishes were acknowledged
/// while it was down, and restarts it. Returns the new sidecar.
async fn kill_and_restart(sub: Sidecar, app: &SubscriberApp, publishers: &Publishers, broker: &Broker, topic: &str, round: usize) -> Sidecar {
    let in_flight = eventually(Duration::from_secs(30), "deliveries in the app's hands", || async { (app.in_flight() > 0).then(|| app.in_flight()) }).await;
    kill9(sub);
    println!("kill {round}: SIGKILL with {in_flight} deliveries in the app's hands");
    publishers.wait_more(50, "publishes acknowledged while the subscriber is down").await;
    let seen = app.received("/ev").len();
    let sub = subscriber(broker, topic, app).await;
    eventually(Duration::from_secs(60), "deliveries after the restart", || async { (app.received("/ev").len() > seen + 20).then_some(()) }).await;
    sub
}

/// The `XPENDING <stream> <group>` summary: total, smallest and largest id, (consumer, count) pairs.
type PendingSummary = (i64, Option<String>, Option<String>, Option<Vec<(String, String)>>);

async fn redis_pending(addr: &str, topic: &str) -> i64 {
    let mut c = redis::Client::open(format!("redis://{addr}/")).unwrap().get_multiplexed_async_connection().await.unwrap();
    let (total, _, _, _): PendingSummary = redis::cmd("XPENDING").arg(topic).arg(SUBSCRIBER).query_async(&mut c).await.unwrap();
    total
}

async fn run(broker: Broker, mut redis: Option<PrivateServer>) {
    let topic = format!("proof-{}", uuid::Uuid::new_v4().simple());
    let target = size();
    let app = SubscriberApp::start(json!([])).await;
    // Slow enough that a kill always finds deliveries in the app's hands.
    app.answer("/ev", Answer::Slow(Duration::from_millis(20), Box::new(Answer::Success)));
    let publisher = SidecarBuilder::new("proof-pub").file("ps.yaml", &broker.yaml()).start().await;
    let mut sub = subscriber(&broker, &topic, &app).await;
    let started = Instant::now();
    let publishers = Publishers::start(&publisher, &topic);
    publishers.wait_more(target / 10, "the first publishes").await;
    app.wait_for("/ev", 20, Duration::from_secs(30)).await;

    for round in 1..=2 {
        sub = kill_and_restart(sub, &app, &publishers, &broker, &topic, round).await;
    }

    if let (Some(server), Broker::Redis(addr)) = (redis.as_mut(), &broker) {
        // Hold the app's answers so entries are pending in the group when the broker stops.
        app.answer("/ev", Answer::Slow(Duration::from_secs(3), Box::new(Answer::Success)));
        let pending = eventually(Duration::from_secs(30), "pending entries", || async { Some(redis_pending(addr, &topic).await).filter(|p| *p > 0) }).await;
        server.stop_with("TERM");
        println!("broker restart: {pending} entries pending in the group at SHUTDOWN");
        app.answer("/ev", Answer::Slow(Duration::from_millis(20), Box::new(Answer::Success)));
        tokio::time::sleep(Duration::from_secs(1)).await;
        server.start().await;
        assert!(redis_pending(addr, &topic).await > 0 || !app.received("/ev").is_empty(), "the restarted broker kept the group");
    }

    let remaining = target.saturating_sub(publishers.acked());
    if remaining > 0 {
        publishers.wait_more(remaining, "the rest of the publishes").await;
    }
    let acked = publishers.stop().await;
    assert!(acked.len() >= target, "{} acknowledged", acked.len());
    let deadline = Duration::from_secs(120 + acked.len() as u64 / 50);
    let missing = eventually(deadline, "every acknowledged message delivered", || {
        let got = delivered(&app);
        let missing: Vec<String> = acked.iter().filter(|id| !got.contains_key(*id)).cloned().collect();
        async move { missing.is_empty().then_some(missing) }
    })
    .await;
    assert!(missing.is_empty());
    let got = delivered(&app);
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    println!(
        "{} acknowledged, {} delivered at least once, {duplicates} duplicate deliveries, {:.1} s",
        acked.len(),
        acked.iter().filter(|id| got.contains_key(*id)).count(),
        started.elapsed().as_secs_f64()
    );
    drop(sub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_loses_nothing_acknowledged_through_subscriber_kills() {
    let dir = tempfile::tempdir().unwrap();
    run(Broker::Sqlite(dir.path().join("ps.db")), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_loses_nothing_acknowledged_through_subscriber_kills_and_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = PrivateServer::started("the private redis-server", port, redis_server(port, dir.path(), true)).await;
    run(Broker::Redis(format!("127.0.0.1:{port}")), Some(server)).await;
}
