//! The checks of the broker conformance suite, one function per check; `conformance::run`
//! decides which run for a broker's capabilities.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{CheckResult, Ctx, Recorder, ARRIVAL};
use crate::components::pubsub::{BulkEntry, BulkPublishRequest, Metadata, Outcome};

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

pub(super) async fn round_trip(c: &Ctx) -> CheckResult {
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

pub(super) async fn ack_removes(c: &Ctx) -> CheckResult {
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

pub(super) async fn retry(c: &Ctx) -> CheckResult {
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

pub(super) async fn park(c: &Ctx) -> CheckResult {
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

pub(super) async fn restart(c: &Ctx) -> CheckResult {
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

pub(super) async fn competing(c: &Ctx) -> CheckResult {
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

pub(super) async fn fan_out(c: &Ctx) -> CheckResult {
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

pub(super) async fn order(c: &Ctx) -> CheckResult {
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

pub(super) async fn bulk(c: &Ctx) -> CheckResult {
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

pub(super) async fn ping(c: &Ctx) -> CheckResult {
    c.t.broker.ping().await.map_err(|e| format!("ping of a healthy broker: {e}"))
}

/// Runs last: closes the broker.
pub(super) async fn closed(c: &Ctx) -> CheckResult {
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
