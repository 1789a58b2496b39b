//! Real sidecars against `rapr placement`: each reports `host:internal-port` with the app's actor
//! types from `/dapr/config` (only with an actor state store), healthz waits for the first table,
//! and `/v1.0/metadata` shows `actorRuntime` as daprd does.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::placement::{actor_app, PlacementNode, ACTOR_STORE_YAML};
use crate::harness::{eventually, Sidecar, SidecarBuilder};

async fn sidecar(id: &str, node: &PlacementNode, app: u16, store: bool) -> Sidecar {
    let mut b = SidecarBuilder::new(id).args(&["--placement-host-address", &node.address(), "--app-port", &app.to_string()]);
    if store {
        b = b.file("actorstore.yaml", ACTOR_STORE_YAML);
    }
    b.start().await
}

async fn actor_runtime(sc: &Sidecar) -> Value {
    let m: Value = reqwest::get(sc.url("/v1.0/metadata")).await.unwrap().json().await.unwrap();
    m["actorRuntime"].clone()
}

#[tokio::test]
async fn sidecars_register_their_app_s_actor_types() {
    let node = PlacementNode::start(&[]).await;
    let app = actor_app(&["Cat", "Dog"]).await;
    // `start` waits for healthz, which waits for the first table when the app hosts actors.
    let a = sidecar("pl-a", &node, app, true).await;
    let b = sidecar("pl-b", &node, app, true).await;
    let state = eventually(Duration::from_secs(10), "both hosts in the tables", || async {
        let s = node.state().await;
        (s["tables"]["default"]["hosts"].as_array().map(Vec::len) == Some(2)).then_some(s)
    })
    .await;
    let hosts = state["tables"]["default"]["hosts"].as_array().unwrap();
    let ids: Vec<&str> = hosts.iter().map(|h| h["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"pl-a") && ids.contains(&"pl-b"), "{state}");
    for h in hosts {
        assert_eq!(h["entities"], json!(["Cat", "Dog"]));
        assert_eq!(h["api_level"], 20);
        let name = h["name"].as_str().unwrap();
        assert!(name.starts_with("127.0.0.1:"), "host:internal-port: {name}");
    }
    for sc in [&a, &b] {
        let rt = eventually(Duration::from_secs(10), "actorRuntime running", || async {
            let rt = actor_runtime(sc).await;
            (rt["hostReady"] == json!(true)).then_some(rt)
        })
        .await;
        assert_eq!(rt, json!({ "runtimeStatus": "RUNNING", "hostReady": true, "placement": "placement: connected" }));
        // rapr's lease, in the extended metadata (placement gives leases by default).
        let m: Value = reqwest::get(sc.url("/v1.0/metadata")).await.unwrap().json().await.unwrap();
        let lease = m["extended"]["rapr.placement.lease"].as_str().unwrap_or_default().to_string();
        assert!(lease.starts_with("held (") && lease.ends_with(" ms left)"), "{m}");
    }
}

#[tokio::test]
async fn without_an_actor_state_store_the_app_hosts_nothing() {
    let node = PlacementNode::start(&[]).await;
    let app = actor_app(&["Cat"]).await;
    let sc = sidecar("pl-nostore", &node, app, false).await;
    let rt = eventually(Duration::from_secs(10), "connected", || async {
        let rt = actor_runtime(&sc).await;
        (rt["placement"] == json!("placement: connected")).then_some(rt)
    })
    .await;
    assert_eq!(rt["runtimeStatus"], "RUNNING");
    let s = node.state().await;
    assert!(s["tables"]["default"].get("hosts").is_none(), "no host with actor types: {s}");
    assert!(sc.logs().contains("actors: state store is not configured"));
}

#[tokio::test]
async fn healthz_waits_for_placement_when_the_app_hosts_actors() {
    // Placement is not there yet: the sidecar is not healthy, and says why.
    let port = rapr::net_ports::free_port().unwrap();
    let app = actor_app(&["Cat"]).await;
    let sc = SidecarBuilder::new("pl-wait")
        .file("actorstore.yaml", ACTOR_STORE_YAML)
        .args(&["--placement-host-address", &format!("127.0.0.1:{port}"), "--app-port", &app.to_string()])
        .allow_unhealthy()
        .start()
        .await;
    let body = eventually(Duration::from_secs(10), "healthz naming placement", || async {
        let r = reqwest::get(sc.url("/v1.0/healthz")).await.unwrap();
        let body = r.text().await.unwrap();
        body.contains("internal-placement-service").then_some(body)
    })
    .await;
    assert!(body.contains("ERR_HEALTH_NOT_READY"), "{body}");
    let rt = actor_runtime(&sc).await;
    assert_eq!(rt, json!({ "runtimeStatus": "RUNNING", "hostReady": false, "placement": "placement: disconnected" }));
}

#[tokio::test]
async fn without_placement_the_actor_runtime_is_disabled() {
    let sc = SidecarBuilder::new("pl-none").start().await;
    assert_eq!(actor_runtime(&sc).await, json!({ "runtimeStatus": "DISABLED", "hostReady": false, "placement": "placement: disconnected" }));
}

#[tokio::test]
async fn an_unhealthy_app_s_types_leave_placement_until_it_recovers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let node = PlacementNode::start(&[]).await;
    // An actor app whose health endpoint the test switches.
    let healthy = Arc::new(AtomicBool::new(true));
    let h = healthy.clone();
    let app = axum::Router::new()
        .route("/dapr/config", axum::routing::get(|| async { axum::Json(json!({ "entities": ["Cat"] })) }))
        .route("/healthz", axum::routing::get(move || {
            let h = h.clone();
            async move { if h.load(Ordering::SeqCst) { http::StatusCode::OK } else { http::StatusCode::SERVICE_UNAVAILABLE } }
        }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let _sc = SidecarBuilder::new("pl-health")
        .file("actorstore.yaml", ACTOR_STORE_YAML)
        .args(&["--placement-host-address", &node.address(), "--app-port", &port.to_string()])
        .args(&["--enable-app-health-check", "--app-health-probe-interval", "1", "--app-health-threshold", "1", "--app-health-check-path", "/healthz"])
        .start()
        .await;
    let types = || async {
        let s = node.state().await;
        s["tables"]["default"]["hosts"].as_array().and_then(|h| h.first()).map(|h| h["entities"].clone()).unwrap_or(json!(null))
    };
    eventually(Duration::from_secs(10), "Cat placed", || async { (types().await == json!(["Cat"])).then_some(()) }).await;
    healthy.store(false, Ordering::SeqCst);
    eventually(Duration::from_secs(10), "Cat withdrawn while the app is unhealthy", || async { (types().await == json!(null)).then_some(()) }).await;
    healthy.store(true, Ordering::SeqCst);
    eventually(Duration::from_secs(10), "Cat placed again", || async { (types().await == json!(["Cat"])).then_some(()) }).await;
}
