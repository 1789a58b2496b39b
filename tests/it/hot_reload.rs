//! Hot reload (daprd v1.18's `HotReload`, on by default): components and declarative
//! subscriptions edited in the resource folder apply in place; a `Resiliency` change or SIGHUP
//! reloads the whole runtime in the same process; a Configuration can switch it off.

use std::time::Duration;

use serde_json::json;

use crate::harness::{eventually, memory_yaml, sqlite_yaml, Sidecar, SidecarBuilder};
use crate::pubsub::app::SubscriberApp;
use crate::pubsub::{component_yaml, wait_active};

const WAIT: Duration = Duration::from_secs(20);

async fn save(sc: &Sidecar, store: &str, key: &str, value: &str) -> reqwest::StatusCode {
    sc.client.post(sc.url(&format!("/v1.0/state/{store}"))).json(&json!([{"key": key, "value": value}])).send().await.unwrap().status()
}

async fn get(sc: &Sidecar, store: &str, key: &str) -> (reqwest::StatusCode, String) {
    let r = sc.client.get(sc.url(&format!("/v1.0/state/{store}/{key}"))).send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

async fn metadata(sc: &Sidecar) -> serde_json::Value {
    sc.client.get(sc.url("/v1.0/metadata")).send().await.unwrap().json().await.unwrap()
}

fn component_names(md: &serde_json::Value) -> Vec<String> {
    md["components"].as_array().map(|a| a.iter().filter_map(|c| c["name"].as_str().map(str::to_string)).collect()).unwrap_or_default()
}

#[tokio::test]
async fn components_added_changed_and_removed_on_disk_apply_in_place() {
    let sc = SidecarBuilder::new("hot-comp").memory("a").start().await;
    let pid = sc.pid();
    let res = sc.resources_dir();
    let md = metadata(&sc).await;
    assert!(md["enabledFeatures"].as_array().unwrap().iter().any(|f| f == "HotReload"), "HotReload is on by default, as daprd v1.18: {md}");
    assert_eq!(save(&sc, "a", "k", "1").await, 204);

    // Added: a new store serves once its file appears.
    std::fs::write(res.join("b.yaml"), memory_yaml("b")).unwrap();
    eventually(WAIT, "store b to be loaded", || async { (save(&sc, "b", "k", "2").await == 204).then_some(()) }).await;
    assert!(component_names(&metadata(&sc).await).contains(&"b".to_string()));

    // Changed: `a` becomes a SQLite store; the in-memory one (with k) is closed.
    std::fs::write(res.join("a.yaml"), sqlite_yaml("a", &res)).unwrap();
    eventually(WAIT, "store a to be a sqlite store", || async {
        let md = metadata(&sc).await;
        md["components"].as_array()?.iter().any(|c| c["name"] == "a" && c["type"] == "state.sqlite").then_some(())
    })
    .await;
    eventually(WAIT, "store a to serve again", || async { (get(&sc, "a", "k").await.0 == 204).then_some(()) }).await;
    assert_eq!(save(&sc, "a", "k", "3").await, 204);
    assert!(res.join("a.db").exists(), "the new spec's file is used");

    // Removed: the store is gone from the API and metadata.
    std::fs::remove_file(res.join("b.yaml")).unwrap();
    eventually(WAIT, "store b to be removed", || async {
        let r = sc.client.post(sc.url("/v1.0/state/b")).json(&json!([{"key": "k", "value": 1}])).send().await.ok()?;
        let body: serde_json::Value = r.json().await.ok()?;
        (body["errorCode"] == "ERR_STATE_STORE_NOT_FOUND").then_some(())
    })
    .await;
    assert!(!component_names(&metadata(&sc).await).contains(&"b".to_string()));
    assert_eq!(get(&sc, "a", "k").await, (reqwest::StatusCode::OK, "\"3\"".to_string()), "an unchanged store keeps serving");
    assert_eq!(sc.pid(), pid);
    assert!(!sc.logs().contains("reloading the runtime"), "components reload in place:\n{}", sc.logs());
}

fn subscription(topic: &str, route: &str) -> String {
    format!("apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: sub\nspec:\n  pubsubname: ps\n  topic: {topic}\n  routes:\n    default: {route}\n")
}

#[tokio::test]
async fn a_subscription_edited_on_disk_moves_delivery_to_its_new_topic() {
    let app = SubscriberApp::start(json!([])).await;
    let sc = SidecarBuilder::new("hot-sub")
        .file("ps.yaml", &component_yaml("ps", "pubsub.in-memory", "", &[]))
        .file("sub.yaml", &subscription("one", "/one"))
        .args(&["--app-port", &app.port_arg()])
        .start()
        .await;
    wait_active(&sc, "ps", "one").await;
    let publish = |topic: &'static str| sc.client.post(sc.url(&format!("/v1.0/publish/ps/{topic}"))).json(&json!({"n": 1})).send();
    assert_eq!(publish("one").await.unwrap().status(), 204);
    app.wait_for("/one", 1, WAIT).await;

    std::fs::write(sc.resources_dir().join("sub.yaml"), subscription("two", "/two")).unwrap();
    wait_active(&sc, "ps", "two").await;
    eventually(WAIT, "the old subscription to be closed", || async {
        metadata(&sc).await["extended"].get("rapr.subscription.ps/one").is_none().then_some(())
    })
    .await;
    assert_eq!(publish("two").await.unwrap().status(), 204);
    app.wait_for("/two", 1, WAIT).await;
    let md = metadata(&sc).await;
    let topics: Vec<&str> = md["subscriptions"].as_array().unwrap().iter().filter_map(|s| s["topic"].as_str()).collect();
    assert_eq!(topics, ["two"], "{md}");

    // Removed: nothing is subscribed any more.
    std::fs::remove_file(sc.resources_dir().join("sub.yaml")).unwrap();
    eventually(WAIT, "the subscription to be removed", || async { metadata(&sc).await.get("subscriptions").is_none().then_some(()) }).await;
    assert_eq!(app.received("/one").len(), 1, "the closed subscription delivered nothing more");
}

/// The whole runtime reloaded: a `state.in-memory` store starts empty again, in the same process,
/// on the same ports.
async fn assert_runtime_reloaded(sc: &Sidecar, pid: u32) {
    eventually(WAIT, "the runtime to reload", || async { sc.logs().contains("runtime reloaded").then_some(()) }).await;
    eventually(WAIT, "the reloaded runtime to serve", || async { (get(sc, "a", "k").await.0 == 204).then_some(()) }).await;
    assert_eq!(sc.pid(), pid);
    assert_eq!(save(sc, "a", "k", "again").await, 204);
}

#[tokio::test]
async fn a_resiliency_change_reloads_the_whole_runtime_in_the_same_process() {
    let sc = SidecarBuilder::new("hot-res").memory("a").start().await;
    let pid = sc.pid();
    assert_eq!(save(&sc, "a", "k", "1").await, 204);
    let resiliency = "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    timeouts:\n      short: 5s\n  targets:\n    components:\n      a:\n        outbound:\n          timeout: short\n";
    std::fs::write(sc.resources_dir().join("resiliency.yaml"), resiliency).unwrap();
    assert_runtime_reloaded(&sc, pid).await;
    assert!(sc.logs().contains("a Resiliency resource changed on disk"), "{}", sc.logs());
}

#[tokio::test]
async fn sighup_reloads_the_whole_runtime_in_the_same_process() {
    let sc = SidecarBuilder::new("hot-hup").memory("a").start().await;
    let pid = sc.pid();
    assert_eq!(save(&sc, "a", "k", "1").await, 204);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    assert_runtime_reloaded(&sc, pid).await;
    // And again: a reloaded runtime reloads too.
    assert_eq!(save(&sc, "a", "k", "2").await, 204);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    eventually(WAIT, "the second reload", || async { (sc.logs().matches("runtime reloaded").count() == 2).then_some(()) }).await;
    eventually(WAIT, "the reloaded runtime to serve", || async { (get(&sc, "a", "k").await.0 == 204).then_some(()) }).await;
}

#[tokio::test]
async fn a_configuration_can_switch_hot_reload_off() {
    let builder = SidecarBuilder::new("hot-off").memory("a");
    let config = builder.dir().join("config.yaml");
    std::fs::write(&config, "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  features:\n  - name: HotReload\n    enabled: false\n").unwrap();
    let sc = builder.args(&["--config", config.to_str().unwrap()]).start().await;
    let md = metadata(&sc).await;
    let features: Vec<&str> = md["enabledFeatures"].as_array().map(|a| a.iter().filter_map(|f| f.as_str()).collect()).unwrap_or_default();
    assert!(!features.contains(&"HotReload"), "{md}");
    assert!(!sc.logs().contains("watching resource folders"), "{}", sc.logs());
    // A change the watcher would pick up within a second (SETTLE is 250 ms) stays unapplied.
    std::fs::write(sc.resources_dir().join("b.yaml"), memory_yaml("b")).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!component_names(&metadata(&sc).await).contains(&"b".to_string()));
}
