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

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::{Message, MessageHandler, Metadata, Outcome, PubSub, PublishRequest, SubscribeRequest};
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

// After `ensure!`, which the checks use.
#[path = "conformance_checks.rs"]
mod checks;

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
            let v = if $claimed { verdict(checks::$f(&c).await) } else { Verdict::NotClaimed };
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

#[cfg(test)]
#[path = "conformance_tests.rs"]
mod tests;
