//! A component host restart pauses and resumes delivery (issue 11 B.7), through the binary: a
//! PRIVATE redis-server is frozen (SIGSTOP) until the host's probes declare `pubsub.redis`
//! failing and it starts reconnecting in place; the broker is let go (SIGCONT) while the host
//! builds the fresh instance, which the host publishes while the old one is retired, and the
//! subscription's `Delivery` resubscribes on it. Not the broker client's own reconnect: the test
//! asserts the host's "fresh instance" log line. Every message acknowledged to the publisher
//! (before, during and after the freeze) reaches the app.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use super::app::SubscriberApp;
use super::{component_status, component_yaml, wait_active};
use crate::harness::private_server::{redis_server, PrivateServer};
use crate::harness::{eventually, free_port, Sidecar, SidecarBuilder};

const WAIT: Duration = Duration::from_secs(30);
const REBUILT: &str = "component reconnected with a fresh instance";
const FAILING: &str = "component is failing; reconnecting in place";

/// Publishes `{"n": n}` on `orders`; true when the sidecar acknowledged it (204).
async fn publish(sc: &Sidecar, n: i64) -> bool {
    let r = sc.client.post(sc.url("/v1.0/publish/ps/orders")).json(&json!({ "n": n })).timeout(Duration::from_secs(20)).send().await;
    matches!(r, Ok(r) if r.status().as_u16() == 204)
}

/// The `n`s the app has received.
fn delivered(app: &SubscriberApp) -> BTreeSet<i64> {
    app.received("/in").iter().filter_map(|r| r.json().pointer("/data/n").and_then(Value::as_i64)).collect()
}

#[tokio::test]
async fn a_component_host_restart_pauses_and_resumes_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = PrivateServer::started("the private redis-server", port, redis_server(port, dir.path(), true)).await;
    let app = SubscriberApp::start(json!([])).await;
    // A long init timeout: while the broker is frozen each reconnect attempt waits in init for
    // most of a probe cycle, so the SIGCONT below lands in one and the host's rebuild succeeds.
    let md = [("redisHost", addr.as_str()), ("processingTimeout", "1000"), ("redeliverInterval", "300"), ("dialTimeout", "500"), ("readTimeout", "1s"), ("maxDeliveryCount", "100")];
    let sc = SidecarBuilder::new("pshost-restart")
        .args(&["--app-port", &app.port_arg()])
        .args(&["--component-health-probe-interval", "300ms", "--component-health-threshold", "2"])
        .file("ps.yaml", &component_yaml("ps", "pubsub.redis", "  initTimeout: 8s\n", &md))
        .file("sub.yaml", "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: s-orders\nspec:\n  pubsubname: ps\n  topic: orders\n  routes:\n    default: /in\n")
        .start()
        .await;
    wait_active(&sc, "ps", "orders").await;
    let mut acked = BTreeSet::new();
    let mut n = 0;
    for _ in 0..5 {
        n += 1;
        assert!(publish(&sc, n).await, "publish {n} before the freeze");
        acked.insert(n);
    }
    eventually(WAIT, "the messages published before the freeze delivered", || async { acked.is_subset(&delivered(&app)).then_some(()) }).await;

    // Freeze until the host reconnects. Should the broker's answers come back while the host
    // is between a failed probe and its rebuild (the old instance answers again, no rebuild),
    // freeze again: the test stops only once the host really built a fresh instance.
    let mut during = Vec::new();
    let mut attempts = 0;
    while !sc.logs().contains(REBUILT) {
        attempts += 1;
        assert!(attempts <= 3, "the host never rebuilt the component: {}", sc.logs());
        server.signal("STOP");
        let failing = eventually(WAIT, "ps to show failing", || async { component_status(&sc, "ps").await.filter(|s| s.starts_with("failing")) }).await;
        // Publishes while frozen: each is acknowledged or refused; none may be lost once acked.
        for _ in 0..3 {
            n += 1;
            let (client, url, k) = (sc.client.clone(), sc.url("/v1.0/publish/ps/orders"), n);
            during.push(tokio::spawn(async move {
                let r = client.post(url).json(&json!({ "n": k })).timeout(Duration::from_secs(20)).send().await;
                (k, matches!(r, Ok(r) if r.status().as_u16() == 204))
            }));
        }
        // The next probe's ping times out (300 ms) and its rebuild waits in init (up to 8 s).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        server.signal("CONT");
        eventually(WAIT, "ps to be ready again", || async { component_status(&sc, "ps").await.is_none().then_some(()) }).await;
        println!("freeze {attempts}: {failing}");
    }
    for d in during {
        let (k, ok) = d.await.unwrap();
        if ok {
            acked.insert(k);
        }
    }
    let logs = sc.logs();
    assert!(logs.contains(FAILING), "the host declared the component failing: {logs}");
    for _ in 0..5 {
        n += 1;
        assert!(publish(&sc, n).await, "publish {n} after the host restart: {}", sc.logs());
        acked.insert(n);
    }
    eventually(WAIT, "every acknowledged message delivered", || async { acked.is_subset(&delivered(&app)).then_some(()) }).await;
    // Delivery resumed on the fresh instance: the subscription is active again, and the
    // messages published after the rebuild arrived through it.
    wait_active(&sc, "ps", "orders").await;
    let got = delivered(&app);
    println!("acknowledged {} messages ({acked:?}), delivered {} distinct ({} deliveries)", acked.len(), got.len(), app.received("/in").len());
}
