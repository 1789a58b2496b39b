//! `publish`, `pubsub-e2e` and `pubsub-bulk`: pub/sub through the sidecar on each of `--brokers`
//! (pubsub.redis on `--redis`, pubsub.sqlite on a file in the scratch folder), each against the
//! same broker driven directly in the same run (`pubsub_direct`).
//!
//! - `publish`: `POST /v1.0/publish/ps/<topic>` of `--payload` bytes; the baseline is the
//!   broker's own write (Redis `XADD ... data <payload> metadata {}` as the component writes it,
//!   SQLite `SqliteBroker::publish` in this process).
//! - `pubsub-e2e`: a publish through the sidecar until the subscriber app (served in this process,
//!   answering `{"status":"SUCCESS"}`) holds it, via a declarative Subscription on the same
//!   sidecar; the baseline is the broker's publish→consume round trip with its Rust client.
//! - `pubsub-bulk`: closed-loop bulk publish of `BULK_BATCH` entries per request on the embedded
//!   broker, entries per second (`pubsub_bulk`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use http::Method;

use super::callers::{self, HttpShape};
use super::loadgen::{CallFuture, Caller, Connect};
use super::pubsub_direct as direct;
use super::report::Row;
use super::sidecar::Sidecar;
use super::{Ctx, Variant};

/// The component name every scenario publishes to.
pub const PUBSUB: &str = "ps";
/// How long a published message may take to reach the subscriber before it counts as an error.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages published and not yet received, by their `bid` (bench id). A concurrent map, not a
/// process: every generator connection and the subscriber's handler touch it once per message,
/// and a mailbox hop would add its own latency to the figure being measured.
#[derive(Default, Clone)]
pub struct Waiters {
    next: Arc<AtomicU64>,
    pending: Arc<DashMap<u64, tokio::sync::oneshot::Sender<()>>>,
}

impl Waiters {
    /// A fresh id and the receiver that fires when a message carrying it arrives.
    pub fn register(&self) -> (u64, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.pending.insert(id, tx);
        (id, rx)
    }

    /// Fires the waiter of the message in `body` (a CloudEvent with `data.bid`, or the raw
    /// payload with `bid`); unknown or malformed bodies are ignored (late warm-up deliveries).
    pub fn arrived(&self, body: &[u8]) {
        let Some(id) = bench_id(body) else { return };
        if let Some((_, tx)) = self.pending.remove(&id) {
            let _ = tx.send(());
        }
    }

    /// Forgets `id` (its caller gave up).
    pub fn forget(&self, id: u64) {
        self.pending.remove(&id);
    }
}

fn bench_id(body: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("bid").or_else(|| v.get("data").and_then(|d| d.get("bid"))).and_then(|b| b.as_u64())
}

/// A JSON payload of about `size` bytes carrying `bid`.
pub fn payload_with_id(id: u64, size: usize) -> Bytes {
    let head = format!("{{\"bid\":{id},\"pad\":\"");
    let pad = size.saturating_sub(head.len() + 2);
    let mut s = String::with_capacity(size);
    s.push_str(&head);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    Bytes::from(s)
}

/// A topic name unique to this run.
pub fn unique(prefix: &str) -> String {
    format!("bench-{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The component YAML of `broker`.
pub fn component(ctx: &Ctx, broker: &str, file: &str) -> Result<String, String> {
    let (kind, md) = match broker {
        // Trimmed like the baseline's XADD, so a long run does not grow the shared Redis.
        "redis" => ("pubsub.redis", format!("  - name: redisHost\n    value: \"{}\"\n  - name: maxLenApprox\n    value: \"{}\"\n", ctx.args.redis, direct::MAXLEN)),
        "sqlite" => ("pubsub.sqlite", format!("  - name: connectionString\n    value: \"{}\"\n", ctx.dir.join(file).display())),
        other => return Err(format!("unknown broker {other:?}: use redis or sqlite")),
    };
    Ok(format!("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {PUBSUB}\nspec:\n  type: {kind}\n  version: v1\n  metadata:\n{md}"))
}

/// A sidecar with `broker` as `ps`, and `extra_files` (subscriptions) beside it.
async fn sidecar(ctx: &Ctx, scenario: &str, broker: &str, extra_files: &[(&str, String)], flags: &[String]) -> Result<Sidecar, String> {
    let res = ctx.dir.join(format!("{scenario}-{broker}-resources"));
    std::fs::create_dir_all(&res).map_err(|e| e.to_string())?;
    std::fs::write(res.join("pubsub.yaml"), component(ctx, broker, &format!("{scenario}-sidecar.db"))?).map_err(|e| e.to_string())?;
    for (name, text) in extra_files {
        std::fs::write(res.join(name), text).map_err(|e| e.to_string())?;
    }
    ctx.sidecar(&format!("bench-{scenario}-{broker}"), &res, flags).await
}

/// `publish`: publish latency through the sidecar and directly, per broker.
pub async fn run_publish(ctx: &Ctx) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for broker in &ctx.args.brokers {
        let sc = sidecar(ctx, "publish", broker, &[], &[]).await?;
        let topic = unique("publish");
        let payload = payload_with_id(0, ctx.args.payload);
        let base = direct::Broker::open(ctx, broker, "publish").await?;
        let shape = HttpShape { method: Method::POST, path: format!("/v1.0/publish/{PUBSUB}/{topic}"), body: payload.clone(), content_type: Some("application/json") };
        let variants = vec![
            Variant::new("direct", base.publisher(payload.clone()), vec![], "client only"),
            Variant::new("rapr http", callers::http(sc.http, shape), vec![&sc.proc], "sidecar"),
        ];
        let r = ctx.rounds(&format!("publish {broker}"), &variants).await;
        base.cleanup().await;
        rows.append(&mut r?);
    }
    Ok(rows)
}

/// `pubsub-e2e`: publish → the app holds it, through one sidecar and directly, per broker.
pub async fn run_e2e(ctx: &Ctx) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for broker in &ctx.args.brokers {
        let waiters = Waiters::default();
        let app = direct::SubscriberApp::start(waiters.clone()).await?;
        let topic = unique("e2e");
        let sub = format!("apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: bench-e2e\nspec:\n  pubsubname: {PUBSUB}\n  topic: {topic}\n  routes:\n    default: /events\n");
        let sc = sidecar(ctx, "pubsub-e2e", broker, &[("subscription.yaml", sub)], &["--app-port".into(), app.port.to_string()]).await?;
        let base = direct::Broker::open(ctx, broker, "e2e").await?;
        let base_waiters = Waiters::default();
        let consumer = base.consume(base_waiters.clone()).await?;
        let via_sidecar = round_trip(waiters.clone(), ctx.args.payload, format!("/v1.0/publish/{PUBSUB}/{topic}"), sc.http);
        let variants = vec![
            Variant::new("direct", base.round_trip(base_waiters.clone(), ctx.args.payload), vec![], "client only"),
            Variant::new("rapr http", via_sidecar, vec![&sc.proc], "sidecar"),
        ];
        let r = ctx.rounds(&format!("pubsub-e2e {broker}"), &variants).await;
        consumer.cancel();
        base.cleanup().await;
        drop(app);
        rows.append(&mut r?);
    }
    Ok(rows)
}

/// Publishes through the sidecar's HTTP port (`path`) and waits for the app to receive it.
fn round_trip(waiters: Waiters, size: usize, path: String, port: u16) -> Connect {
    Arc::new(move || {
        let (waiters, path) = (waiters.clone(), path.clone());
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(std::net::SocketAddr::from(([127, 0, 0, 1], port))).await.map_err(|e| format!("connecting to {port}: {e}"))?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(Box::new(E2eHttp { sender, waiters, size, path, host: format!("127.0.0.1:{port}") }) as Box<dyn Caller>)
        })
    })
}

struct E2eHttp {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>,
    waiters: Waiters,
    size: usize,
    path: String,
    host: String,
}

impl E2eHttp {
    async fn publish(&mut self, body: Bytes) -> Result<(), String> {
        use http_body_util::BodyExt as _;
        let req = http::Request::builder()
            .method(Method::POST)
            .uri(self.path.as_str())
            .header(http::header::HOST, self.host.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(body))
            .map_err(|e| e.to_string())?;
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let resp = self.sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)])));
        }
        Ok(())
    }
}

impl Caller for E2eHttp {
    fn call(&mut self) -> CallFuture<'_> {
        Box::pin(async move {
            let (id, rx) = self.waiters.register();
            if let Err(e) = self.publish(payload_with_id(id, self.size)).await {
                self.waiters.forget(id);
                return Err(e);
            }
            await_delivery(&self.waiters, id, rx).await
        })
    }
}

/// Waits for message `id` to arrive, up to `DELIVERY_TIMEOUT`.
pub async fn await_delivery(waiters: &Waiters, id: u64, rx: tokio::sync::oneshot::Receiver<()>) -> Result<(), String> {
    match tokio::time::timeout(DELIVERY_TIMEOUT, rx).await {
        Ok(Ok(())) => Ok(()),
        _ => {
            waiters.forget(id);
            Err(format!("message {id} not delivered within {DELIVERY_TIMEOUT:?}"))
        }
    }
}

/// "CPU per message" lines: the sidecar's CPU (median) divided by its messages per second.
pub fn cpu_per_message(rows: &[Row], per_request: f64) -> Vec<String> {
    rows.iter()
        .filter(|r| r.variant.starts_with("rapr"))
        .map(|r| {
            let (cpu, qps) = (r.median(|s| s.cpu_pct), r.median(|s| s.qps));
            let us = if qps > 0.0 { cpu / 100.0 * 1e6 / (qps * per_request) } else { f64::NAN };
            format!("sidecar CPU per message {} {}: {us:.0} µs", r.scenario, r.variant)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_found_in_a_cloudevent_and_in_the_raw_payload() {
        let p = payload_with_id(42, 1024);
        assert_eq!(p.len(), 1024);
        assert_eq!(bench_id(&p), Some(42));
        let ce = format!("{{\"id\":\"x\",\"data\":{}}}", String::from_utf8_lossy(&p));
        assert_eq!(bench_id(ce.as_bytes()), Some(42));
        assert_eq!(bench_id(b"not json"), None);
    }

    #[tokio::test]
    async fn a_waiter_fires_once_and_an_unknown_id_is_ignored() {
        let w = Waiters::default();
        let (id, rx) = w.register();
        w.arrived(&payload_with_id(id + 100, 64));
        w.arrived(&payload_with_id(id, 64));
        assert!(rx.await.is_ok());
        assert!(w.pending.is_empty());
    }
}
