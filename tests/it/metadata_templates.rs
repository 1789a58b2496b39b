//! Metadata templates (`{appID}`, `{namespace}`, `{uuid}`, `{podName}`) expanded in component
//! metadata as daprd does, seen where they land: the SQLite file a `connectionString` names and
//! the stored key a custom `keyPrefix` gives.

use serde_json::{json, Value};

use crate::harness::SidecarBuilder;

fn sqlite_component(name: &str, connection: &str, key_prefix: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: state.sqlite\n  version: v1\n  metadata:\n  - name: connectionString\n    value: \"{connection}\"\n  - name: keyPrefix\n    value: \"{key_prefix}\"\n"
    )
}

#[tokio::test]
async fn templates_expand_in_connection_strings_and_key_prefixes() {
    let b = SidecarBuilder::new("tmpl").env("NAMESPACE", "prod").env_remove("POD_NAME");
    let dir = b.dir();
    let sc = b
        .file("a.yaml", &sqlite_component("bynamespace", &format!("{}/{{appID}}-{{uuid}}.db", dir.display()), "{namespace}"))
        .file("b.yaml", &sqlite_component("bypod", &format!("{}/pod.db", dir.display()), "{podName}"))
        .allow_unhealthy()
        .start()
        .await;
    let r = sc.client.post(sc.url("/v1.0/state/bynamespace")).json(&json!([{"key": "k", "value": 1}])).send().await.unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    // `{appID}-{uuid}.db`: the file is named after the app and a fresh UUID.
    let files: Vec<String> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.ends_with(".db")).collect();
    let db = files.iter().find(|n| n.starts_with("tmpl-")).unwrap_or_else(|| panic!("no tmpl-<uuid>.db in {files:?}"));
    assert!(uuid::Uuid::parse_str(&db["tmpl-".len()..db.len() - ".db".len()]).is_ok(), "{db}");
    // keyPrefix `{namespace}` is `<NAMESPACE>.<appID>`, a custom prefix.
    let key: String = rusqlite::Connection::open(dir.join(db)).unwrap().query_row("SELECT key FROM state", [], |r| r.get(0)).unwrap();
    assert_eq!(key, "prod.tmpl||k");
    // `{podName}` without POD_NAME fails that component, as its init fails in daprd.
    let m: Value = sc.client.get(sc.url("/v1.0/metadata")).send().await.unwrap().json().await.unwrap();
    let status = m["extended"]["rapr.component.bypod"].as_str().unwrap_or_else(|| panic!("bypod not reported as failed: {m}"));
    assert!(status.contains("property keyPrefix refers to {podName} but podName is not set"), "{status}");
    assert!(!files.iter().any(|n| n == "pod.db"), "the failed component never opened its file");
}

#[tokio::test]
async fn pod_name_comes_from_the_environment() {
    let b = SidecarBuilder::new("podded").env("POD_NAME", "podded-7f9c");
    let dir = b.dir();
    let sc = b.file("a.yaml", &sqlite_component("store", &format!("{}/s.db", dir.display()), "{podName}-{appID}")).start().await;
    let r = sc.client.post(sc.url("/v1.0/state/store")).json(&json!([{"key": "k", "value": 1}])).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let key: String = rusqlite::Connection::open(dir.join("s.db")).unwrap().query_row("SELECT key FROM state", [], |r| r.get(0)).unwrap();
    assert_eq!(key, "podded-7f9c-podded||k");
}

#[tokio::test]
async fn templates_expand_in_values_read_from_a_secret_store() {
    let b = SidecarBuilder::new("secreted");
    let dir = b.dir();
    let secrets = dir.join("secrets.json");
    std::fs::write(&secrets, format!(r#"{{"dbfile": "{}/{{appID}}-from-secret.db"}}"#, dir.display())).unwrap();
    let store = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: files\nspec:\n  type: secretstores.local.file\n  version: v1\n  metadata:\n  - name: secretsFile\n    value: \"{}\"\n",
        secrets.display()
    );
    let state = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: store\nspec:\n  type: state.sqlite\n  version: v1\n  metadata:\n  - name: connectionString\n    secretKeyRef:\n      name: dbfile\n      key: dbfile\nauth:\n  secretStore: files\n";
    let sc = b.file("files.yaml", &store).file("store.yaml", state).start().await;
    let r = sc.client.post(sc.url("/v1.0/state/store")).json(&json!([{"key": "k", "value": 1}])).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert!(dir.join("secreted-from-secret.db").exists(), "the secret's {{appID}} was expanded");
}
