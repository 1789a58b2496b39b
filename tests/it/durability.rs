//! Kill -9 durability: a stream of at least 1,000 acknowledged saves and transactions with
//! requests in flight when SIGKILL lands; after a restart on the same backend every acknowledged
//! write is there. Runs on SQLite, PostgreSQL and MariaDB.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::backends::Backend;
use crate::harness::{eventually, SidecarBuilder};

const WORKERS: usize = 16;
const MIN_ACKED: usize = 1_000;

async fn kill9_loses_nothing_acknowledged(backend: Backend) {
    let sc = SidecarBuilder::new("durable").file("store.yaml", &backend.yaml("store")).start().await;
    let url = sc.url("/v1.0/state/store");
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<(String, i64)>();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (client, url, ack, in_flight, stop) = (sc.client.clone(), url.clone(), ack_tx.clone(), in_flight.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let (path, body, keys) = if i % 3 == 0 {
                    let (a, b) = (format!("w{w}-t{i}-a"), format!("w{w}-t{i}-b"));
                    let body = json!({"operations": [
                        {"operation": "upsert", "request": {"key": a, "value": i}},
                        {"operation": "upsert", "request": {"key": b, "value": i}},
                    ]});
                    (format!("{url}/transaction"), body, vec![a, b])
                } else {
                    let k = format!("w{w}-s{i}");
                    (url.clone(), json!([{"key": k, "value": i}]), vec![k])
                };
                in_flight.fetch_add(1, Ordering::SeqCst);
                let r = client.post(&path).json(&body).timeout(Duration::from_secs(10)).send().await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                match r {
                    Ok(r) if r.status() == 204 => keys.into_iter().for_each(|k| {
                        let _ = ack.send((k, i));
                    }),
                    // The sidecar is gone: stop this worker.
                    _ => break,
                }
            }
        }));
    }
    drop(ack_tx);
    let mut acked: BTreeMap<String, i64> = BTreeMap::new();
    while acked.len() < MIN_ACKED {
        let (k, v) = tokio::time::timeout(Duration::from_secs(60), ack_rx.recv()).await.expect("writes stalled").expect("workers stopped early");
        acked.insert(k, v);
    }
    let flying = in_flight.load(Ordering::SeqCst);
    kill(Pid::from_raw(sc.pid() as i32), Signal::SIGKILL).unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    while let Ok((k, v)) = ack_rx.try_recv() {
        acked.insert(k, v);
    }
    assert!(flying > 0, "the kill must land with requests in flight");
    assert!(acked.len() >= MIN_ACKED);
    drop(sc);

    let sc = SidecarBuilder::new("durable").file("store.yaml", &backend.yaml("store")).start().await;
    let keys: Vec<&String> = acked.keys().collect();
    let r = sc.client.post(sc.url("/v1.0/state/store/bulk")).json(&json!({ "keys": keys })).send().await.unwrap();
    assert_eq!(r.status(), 200, "bulk read after restart");
    let items: Vec<Value> = r.json().await.unwrap();
    // Every acknowledged key must come back (present or not), before its value is checked: a
    // bulk answer that leaves keys out would otherwise hide their loss.
    let returned: BTreeMap<&str, usize> = items.iter().fold(BTreeMap::new(), |mut m, it| {
        *m.entry(it["key"].as_str().unwrap_or_default()).or_default() += 1;
        m
    });
    let missing: Vec<&String> = acked.keys().filter(|k| !returned.contains_key(k.as_str())).collect();
    assert!(missing.is_empty(), "the bulk read left out {} acknowledged keys, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
    assert_eq!(items.len(), acked.len(), "one bulk item per key asked: {:?}", returned.iter().filter(|(_, n)| **n > 1).take(5).collect::<Vec<_>>());
    let lost: Vec<String> = items
        .iter()
        .filter(|it| it["data"].as_i64() != acked.get(it["key"].as_str().unwrap_or_default()).copied())
        .map(|it| it.to_string())
        .collect();
    println!("{}: {} acknowledged writes, {flying} requests in flight at SIGKILL, {} lost", backend.label(), acked.len(), lost.len());
    assert!(lost.is_empty(), "{} acknowledged writes lost after kill -9, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]);
    // The restarted sidecar keeps working on the same data.
    let r = sc.client.post(sc.url("/v1.0/state/store")).json(&json!([{"key": "after", "value": 1}])).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let url = sc.url("/v1.0/state/store/after");
    eventually(Duration::from_secs(5), "read after restart", || async { (sc.client.get(&url).send().await.ok()?.status() == 200).then_some(()) }).await;
    backend.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_survives_kill_9() {
    kill9_loses_nothing_acknowledged(Backend::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_survives_kill_9() {
    kill9_loses_nothing_acknowledged(Backend::postgres()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_survives_kill_9() {
    kill9_loses_nothing_acknowledged(Backend::mysql()).await;
}

/// A value larger than the backend accepts (MariaDB's `max_allowed_packet`, 16 MiB here) gets a
/// clear error naming the store, and the sidecar keeps serving.
#[tokio::test]
async fn a_value_too_large_for_mariadb_is_a_clear_error() {
    let backend = Backend::mysql();
    let sc = SidecarBuilder::new("bigvalue").file("store.yaml", &backend.yaml("store")).args(&["--max-body-size", "64Mi"]).start().await;
    let big = format!(r#"[{{"key":"big","value":"{}"}}]"#, "x".repeat(20 * 1024 * 1024));
    let r = sc.client.post(sc.url("/v1.0/state/store")).body(big).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errorCode"], "ERR_STATE_SAVE");
    assert!(body["message"].as_str().unwrap().starts_with("failed saving state in state store store: "), "{body}");
    let r = sc.client.post(sc.url("/v1.0/state/store")).json(&json!([{"key": "small", "value": 1}])).send().await.unwrap();
    assert_eq!(r.status(), 204, "the store keeps serving");
    backend.cleanup().await;
}
