//! Resource loading faults: broken YAML, unknown component types and categories, bad metadata,
//! multi-document files, scopes, `--config` and resource kinds rapr does not implement.
//!
//! rapr never exits because a resource is bad (DESIGN.md §5): each test checks that the sidecar
//! keeps serving, what `/v1.0/metadata` reports (`components`, and `extended` entries
//! `rapr.component.<name>` for what did not load), and whether `/v1.0/healthz` is 204 or 500
//! `ERR_HEALTH_NOT_READY`.

use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::harness::{eventually, Sidecar, SidecarBuilder};

fn component(name: &str, type_name: &str, extra: &str) -> String {
    format!("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {type_name}\n  version: v1\n{extra}")
}

async fn metadata(sc: &Sidecar) -> Value {
    let r = sc.client.get(sc.url("/v1.0/metadata")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn extended(m: &Value) -> &Map<String, Value> {
    m["extended"].as_object().expect("extended is an object")
}

/// Names of the registered (ready) components.
fn component_names(m: &Value) -> Vec<String> {
    let mut v: Vec<String> = m["components"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect();
    v.sort();
    v
}

/// The `extended` entry reporting component `name`.
fn component_report(m: &Value, name: &str) -> String {
    extended(m)
        .get(&format!("rapr.component.{name}"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no rapr.component.{name} in {m}"))
        .to_string()
}

async fn assert_not_ready(sc: &Sidecar) {
    let r = sc.client.get(sc.url("/v1.0/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errorCode"], "ERR_HEALTH_NOT_READY", "{body}");
    // Outbound calls still work: the sidecar serves.
    let r = sc.client.get(sc.url("/v1.0/healthz/outbound")).send().await.unwrap();
    assert_eq!(r.status(), 204);
}

async fn assert_ready(sc: &Sidecar) {
    let r = sc.client.get(sc.url("/v1.0/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 204);
}

/// Saves and reads back one key through `store`.
async fn assert_store_works(sc: &Sidecar, store: &str) {
    let r = sc.client.post(sc.url(&format!("/v1.0/state/{store}"))).json(&json!([{"key": "k", "value": {"ok": store}}])).send().await.unwrap();
    assert_eq!(r.status(), 204, "{store}: {}", r.text().await.unwrap());
    let r = sc.client.get(sc.url(&format!("/v1.0/state/{store}/k"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"ok": store}));
}

async fn assert_store_not_found(sc: &Sidecar, store: &str) {
    let r = sc.client.get(sc.url(&format!("/v1.0/state/{store}/k"))).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errorCode"], "ERR_STATE_STORE_NOT_FOUND", "{body}");
    assert_eq!(body["message"], format!("state store {store} is not found"));
}

/// Waits for a log line at `level` holding every one of `words`.
async fn assert_logged(sc: &Sidecar, level: &str, words: &[&str]) {
    eventually(Duration::from_secs(5), &format!("a {level} log line with {words:?}"), || async {
        sc.logs().lines().any(|l| l.contains(level) && words.iter().all(|w| l.contains(w))).then_some(())
    })
    .await;
}

#[tokio::test]
async fn broken_yaml_beside_a_good_component_is_reported_and_the_good_one_serves() {
    let sc = SidecarBuilder::new("app")
        .sqlite("statestore")
        .file("broken.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: [broken\n")
        .allow_unhealthy()
        .start()
        .await;
    assert_store_works(&sc, "statestore").await;
    let m = metadata(&sc).await;
    assert_eq!(component_names(&m), ["statestore"]);
    let broken: Vec<(&String, &Value)> = extended(&m)
        .iter()
        .filter(|(k, v)| k.starts_with("rapr.component.") && (k.contains("broken.yaml") || v.as_str().unwrap_or("").contains("broken.yaml")))
        .collect();
    assert_eq!(broken.len(), 1, "one entry names the broken file: {m}");
    assert!(broken[0].1.as_str().unwrap().starts_with("failed: "), "{m}");
    assert_not_ready(&sc).await;
}

#[tokio::test]
async fn unknown_type_in_an_implemented_category_fails_and_lists_known_types() {
    let sc = SidecarBuilder::new("app")
        .sqlite("statestore")
        .file("bad.yaml", &component("bad", "state.nosuch", ""))
        .allow_unhealthy()
        .start()
        .await;
    let m = metadata(&sc).await;
    assert_eq!(component_names(&m), ["statestore"]);
    let report = component_report(&m, "bad");
    assert!(report.starts_with("failed: "), "{report}");
    assert!(report.contains("state.nosuch"), "{report}");
    for known in ["state.in-memory", "state.sqlite"] {
        assert!(report.contains(known), "known type {known} listed: {report}");
    }
    assert_not_ready(&sc).await;
    let body: Value = sc.client.get(sc.url("/v1.0/healthz")).send().await.unwrap().json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("bad"), "health names the component: {body}");
    assert_store_not_found(&sc, "bad").await;
    assert_store_works(&sc, "statestore").await;
}

#[tokio::test]
async fn unknown_type_with_ignore_errors_keeps_the_sidecar_healthy() {
    // The harness waits for /v1.0/healthz to be 204.
    let sc = SidecarBuilder::new("app")
        .sqlite("statestore")
        .file("bad.yaml", &component("bad", "state.nosuch", "  ignoreErrors: true\n"))
        .start()
        .await;
    assert_ready(&sc).await;
    let m = metadata(&sc).await;
    assert_eq!(component_names(&m), ["statestore"]);
    assert!(component_report(&m, "bad").starts_with("failed: "));
    assert_store_not_found(&sc, "bad").await;
}

#[tokio::test]
async fn unknown_categories_are_reported_unsupported_and_health_stays_204() {
    let sc = SidecarBuilder::new("app")
        .sqlite("statestore")
        .file("llm.yaml", &component("llm", "conversation.ollama", "  metadata:\n  - name: model\n    value: llama3\n"))
        .file("lock.yaml", &component("locks", "lock.redis", "  metadata:\n  - name: redisHost\n    value: localhost:6379\n"))
        .start()
        .await;
    assert_ready(&sc).await;
    let m = metadata(&sc).await;
    assert_eq!(component_names(&m), ["statestore"]);
    for (name, category) in [("llm", "conversation"), ("locks", "lock")] {
        let report = component_report(&m, name);
        assert!(report.starts_with("unsupported: "), "{report}");
        assert!(report.contains(category), "{report}");
    }
    assert_logged(&sc, "level=warning", &["llm", "not implemented"]).await;
    assert_store_works(&sc, "statestore").await;
}

#[tokio::test]
async fn sqlite_without_connection_string_names_component_and_key() {
    let sc = SidecarBuilder::new("app")
        .memory("mem")
        .file("nocs.yaml", &component("nocs", "state.sqlite", "  metadata:\n  - name: tableName\n    value: state\n"))
        .allow_unhealthy()
        .start()
        .await;
    let report = component_report(&metadata(&sc).await, "nocs");
    assert!(report.starts_with("failed: "), "{report}");
    assert!(report.contains("nocs") && report.contains("connectionString"), "{report}");
    assert_not_ready(&sc).await;
    assert_store_works(&sc, "mem").await;
}

#[tokio::test]
async fn sqlite_table_name_with_sql_is_rejected_naming_the_key() {
    let b = SidecarBuilder::new("app").memory("mem");
    let db = b.dir().join("inject.db");
    let extra = format!(
        "  metadata:\n  - name: connectionString\n    value: \"{}\"\n  - name: tableName\n    value: \"x; DROP TABLE y\"\n",
        db.display()
    );
    let sc = b.file("inject.yaml", &component("inject", "state.sqlite", &extra)).allow_unhealthy().start().await;
    let m = metadata(&sc).await;
    assert_eq!(component_names(&m), ["mem"]);
    let report = component_report(&m, "inject");
    assert!(report.starts_with("failed: "), "{report}");
    assert!(report.contains("inject") && report.contains("tableName"), "{report}");
    assert_not_ready(&sc).await;
    assert_store_works(&sc, "mem").await;
}

#[tokio::test]
async fn multi_document_file_loads_both_components() {
    let b = SidecarBuilder::new("app");
    let db = b.dir().join("one.db");
    let one = component("one", "state.sqlite", &format!("  metadata:\n  - name: connectionString\n    value: \"{}\"\n", db.display()));
    let two = component("two", "state.in-memory", "");
    let sc = b.file("both.yaml", &format!("{one}---\n{two}")).start().await;
    let m = metadata(&sc).await;
    assert_eq!(component_names(&m), ["one", "two"]);
    assert!(!extended(&m).keys().any(|k| k.starts_with("rapr.component.")), "nothing failed: {m}");
    assert_store_works(&sc, "one").await;
    assert_store_works(&sc, "two").await;
}

#[tokio::test]
async fn scopes_excluding_this_app_hide_the_component() {
    let sc = SidecarBuilder::new("app")
        .memory("mem")
        .file("theirs.yaml", &format!("{}scopes:\n- other\n- another\n", component("theirs", "state.in-memory", "")))
        .file("ours.yaml", &format!("{}scopes:\n- other\n- app\n", component("ours", "state.in-memory", "")))
        .start()
        .await;
    let m = metadata(&sc).await;
    assert_eq!(component_names(&m), ["mem", "ours"]);
    assert!(!extended(&m).contains_key("rapr.component.theirs"), "{m}");
    assert_store_not_found(&sc, "theirs").await;
    assert_store_works(&sc, "ours").await;
}

#[tokio::test]
async fn config_enables_features_and_warns_about_unimplemented_sections() {
    let b = SidecarBuilder::new("app").memory("mem");
    let cfg = b.dir().join("resources").join("config.yaml");
    let sc = b
        .file(
            "config.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: appconfig\nspec:\n  features:\n  - name: HotReload\n    enabled: true\n  - name: Disabled\n    enabled: false\n  accessControl:\n    defaultAction: allow\n",
        )
        .args(&["--config", cfg.to_str().unwrap()])
        .start()
        .await;
    let m = metadata(&sc).await;
    // HotReload named, the other default-on feature (daprd v1.18's `defaultFeatures`) added.
    assert_eq!(m["enabledFeatures"], json!(["HotReload", "WorkflowsRemoteActivityReminder"]), "{m}");
    assert_logged(&sc, "level=warning", &["accessControl"]).await;
    // A Configuration in the resources folder is not a component.
    assert_eq!(component_names(&m), ["mem"]);
    assert_ready(&sc).await;
}

#[tokio::test]
async fn subscription_resource_without_an_app_port_is_a_warning() {
    let sc = SidecarBuilder::new("app")
        .memory("mem")
        .file(
            "sub.yaml",
            "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: orders-sub\nspec:\n  topic: orders\n  routes:\n    default: /orders\n  pubsubname: pubsub\n",
        )
        .start()
        .await;
    // Subscriptions load (tests/it/pubsub/subscriptions.rs); with no app to deliver to, a warning.
    assert_logged(&sc, "level=warning", &["subscriptions declared but no app port"]).await;
    assert_ready(&sc).await;
    assert_eq!(component_names(&metadata(&sc).await), ["mem"]);
    assert_store_works(&sc, "mem").await;
}
