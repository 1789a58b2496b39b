//! pubsub.redis through the sidecar (issue 11 C.10): the component loads and is listed, a bad
//! value fails it naming the key while the sidecar keeps serving, and a broker down at start
//! fails it until a PRIVATE redis-server (free port, appendonly on, graceful SHUTDOWN) appears,
//! after which the host's retry brings it up with no restart. The shared server is never stopped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::private_server::PrivateServer;
use crate::harness::{eventually, free_port, Sidecar, SidecarBuilder};

const SHARED: &str = "127.0.0.1:6379";

fn component(name: &str, metadata: &[(&str, &str)]) -> String {
    let mut y = format!("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: pubsub.redis\n  version: v1\n  initTimeout: 2s\n  metadata:\n");
    for (k, v) in metadata {
        y.push_str(&format!("  - name: {k}\n    value: \"{v}\"\n"));
    }
    y
}

/// A private redis-server on `port`: appendonly on, so a graceful SHUTDOWN keeps the streams.
fn redis_server(port: u16, dir: &Path) -> Box<dyn Fn() -> Child + Send> {
    let dir = dir.to_path_buf();
    Box::new(move || {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server")
    })
}

async fn metadata(sc: &Sidecar) -> Value {
    sc.client.get(sc.url("/v1.0/metadata")).send().await.unwrap().json().await.unwrap()
}

async fn status(sc: &Sidecar, name: &str) -> Option<String> {
    metadata(sc).await["extended"][format!("rapr.component.{name}")].as_str().map(str::to_string)
}

fn listed(m: &Value, name: &str) -> Option<Value> {
    m["components"].as_array()?.iter().find(|c| c["name"] == name).cloned()
}

#[tokio::test]
async fn loads_and_is_listed_as_pubsub_redis() {
    let sc = SidecarBuilder::new("psredis-load")
        .file("ps.yaml", &component("ps", &[("redisHost", SHARED), ("processingTimeout", "500"), ("redeliverInterval", "200")]))
        .start()
        .await;
    let m = metadata(&sc).await;
    let c = listed(&m, "ps").unwrap_or_else(|| panic!("ps is listed: {m}"));
    assert_eq!((c["type"].as_str(), c["version"].as_str()), (Some("pubsub.redis"), Some("v1")), "{c}");
    assert_eq!(status(&sc, "ps").await, None, "ready: no status line");
    assert!(!sc.logs().contains("metadata keys not used"), "every key is read: {}", sc.logs());
}

#[tokio::test]
async fn a_bad_value_fails_the_component_naming_the_key() {
    let sc = SidecarBuilder::new("psredis-bad")
        .file("bad.yaml", &component("bad", &[("redisHost", SHARED), ("processingTimeout", "-5")]))
        .file("tls.yaml", &component("tls", &[("redisHost", SHARED), ("enableTLS", "true")]))
        .memory("mem")
        .allow_unhealthy()
        .start()
        .await;
    for (name, key) in [("bad", "processingTimeout"), ("tls", "enableTLS")] {
        let s = eventually(Duration::from_secs(15), "the component to be reported failed", || async { status(&sc, name).await }).await;
        assert!(s.contains(key), "{name}: {s}");
    }
    let r = sc.client.post(sc.url("/v1.0/state/mem")).body(r#"[{"key":"k","value":1}]"#).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204, "the sidecar keeps serving");
}

#[tokio::test]
async fn broker_down_at_start_comes_up_when_redis_appears() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let host = format!("127.0.0.1:{port}");
    let sc = SidecarBuilder::new("psredis-late")
        .file("late.yaml", &component("late", &[("redisHost", &host), ("dialTimeout", "500")]))
        .allow_unhealthy()
        .start()
        .await;
    let s = eventually(Duration::from_secs(15), "late to be reported failed", || async {
        status(&sc, "late").await.filter(|s| s.contains("error connecting to redis"))
    })
    .await;
    assert!(s.contains(&host), "{s}");

    let _server = PrivateServer::started("the private redis-server", port, redis_server(port, dir.path())).await;
    eventually(Duration::from_secs(45), "late to come up", || async { status(&sc, "late").await.is_none().then_some(()) }).await;
    assert!(listed(&metadata(&sc).await, "late").is_some());
    assert!(sc.logs().contains("retrying component"), "the host retried: {}", sc.logs());
}
