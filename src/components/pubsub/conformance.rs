//! The broker conformance suite: one set of checks every `PubSub` implementation runs against its
//! real backend, at the trait level, with fresh topic and consumer-group names per check.
//!
//! Each check belongs to a capability. A broker states its [`Capabilities`]; a claimed one always
//! runs (never skipped) and an unclaimed one is reported as such, so `pubsub.in-memory` (no
//! redelivery, no parking, nothing survives a restart, no competing consumers) runs the same
//! suite as the durable brokers. Whether a parked or unacknowledged message is still held is not
//! visible through the trait, so a broker that parks passes a [`Probe`] that asks its storage.
//!
//! The suite owns the broker it is given: it closes it at the end.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::{BulkEntry, BulkPublishRequest, Message, MessageHandler, Metadata, Outcome, PubSub, PublishRequest, SubscribeRequest};
use crate::components::category::BoxFuture;

/// The subscription metadata key naming the consumer group (daprd sets it to the app id).
pub const CONSUMER_ID: &str = "consumerID";

/// How long the suite waits for a message it expects.
const ARRIVAL: Duration = Duration::from_secs(10);

/// What a broker can do; an unclaimed capability's checks are not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `Outcome::Retry` brings the message back, with a growing `delivery_count`.
    pub redelivery: bool,
    /// `Outcome::Park` keeps the message and stops redelivering it.
    pub park: bool,
    /// Unacknowledged messages of a cancelled subscription come back to the next one of its group.
    pub restart: bool,
    /// Subscriptions with one `consumerID` share the messages (each gets some, none twice).
    pub competing_consumers: bool,
    /// One subscription with `concurrencyMode: single` sees a topic's messages in publish order.
    pub ordered: bool,
    /// After `close`, publishing fails, and a bulk publish reports every entry as failed.
    pub closed_refuses: bool,
}

impl Capabilities {
    /// A durable broker (SQLite, Redis Streams): everything.
    pub const DURABLE: Self = Self { redelivery: true, park: true, restart: true, competing_consumers: true, ordered: true, closed_refuses: true };
    /// `pubsub.in-memory`: a bus with nowhere to keep a message.
    pub const IN_MEMORY: Self = Self { redelivery: false, park: false, restart: false, competing_consumers: false, ordered: false, closed_refuses: false };
}

/// Asks the broker's storage whether `(topic, consumer group, message id)` is still held for
/// that group (unacknowledged or parked).
pub type Probe = Arc<dyn Fn(String, String, String) -> BoxFuture<'static, Result<bool, String>> + Send + Sync>;

/// One broker under test.
pub struct Target {
    /// Label in the report.
    pub label: String,
    /// The broker; the suite closes it at the end.
    pub broker: Arc<dyn PubSub>,
    /// What it claims.
    pub caps: Capabilities,
    /// Required when `caps.park` or to check that an acknowledged message is gone.
    pub still_stored: Option<Probe>,
    /// The longest a message the broker redelivers (after `Retry`, or left by a cancelled
    /// subscription) waits: the suite waits this long before asserting "nothing more comes".
    pub redelivery_within: Duration,
    /// Metadata added to every subscription (e.g. the broker's lowered intervals).
    pub subscribe_metadata: Metadata,
}

/// What happened to one check.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Claimed and every assertion held.
    Passed,
    /// Not claimed by the broker; not run.
    NotClaimed,
    /// An assertion failed.
    Failed(String),
}

/// One broker's results, check by check.
#[derive(Debug, Clone)]
pub struct Report {
    /// Broker label.
    pub broker: String,
    /// (check, verdict) in suite order.
    pub results: Vec<(&'static str, Verdict)>,
}

impl Report {
    /// Failures, as "broker: check: reason".
    pub fn failures(&self) -> Vec<String> {
        self.results
            .iter()
            .filter_map(|(c, v)| match v {
                Verdict::Failed(e) => Some(format!("{}: {c}: {e}", self.broker)),
                _ => None,
            })
            .collect()
    }
}

type CheckResult = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)*) => {
        if !$cond {
            return Err(format!($($msg)*));
        }
    };
}

/// Decides the outcome of the n-th delivery (1-based, all payloads) to one recorder.
type Script = Box<dyn Fn(&Message, usize) -> Outcome + Send + Sync>;

/// A handler that reports every delivery to its [`Log`] and answers by its script.
struct Recorder {
    tx: tokio::sync::mpsc::UnboundedSender<Message>,
    count: AtomicUsize,
    script: Script,
    delay: Duration,
}

/// The check's view of what a [`Recorder`] received.
struct Log {
    rx: tokio::sync::mpsc::UnboundedReceiver<Message>,
    seen: Vec<Message>,
}

impl Recorder {
    fn new(delay: Duration, script: impl Fn(&Message, usize) -> Outcome + Send + Sync + 'static) -> (Arc<Self>, Log) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Arc::new(Self { tx, count: AtomicUsize::new(0), script: Box::new(script), delay }), Log { rx, seen: Vec::new() })
    }

    fn acking() -> (Arc<Self>, Log) {
        Self::new(Duration::ZERO, |_, _| Outcome::Ack)
    }
}

impl Log {
    fn seen(&mut self) -> &[Message] {
        while let Ok(m) = self.rx.try_recv() {
            self.seen.push(m);
        }
        &self.seen
    }

    fn len(&mut self) -> usize {
        self.seen().len()
    }

    fn payloads(&mut self) -> Vec<String> {
        self.seen().iter().map(|m| String::from_utf8_lossy(&m.data).into_owned()).collect()
    }

    /// Waits until at least `n` deliveries were recorded.
    async fn wait(&mut self, n: usize, within: Duration, what: &str) -> CheckResult {
        let deadline = Instant::now() + within;
        loop {
            let got = self.len();
            if got >= n {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "{what}: {got} of {n} deliveries after {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[async_trait]
impl MessageHandler for Recorder {
    async fn handle(&self, msg: Message) -> Outcome {
        let nth = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = self.tx.send(msg.clone());
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        (self.script)(&msg, nth)
    }
}

struct Ctx {
    t: Target,
    /// Parent of the running check's subscriptions, cancelled when the check ends.
    subs: CancellationToken,
}

impl Ctx {
    fn topic(&self, check: &str) -> String {
        format!("conformance-{check}-{}", uuid::Uuid::new_v4().simple())
    }

    async fn subscribe(&self, topic: &str, group: &str, extra: &[(&str, &str)], handler: Arc<Recorder>) -> Result<CancellationToken, String> {
        let mut metadata = self.t.subscribe_metadata.clone();
        metadata.insert(CONSUMER_ID.into(), group.into());
        metadata.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let token = self.subs.child_token();
        let req = SubscribeRequest { topic: topic.into(), metadata };
        match tokio::time::timeout(ARRIVAL, self.t.broker.subscribe(req, handler, token.clone())).await {
            Ok(Ok(())) => Ok(token),
            Ok(Err(e)) => Err(format!("subscribe to {topic} as {group}: {e}")),
            Err(_) => Err(format!("subscribe to {topic} as {group} did not return within {ARRIVAL:?}")),
        }
    }

    async fn publish(&self, topic: &str, payload: &str) -> CheckResult {
        let req = PublishRequest { topic: topic.into(), data: Bytes::from(payload.to_string()), content_type: Some("text/plain".into()), metadata: Metadata::new() };
        self.t.broker.publish(req).await.map_err(|e| format!("publish {payload:?} to {topic}: {e}"))
    }

    /// Long enough for anything the broker would redeliver to have come back.
    async fn quiet(&self) {
        tokio::time::sleep(self.t.redelivery_within + Duration::from_millis(300)).await;
    }

    fn end_check(&mut self) {
        self.subs.cancel();
        self.subs = CancellationToken::new();
    }

    async fn stored(&self, topic: &str, group: &str, id: &str) -> Result<bool, String> {
        let probe = self.t.still_stored.as_ref().ok_or("this check needs the broker's still_stored probe")?;
        probe(topic.into(), group.into(), id.into()).await
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn round_trip(c: &Ctx) -> CheckResult {
    let topic = c.topic("rt");
    let (h_rec, mut rec) = Recorder::acking();
    c.subscribe(&topic, "g", &[], h_rec).await?;
    let sent: Vec<String> = (0..3).map(|i| format!("m{i}")).collect();
    for p in &sent {
        c.publish(&topic, p).await?;
    }
    rec.wait(3, ARRIVAL, "round trip").await?;
    ensure!(sorted(rec.payloads()) == sent, "received {:?}, sent {sent:?}", rec.payloads());
    for m in rec.seen() {
        ensure!(m.topic == topic, "message of {topic} delivered with topic {:?}", m.topic);
        ensure!(m.delivery_count <= 1, "a first delivery has delivery_count {}", m.delivery_count);
    }
    Ok(())
}

async fn ack_removes(c: &Ctx) -> CheckResult {
    let topic = c.topic("ack");
    let (h_rec, mut rec) = Recorder::acking();
    c.subscribe(&topic, "g", &[], h_rec).await?;
    c.publish(&topic, "a1").await?;
    c.publish(&topic, "a2").await?;
    rec.wait(2, ARRIVAL, "ack").await?;
    c.quiet().await;
    ensure!(rec.seen().len() == 2, "acknowledged messages came back: {:?}", rec.payloads());
    if c.t.still_stored.is_some() {
        for m in rec.seen() {
            ensure!(!c.stored(&topic, "g", &m.id).await?, "acknowledged message {} is still held for its group", m.id);
        }
    }
    Ok(())
}

async fn retry(c: &Ctx) -> CheckResult {
    let topic = c.topic("retry");
    let (h_rec, mut rec) = Recorder::new(Duration::ZERO, |_, nth| if nth < 3 { Outcome::Retry } else { Outcome::Ack });
    c.subscribe(&topic, "g", &[], h_rec).await?;
    c.publish(&topic, "r").await?;
    rec.wait(3, ARRIVAL + c.t.redelivery_within * 3, "retry").await?;
    c.quiet().await;
    let counts: Vec<u32> = rec.seen().iter().map(|m| m.delivery_count).collect();
    ensure!(counts.len() == 3, "a message acknowledged on its 3rd delivery was delivered {} times", counts.len());
    ensure!(counts == [1, 2, 3], "delivery_count must grow 1, 2, 3 across redeliveries, got {counts:?}");
    Ok(())
}

async fn park(c: &Ctx) -> CheckResult {
    let topic = c.topic("park");
    let (h_rec, mut rec) = Recorder::new(Duration::ZERO, |_, _| Outcome::Park);
    c.subscribe(&topic, "g", &[], h_rec).await?;
    c.publish(&topic, "p").await?;
    rec.wait(1, ARRIVAL, "park").await?;
    c.quiet().await;
    ensure!(rec.seen().len() == 1, "a parked message was delivered again ({} deliveries)", rec.seen().len());
    let id = rec.seen()[0].id.clone();
    ensure!(c.stored(&topic, "g", &id).await?, "parked message {id} is no longer stored");
    Ok(())
}

async fn restart(c: &Ctx) -> CheckResult {
    let topic = c.topic("restart");
    let (h_first, mut first) = Recorder::new(Duration::ZERO, |_, _| Outcome::Retry);
    let sub = c.subscribe(&topic, "g", &[], h_first).await?;
    c.publish(&topic, "s1").await?;
    c.publish(&topic, "s2").await?;
    first.wait(2, ARRIVAL, "before the restart").await?;
    sub.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = first.seen().len();
    c.publish(&topic, "s3").await?;
    let (h_second, mut second) = Recorder::acking();
    c.subscribe(&topic, "g", &[], h_second).await?;
    let deadline = Instant::now() + ARRIVAL + c.t.redelivery_within * 2;
    loop {
        let got: HashSet<String> = second.payloads().into_iter().collect();
        if ["s1", "s2", "s3"].iter().all(|p| got.contains(*p)) {
            break;
        }
        ensure!(Instant::now() < deadline, "the new subscription got {got:?} of s1, s2, s3");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(first.seen().len() == before, "a cancelled subscription still received messages: {:?}", first.payloads());
    Ok(())
}

async fn competing(c: &Ctx) -> CheckResult {
    let topic = c.topic("compete");
    let (h_a, mut a) = Recorder::new(Duration::from_millis(30), |_, _| Outcome::Ack);
    let (h_b, mut b) = Recorder::new(Duration::from_millis(30), |_, _| Outcome::Ack);
    // One message at a time each, so a consumer busy with one leaves the next to the other.
    let single = [("concurrencyMode", "single")];
    c.subscribe(&topic, "shared", &single, h_a).await?;
    c.subscribe(&topic, "shared", &single, h_b).await?;
    let n = 20;
    for i in 0..n {
        c.publish(&topic, &format!("c{i:02}")).await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let deadline = Instant::now() + ARRIVAL;
    while a.seen().len() + b.seen().len() < n {
        ensure!(Instant::now() < deadline, "competing consumers got {} of {n}", a.seen().len() + b.seen().len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.quiet().await;
    let all: Vec<String> = a.payloads().into_iter().chain(b.payloads()).collect();
    let unique: HashSet<&String> = all.iter().collect();
    ensure!(all.len() == n && unique.len() == n, "{n} acknowledged messages gave {} deliveries ({} distinct)", all.len(), unique.len());
    ensure!(!a.seen().is_empty() && !b.seen().is_empty(), "one consumer got everything: {} / {}", a.seen().len(), b.seen().len());
    Ok(())
}

async fn fan_out(c: &Ctx) -> CheckResult {
    let topic = c.topic("fanout");
    let (h_g1, mut g1) = Recorder::acking();
    let (h_g2, mut g2) = Recorder::acking();
    c.subscribe(&topic, "g1", &[], h_g1).await?;
    c.subscribe(&topic, "g2", &[], h_g2).await?;
    let sent: Vec<String> = (0..3).map(|i| format!("f{i}")).collect();
    for p in &sent {
        c.publish(&topic, p).await?;
    }
    g1.wait(3, ARRIVAL, "first group").await?;
    g2.wait(3, ARRIVAL, "second group").await?;
    ensure!(sorted(g1.payloads()) == sent && sorted(g2.payloads()) == sent, "groups got {:?} and {:?}, sent {sent:?}", g1.payloads(), g2.payloads());
    Ok(())
}

async fn order(c: &Ctx) -> CheckResult {
    let topic = c.topic("order");
    let (h_rec, mut rec) = Recorder::acking();
    c.subscribe(&topic, "g", &[("concurrencyMode", "single")], h_rec).await?;
    let sent: Vec<String> = (0..20).map(|i| format!("o{i:02}")).collect();
    for p in &sent {
        c.publish(&topic, p).await?;
    }
    rec.wait(20, ARRIVAL, "order").await?;
    ensure!(rec.payloads() == sent, "delivered out of order: {:?}", rec.payloads());
    Ok(())
}

fn entries(n: usize, tag: &str) -> Vec<BulkEntry> {
    (0..n)
        .map(|i| BulkEntry { entry_id: format!("e{i}"), data: Bytes::from(format!("{tag}{i}")), content_type: "text/plain".into(), metadata: Metadata::new() })
        .collect()
}

async fn bulk(c: &Ctx) -> CheckResult {
    let topic = c.topic("bulk");
    let (h_rec, mut rec) = Recorder::acking();
    c.subscribe(&topic, "g", &[], h_rec).await?;
    let req = BulkPublishRequest { topic: topic.clone(), entries: entries(5, "b"), metadata: Metadata::new() };
    let failed = c.t.broker.bulk_publish(req).await.map_err(|e| format!("bulk publish: {e}"))?;
    ensure!(failed.is_empty(), "bulk publish to a healthy broker failed entries {failed:?}");
    rec.wait(5, ARRIVAL, "bulk").await?;
    let want: Vec<String> = (0..5).map(|i| format!("b{i}")).collect();
    ensure!(sorted(rec.payloads()) == want, "bulk entries delivered as {:?}", rec.payloads());
    Ok(())
}

async fn ping(c: &Ctx) -> CheckResult {
    c.t.broker.ping().await.map_err(|e| format!("ping of a healthy broker: {e}"))
}

/// Runs last: closes the broker.
async fn closed(c: &Ctx) -> CheckResult {
    c.t.broker.close().await;
    let topic = c.topic("closed");
    ensure!(c.publish(&topic, "x").await.is_err(), "publish after close succeeded");
    let req = BulkPublishRequest { topic, entries: entries(3, "x"), metadata: Metadata::new() };
    if let Ok(failed) = c.t.broker.bulk_publish(req).await {
        let ids: Vec<&str> = failed.iter().map(|f| f.entry_id.as_str()).collect();
        ensure!(ids == ["e0", "e1", "e2"], "bulk publish after close must fail every entry by id, failed {ids:?}");
        ensure!(failed.iter().all(|f| !f.error.is_empty()), "a failed entry without a reason: {failed:?}");
    }
    Ok(())
}

fn verdict(r: CheckResult) -> Verdict {
    r.map_or_else(Verdict::Failed, |_| Verdict::Passed)
}

/// Runs the suite against `target`, then closes its broker.
pub async fn run(target: Target) -> Report {
    let caps = target.caps;
    let mut c = Ctx { t: target, subs: CancellationToken::new() };
    let mut results = Vec::new();
    macro_rules! check {
        ($name:literal, $claimed:expr, $f:ident) => {{
            let v = if $claimed { verdict($f(&c).await) } else { Verdict::NotClaimed };
            c.end_check();
            results.push(($name, v));
        }};
    }
    check!("round trip", true, round_trip);
    check!("ack removes", true, ack_removes);
    check!("fan-out", true, fan_out);
    check!("bulk publish", true, bulk);
    check!("ping", true, ping);
    check!("retry", caps.redelivery, retry);
    check!("park", caps.park, park);
    check!("restart", caps.restart, restart);
    check!("competing", caps.competing_consumers, competing);
    check!("order", caps.ordered, order);
    if caps.closed_refuses {
        check!("closed", true, closed);
    } else {
        c.t.broker.close().await;
        results.push(("closed", Verdict::NotClaimed));
    }
    Report { broker: c.t.label.clone(), results }
}

/// A check-by-broker table: `pass`, `FAIL`, or `-` (not claimed).
pub fn matrix(reports: &[Report]) -> String {
    let mut out = String::new();
    let Some(first) = reports.first() else { return out };
    let _ = write!(out, "{:<14}", "check");
    for r in reports {
        let _ = write!(out, "{:<16}", r.broker);
    }
    out.push('\n');
    let by_name: Vec<HashMap<&str, &Verdict>> = reports.iter().map(|r| r.results.iter().map(|(c, v)| (*c, v)).collect()).collect();
    for (check, _) in &first.results {
        let _ = write!(out, "{check:<14}");
        for r in &by_name {
            let cell = match r.get(check) {
                Some(Verdict::Passed) => "pass",
                Some(Verdict::NotClaimed) => "-",
                Some(Verdict::Failed(_)) => "FAIL",
                None => "?",
            };
            let _ = write!(out, "{cell:<16}");
        }
        out.push('\n');
    }
    out
}
