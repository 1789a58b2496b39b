//! After start (issue 10 B.8), through the real binary against PRIVATE servers this test starts,
//! kills and restarts (never the shared ones): the host probes its component, shows it failing
//! in `/v1.0/metadata` after `--component-health-threshold` failures, leaves `/v1.0/healthz`
//! alone, reconnects in place when the backend is back, and a request in flight across the
//! outage still completes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::private_server::{redis_server, PrivateServer};
use crate::harness::{eventually, free_port, Sidecar, SidecarBuilder};

/// Probe fast, report after two failures.
const PROBE: [&str; 4] = ["--component-health-probe-interval", "300ms", "--component-health-threshold", "2"];

fn component(name: &str, type_name: &str, metadata: &[(&str, &str)]) -> String {
    let mut y = format!("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {type_name}\n  version: v1\n  initTimeout: 2s\n  metadata:\n");
    for (k, v) in metadata {
        y.push_str(&format!("  - name: {k}\n    value: \"{v}\"\n"));
    }
    y
}

async fn metadata(sc: &Sidecar) -> Value {
    sc.client.get(sc.url("/v1.0/metadata")).send().await.unwrap().json().await.unwrap()
}

async fn healthz(sc: &Sidecar) -> u16 {
    sc.client.get(sc.url("/v1.0/healthz")).send().await.unwrap().status().as_u16()
}

/// Waits until `/v1.0/metadata` shows `name` failing; returns the status text. Health stays 204
/// and the component stays registered throughout.
async fn until_failing(sc: &Sidecar, name: &str) -> String {
    let key = format!("rapr.component.{name}");
    let status = eventually(Duration::from_secs(20), "the component to show failing", || async {
        metadata(sc).await["extended"][&key].as_str().map(str::to_string)
    })
    .await;
    assert!(status.starts_with("failing: "), "{status}");
    assert_eq!(healthz(sc).await, 204, "a backend outage after start leaves health alone");
    let m = metadata(sc).await;
    assert!(m["components"].as_array().unwrap().iter().any(|c| c["name"] == name), "still registered: {m}");
    status
}

async fn until_ready(sc: &Sidecar, name: &str) {
    let key = format!("rapr.component.{name}");
    eventually(Duration::from_secs(30), "the component to reconnect", || async { metadata(sc).await["extended"].get(&key).is_none().then_some(()) }).await;
}

async fn save(sc: &Sidecar, store: &str, key: &str, value: Value) -> u16 {
    let r = sc.client.post(sc.url(&format!("/v1.0/state/{store}"))).json(&json!([{ "key": key, "value": value }])).send().await.unwrap();
    r.status().as_u16()
}

async fn read(sc: &Sidecar, store: &str, key: &str) -> String {
    sc.client.get(sc.url(&format!("/v1.0/state/{store}/{key}"))).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn a_redis_outage_after_start_shows_in_metadata_and_heals_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut redis = PrivateServer::started("the private redis-server", port, redis_server(port, dir.path(), false)).await;
    let host = format!("127.0.0.1:{port}");
    let sc = SidecarBuilder::new("health-redis")
        .file("rs.yaml", &component("rs", "state.redis", &[("redisHost", &host), ("readTimeout", "30s")]))
        .memory("mem")
        .args(&PROBE)
        .args(&["--component-call-timeout", "30s"])
        .start()
        .await;
    assert_eq!(save(&sc, "rs", "before", json!(1)).await, 204);

    // Frozen: probes time out; a save sent now waits in the server's socket.
    redis.signal("STOP");
    let in_flight = {
        let (client, url) = (sc.client.clone(), sc.url("/v1.0/state/rs"));
        tokio::spawn(async move { client.post(url).json(&json!([{ "key": "across", "value": 2 }])).send().await.unwrap().status().as_u16() })
    };
    let status = until_failing(&sc, "rs").await;
    assert!(!in_flight.is_finished(), "the save waits for the frozen server");
    assert_eq!(save(&sc, "mem", "k", json!(1)).await, 204, "other components serve throughout");
    redis.signal("CONT");
    assert_eq!(in_flight.await.unwrap(), 204, "the request in flight across the outage completes ({status})");
    until_ready(&sc, "rs").await;
    assert_eq!(read(&sc, "rs", "across").await, "2");

    // Killed and restarted empty: failing with the connection error, then reconnected in place.
    redis.kill();
    let status = until_failing(&sc, "rs").await;
    assert!(status.len() > "failing: ".len(), "the error is shown: {status}");
    redis.start().await;
    until_ready(&sc, "rs").await;
    assert_eq!(save(&sc, "rs", "after", json!(3)).await, 204, "{}", sc.logs());
    assert_eq!(read(&sc, "rs", "after").await, "3");
    let logs = sc.logs();
    assert!(logs.contains("component is failing; reconnecting in place"), "{logs}");
}

/// A private PostgreSQL cluster in a temp dir, run as the `postgres` user (initdb refuses root).
fn postgres_server(port: u16, data: &Path) -> Box<dyn Fn() -> Child + Send> {
    let data = data.to_path_buf();
    Box::new(move || {
        Command::new("setpriv")
            .args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--", "postgres", "-D"])
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c"])
            .arg(format!("unix_socket_directories={}", data.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres")
    })
}

fn init_cluster(root: &Path) -> std::path::PathBuf {
    let data = root.join("data");
    assert!(Command::new("chown").arg("postgres:postgres").arg(root).status().unwrap().success());
    let out = Command::new("setpriv")
        .args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--", "initdb", "-A", "trust", "-U", "postgres", "-D"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
    data
}

#[tokio::test]
async fn a_postgresql_outage_after_start_shows_in_metadata_and_heals_in_place() {
    let root = tempfile::tempdir().unwrap();
    let data = init_cluster(root.path());
    let port = free_port();
    let mut pg = PrivateServer::started("the private PostgreSQL", port, postgres_server(port, &data)).await;
    let conn = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let sc = SidecarBuilder::new("health-pg")
        .file("pg.yaml", &component("pg", "state.postgresql", &[("connectionString", &conn), ("timeout", "5s")]))
        .args(&PROBE)
        .args(&["--component-call-timeout", "10s"])
        .start()
        .await;
    assert_eq!(save(&sc, "pg", "before", json!(1)).await, 204);

    // Killed (the whole server: SIGQUIT is PostgreSQL's immediate shutdown) and restarted.
    pg.stop_with("QUIT");
    let status = until_failing(&sc, "pg").await;
    assert!(status.len() > "failing: ".len(), "the error is shown: {status}");
    pg.start().await;
    until_ready(&sc, "pg").await;
    assert_eq!(save(&sc, "pg", "after", json!(2)).await, 204, "{}", sc.logs());
    assert_eq!(read(&sc, "pg", "after").await, "2");
    assert_eq!(read(&sc, "pg", "before").await, "1", "the data survived the restart");
}
