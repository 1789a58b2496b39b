//! `pubsub-bulk`: bulk-publish throughput on the embedded broker (pubsub.sqlite, WAL,
//! `synchronous=NORMAL`): `--connections` callers each sending `BULK_BATCH` entries per request
//! back to back (closed loop: throughput, not latency at a rate) for `--duration` after
//! `--warmup`, through the sidecar's `POST /v1.0-alpha1/publish/bulk/ps/<topic>` and, as the
//! baseline, `SqliteBroker::bulk_publish` in this process (one transaction per batch either way).
//! Reported as entries per second (median over the rounds) and the sidecar's CPU per entry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::Method;

use super::callers::{self, HttpShape};
use super::loadgen::{CallFuture, Caller, Connect};
use super::procs::{Proc, Usage};
use super::pubsub::{payload_with_id, unique, PUBSUB};
use super::pubsub_direct::Broker;
use super::Ctx;
use crate::components::pubsub::{BulkEntry, BulkPublishRequest, PubSub};

/// Entries per bulk request.
pub const BULK_BATCH: usize = 100;

/// Runs the scenario; its results are note lines.
pub async fn run(ctx: &Ctx) -> Result<Vec<String>, String> {
    let topic = unique("bulk");
    let res = ctx.dir.join("pubsub-bulk-resources");
    std::fs::create_dir_all(&res).map_err(|e| e.to_string())?;
    std::fs::write(res.join("pubsub.yaml"), super::pubsub::component(ctx, "sqlite", "pubsub-bulk-sidecar.db")?).map_err(|e| e.to_string())?;
    let sc = ctx.sidecar("bench-pubsub-bulk", &res, &[]).await?;
    let base = Broker::open(ctx, "sqlite", "bulk").await?;
    let Broker::Sqlite { broker, topic: direct_topic } = &base else {
        return Err("the bulk baseline is the embedded broker".into());
    };
    let entry = payload_with_id(0, ctx.args.payload);
    let entries: Vec<serde_json::Value> = (0..BULK_BATCH)
        .map(|i| serde_json::json!({"entryId": i.to_string(), "event": serde_json::from_slice::<serde_json::Value>(&entry).unwrap_or_default(), "contentType": "application/json"}))
        .collect();
    let body = Bytes::from(serde_json::Value::Array(entries).to_string());
    let via_sidecar = callers::http(sc.http, HttpShape { method: Method::POST, path: format!("/v1.0-alpha1/publish/bulk/{PUBSUB}/{topic}"), body, content_type: Some("application/json") });
    let (b, t, e) = (Arc::clone(broker), direct_topic.clone(), entry.clone());
    let direct: Connect = Arc::new(move || {
        let caller = DirectBulk { broker: Arc::clone(&b), topic: t.clone(), entry: e.clone() };
        Box::pin(async move { Ok(Box::new(caller) as Box<dyn Caller>) })
    });
    let (mut direct_rates, mut sidecar_rates, mut cpu_us) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ctx.args.rounds {
        let (rate, _) = closed_loop(ctx, &format!("pubsub-bulk sqlite direct round {}/{}", round + 1, ctx.args.rounds), direct.clone(), &[]).await?;
        direct_rates.push(rate);
        let (rate, cpu) = closed_loop(ctx, &format!("pubsub-bulk sqlite rapr http round {}/{}", round + 1, ctx.args.rounds), via_sidecar.clone(), &[&sc.proc]).await?;
        sidecar_rates.push(rate);
        cpu_us.push(if rate > 0.0 { cpu / 100.0 * 1e6 / rate } else { f64::NAN });
    }
    base.cleanup().await;
    let how = format!("batch {BULK_BATCH} × {} B, {} connections closed loop, sqlite WAL synchronous=NORMAL", ctx.args.payload, ctx.args.connections);
    Ok(vec![
        format!("bulk publish sqlite direct (SqliteBroker::bulk_publish): {:.0} entries/s ({how})", median(direct_rates)),
        format!("bulk publish sqlite rapr http: {:.0} entries/s, sidecar CPU per entry {:.1} µs ({how})", median(sidecar_rates), median(cpu_us)),
    ])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Every connection sending back to back; (entries per second, CPU % of `measured`) over the
/// measured window. Any failed request fails the scenario: throughput of errors is no figure.
async fn closed_loop(ctx: &Ctx, what: &str, connect: Connect, measured: &[&Proc]) -> Result<(f64, f64), String> {
    eprintln!("  {what}");
    let mut callers = Vec::new();
    for _ in 0..ctx.args.connections.max(1) {
        callers.push(connect().await?);
    }
    let begin = Instant::now();
    let (from, end) = (begin + ctx.args.warmup(), begin + ctx.args.warmup() + ctx.args.duration());
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for mut c in callers {
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                c.call().await?;
                if Instant::now() >= from {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<_, String>(())
        }));
    }
    tokio::time::sleep_until(from.into()).await;
    let usage = Usage::begin(measured);
    for t in tasks {
        t.await.map_err(|e| format!("bulk task failed: {e}"))??;
    }
    let secs = from.elapsed().as_secs_f64().max(1e-9);
    let cpu: f64 = usage.finish(measured).iter().map(|u| u.cpu_pct).sum();
    let requests = done.load(Ordering::Relaxed) as f64;
    Ok((requests * BULK_BATCH as f64 / secs, cpu))
}

struct DirectBulk {
    broker: Arc<crate::components::pubsub::sqlite::SqliteBroker>,
    topic: String,
    entry: Bytes,
}

impl Caller for DirectBulk {
    fn call(&mut self) -> CallFuture<'_> {
        Box::pin(async move {
            let entries = (0..BULK_BATCH).map(|i| BulkEntry { entry_id: i.to_string(), data: self.entry.clone(), content_type: "application/json".into(), metadata: HashMap::new() }).collect();
            let failed = self.broker.bulk_publish(BulkPublishRequest { topic: self.topic.clone(), entries, metadata: HashMap::new() }).await.map_err(|e| e.to_string())?;
            match failed.first() {
                None => Ok(()),
                Some(f) => Err(format!("entry {} failed: {}", f.entry_id, f.error)),
            }
        })
    }
}
