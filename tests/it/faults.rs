//! Crash points (`failpoints` feature): the sidecar aborts at an exact step of a save or a
//! transaction; after a restart on the same backend, a crash before commit applied nothing, a
//! crash after commit applied everything, and a transaction is never half applied.
//! Runs on SQLite, PostgreSQL and MariaDB. Also: an init failure point makes the supervisor retry.

#![cfg(feature = "failpoints")]

use std::time::Duration;

use serde_json::{json, Value};

use crate::backends::Backend;
use crate::harness::{Sidecar, SidecarBuilder};

async fn start(backend: &Backend, failpoints: Option<&str>) -> Sidecar {
    let mut b = SidecarBuilder::new("faults").file("store.yaml", &backend.yaml("store"));
    if let Some(fp) = failpoints {
        b = b.env("FAILPOINTS", fp);
    }
    b.start().await
}

async fn value(sc: &Sidecar, key: &str) -> Option<Value> {
    let r = sc.client.get(sc.url(&format!("/v1.0/state/store/{key}"))).send().await.unwrap();
    if r.status() != 200 {
        return None;
    }
    Some(serde_json::from_str(&r.text().await.unwrap()).unwrap())
}

/// What a restart must find after a crash.
#[derive(Clone, Copy, Debug)]
enum Expect {
    NothingApplied,
    AllApplied,
}

async fn crash_transaction_at(backend: &Backend, point: &str, expect: Expect) {
    // Seed a key the transaction deletes, on a sidecar without failpoints.
    let sc = start(backend, None).await;
    let r = sc.client.post(sc.url("/v1.0/state/store")).json(&json!([{"key": "c", "value": "seed"}])).send().await.unwrap();
    assert_eq!(r.status(), 204);
    drop(sc);

    let mut sc = start(backend, Some(&format!("{point}=return"))).await;
    let tx = json!({"operations": [
        {"operation": "upsert", "request": {"key": "a", "value": 1}},
        {"operation": "upsert", "request": {"key": "b", "value": 2}},
        {"operation": "delete", "request": {"key": "c"}},
    ]});
    let r = sc.client.post(sc.url("/v1.0/state/store/transaction")).json(&tx).timeout(Duration::from_secs(10)).send().await;
    assert!(r.is_err(), "{point}: the sidecar must crash before answering, got {r:?}");
    let status = sc.wait_exit(Duration::from_secs(10)).await;
    assert!(!status.success(), "{point}: aborted, not exited cleanly: {status}");
    assert!(sc.logs().contains(&format!("failpoint {point}")), "{point}: the crash happened at the armed point");
    drop(sc);

    let sc = start(backend, None).await;
    let (a, b, c) = (value(&sc, "a").await, value(&sc, "b").await, value(&sc, "c").await);
    match expect {
        Expect::NothingApplied => assert_eq!((a, b, c), (None, None, Some(json!("seed"))), "{}: crash at {point} must apply nothing", backend.label()),
        Expect::AllApplied => assert_eq!((a, b, c), (Some(json!(1)), Some(json!(2)), None), "{}: crash at {point} must keep everything", backend.label()),
    }
}

async fn crash_save_at(backend: &Backend, point: &str, expect: Expect) {
    let mut sc = start(backend, Some(&format!("{point}=return"))).await;
    let r = sc.client.post(sc.url("/v1.0/state/store")).json(&json!([{"key": "s", "value": "x"}])).timeout(Duration::from_secs(10)).send().await;
    assert!(r.is_err(), "{point}: the sidecar must crash before answering");
    sc.wait_exit(Duration::from_secs(10)).await;
    drop(sc);
    let sc = start(backend, None).await;
    let got = value(&sc, "s").await;
    match expect {
        Expect::NothingApplied => assert_eq!(got, None, "{point}"),
        Expect::AllApplied => assert_eq!(got, Some(json!("x")), "{point}"),
    }
}

async fn all_points(make: fn() -> Backend) {
    let label = make().label();
    let cases = [
        ("state:transact:before".to_string(), Expect::NothingApplied),
        (format!("state:{label}:transact:mid"), Expect::NothingApplied),
        (format!("state:{label}:commit:before"), Expect::NothingApplied),
        ("state:transact:after".to_string(), Expect::AllApplied),
    ];
    for (point, expect) in cases {
        let backend = make();
        crash_transaction_at(&backend, &point, expect).await;
        backend.cleanup().await;
    }
    for (point, expect) in [("state:set:before", Expect::NothingApplied), ("state:set:after", Expect::AllApplied)] {
        let backend = make();
        crash_save_at(&backend, point, expect).await;
        backend.cleanup().await;
    }
}

#[tokio::test]
async fn sqlite_crash_points() {
    all_points(Backend::sqlite).await;
}

#[tokio::test]
async fn postgres_crash_points() {
    all_points(Backend::postgres).await;
}

#[tokio::test]
async fn mysql_crash_points() {
    all_points(Backend::mysql).await;
}

#[tokio::test]
async fn an_init_failure_point_fails_then_the_supervisor_retries() {
    // Fail the first two init attempts, then succeed.
    let sc = SidecarBuilder::new("initfail").memory("mem").env("FAILPOINTS", "component:init=2*return(boom)").allow_unhealthy().start().await;
    let url = sc.url("/v1.0/healthz");
    crate::harness::eventually(Duration::from_secs(15), "the component to start after two failed inits", || async {
        (sc.client.get(&url).send().await.ok()?.status() == 204).then_some(())
    })
    .await;
    let logs = sc.logs();
    assert!(logs.matches("failpoint component:init (boom)").count() >= 2, "{logs}");
    let r = sc.client.post(sc.url("/v1.0/state/mem")).json(&json!([{"key": "k", "value": 1}])).send().await.unwrap();
    assert_eq!(r.status(), 204);
}
