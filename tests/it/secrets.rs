//! The secrets building block against the real binary: `secretstores.local.file` and
//! `secretstores.local.env` over HTTP and gRPC, the Configuration's secret scopes, daprd's errors,
//! and `secretKeyRef` in component metadata.

use reqwest::StatusCode;
use serde_json::{json, Value};
use tonic::Code;

use crate::harness::{Sidecar, SidecarBuilder};

fn file_store(name: &str, path: &std::path::Path, extra: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: secretstores.local.file\n  version: v1\n  metadata:\n  - name: secretsFile\n    value: \"{}\"\n{extra}",
        path.display()
    )
}

const ENV_STORE: &str = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: envstore\nspec:\n  type: secretstores.local.env\n  version: v1\n";

async fn get(sc: &Sidecar, path: &str) -> (StatusCode, Value) {
    let r = sc.client.get(sc.url(path)).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn sidecar_with_secrets() -> Sidecar {
    let b = SidecarBuilder::new("secretapp");
    let dir = b.dir();
    std::fs::write(dir.join("secrets.json"), r#"{"db": {"password": "s3cret", "user": "admin"}, "token": "t0k", "hidden": "no", "n": 5}"#).unwrap();
    std::fs::write(dir.join("multi.json"), r#"{"db": {"password": "p", "user": "u"}, "plain": "v"}"#).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: cfg\nspec:\n  secrets:\n    scopes:\n    - storeName: local\n      defaultAccess: allow\n      deniedSecrets: [\"hidden\"]\n    - storeName: multi\n      defaultAccess: deny\n      allowedSecrets: [\"db\"]\n",
    )
    .unwrap();
    b.file("local.yaml", &file_store("local", &dir.join("secrets.json"), ""))
        .file("multi.yaml", &file_store("multi", &dir.join("multi.json"), "  - name: multiValued\n    value: \"true\"\n"))
        .file("env.yaml", ENV_STORE)
        .env("RAPR_TEST_SECRET", "from-env")
        .env("DAPR_HIDDEN_SECRET", "never")
        .args(&["--config", config.to_str().unwrap()])
        .start()
        .await
}

#[tokio::test]
async fn secrets_over_http_with_scopes() {
    let sc = sidecar_with_secrets().await;
    assert_eq!(get(&sc, "/v1.0/secrets/local/db:password").await, (StatusCode::OK, json!({"db:password": "s3cret"})));
    assert_eq!(get(&sc, "/v1.0/secrets/local/n").await.1, json!({"n": "5"}));
    let (s, bulk) = get(&sc, "/v1.0/secrets/local/bulk").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(bulk["token"], json!({"token": "t0k"}));
    assert!(bulk.get("hidden").is_none(), "denied secrets are filtered from bulk answers: {bulk}");
    let (s, b) = get(&sc, "/v1.0/secrets/local/hidden").await;
    assert_eq!((s, b["errorCode"].as_str()), (StatusCode::FORBIDDEN, Some("ERR_PERMISSION_DENIED")));
    assert_eq!(b["message"], r#"access denied by policy to get "hidden" from "local""#);
    // Multi-valued with an allow list.
    assert_eq!(get(&sc, "/v1.0/secrets/multi/db").await.1, json!({"password": "p", "user": "u"}));
    assert_eq!(get(&sc, "/v1.0/secrets/multi/plain").await.0, StatusCode::FORBIDDEN);
    assert_eq!(get(&sc, "/v1.0/secrets/multi/bulk").await.1, json!({"db": {"password": "p", "user": "u"}}));
    // Environment variables, never DAPR_*.
    assert_eq!(get(&sc, "/v1.0/secrets/envstore/RAPR_TEST_SECRET").await.1, json!({"RAPR_TEST_SECRET": "from-env"}));
    assert_eq!(get(&sc, "/v1.0/secrets/envstore/DAPR_HIDDEN_SECRET").await.1, json!({"DAPR_HIDDEN_SECRET": ""}));
    let env_bulk = get(&sc, "/v1.0/secrets/envstore/bulk").await.1;
    assert_eq!(env_bulk["RAPR_TEST_SECRET"], json!({"RAPR_TEST_SECRET": "from-env"}));
    assert!(env_bulk.get("DAPR_HIDDEN_SECRET").is_none());
    // Errors.
    let (s, b) = get(&sc, "/v1.0/secrets/nope/x").await;
    assert_eq!((s, b["errorCode"].as_str(), b["message"].as_str()), (StatusCode::UNAUTHORIZED, Some("ERR_SECRET_STORE_NOT_FOUND"), Some("failed finding secret store with key nope")));
    let (s, b) = get(&sc, "/v1.0/secrets/local/missing").await;
    assert_eq!((s, b["errorCode"].as_str()), (StatusCode::INTERNAL_SERVER_ERROR, Some("ERR_SECRET_GET")));
    assert_eq!(b["message"], "failed getting secret with key missing from secret store local: secret missing not found");
    let m: Value = sc.client.get(sc.url("/v1.0/metadata")).send().await.unwrap().json().await.unwrap();
    let multi = m["components"].as_array().unwrap().iter().find(|c| c["name"] == "multi").unwrap();
    assert_eq!(multi["type"], "secretstores.local.file");
    assert_eq!(multi["capabilities"], json!(["MULTIPLE_KEY_VALUES_PER_SECRET"]));
}

#[tokio::test]
async fn secrets_over_grpc() {
    use rapr_proto::runtime::v1::{GetBulkSecretRequest, GetSecretRequest};
    let sc = sidecar_with_secrets().await;
    let mut c = sc.grpc().await;
    let req = |store: &str, key: &str| GetSecretRequest { store_name: store.into(), key: key.into(), metadata: Default::default() };
    let r = c.get_secret(req("local", "db:user")).await.unwrap().into_inner();
    assert_eq!(r.data.get("db:user").map(String::as_str), Some("admin"));
    let bulk = c.get_bulk_secret(GetBulkSecretRequest { store_name: "multi".into(), metadata: Default::default() }).await.unwrap().into_inner();
    assert_eq!(bulk.data.len(), 1);
    assert_eq!(bulk.data["db"].secrets["password"], "p");
    for (store, key, code) in [("nope", "x", Code::InvalidArgument), ("local", "hidden", Code::PermissionDenied), ("local", "missing", Code::Internal)] {
        let st = c.get_secret(req(store, key)).await.unwrap_err();
        assert_eq!(st.code(), code, "{store}/{key}: {st:?}");
    }
}

#[tokio::test]
async fn no_secret_store_configured() {
    let sc = SidecarBuilder::new("nosecrets").memory("mem").start().await;
    let (s, b) = get(&sc, "/v1.0/secrets/local/x").await;
    assert_eq!((s, b["errorCode"].as_str()), (StatusCode::INTERNAL_SERVER_ERROR, Some("ERR_SECRET_STORES_NOT_CONFIGURED")));
    let st = sc.grpc().await.get_secret(rapr_proto::runtime::v1::GetSecretRequest { store_name: "local".into(), key: "x".into(), metadata: Default::default() }).await.unwrap_err();
    assert_eq!(st.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn secret_key_refs_resolve_component_metadata() {
    let b = SidecarBuilder::new("refapp");
    let dir = b.dir();
    std::fs::write(dir.join("secrets.json"), format!(r#"{{"dbpath": "{}", "other": {{"k": "v"}}}}"#, dir.join("fromsecret.db").display())).unwrap();
    let with_ref = |name: &str, secret: &str, key: &str, store: Option<&str>| {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: state.sqlite\n  version: v1\n  metadata:\n  - name: connectionString\n    secretKeyRef:\n      name: {secret}\n      key: {key}\n{}",
            store.map(|s| format!("auth:\n  secretStore: {s}\n")).unwrap_or_default()
        )
    };
    let sc = b
        .file("a-state.yaml", &with_ref("viasecret", "dbpath", "dbpath", Some("local")))
        .file("b-missing.yaml", &with_ref("missingsecret", "nosuch", "nosuch", Some("local")))
        .file("c-noauth.yaml", &with_ref("noauth", "dbpath", "dbpath", None))
        .file("d-optional.yaml", &with_ref("optional", "nosuch", "nosuch", Some("local")).replace("state.sqlite", "state.in-memory"))
        .file("z-local.yaml", &file_store("local", &dir.join("secrets.json"), ""))
        .file("notjson.yaml", &file_store("broken", &dir.join("missing.json"), ""))
        .allow_unhealthy()
        .start()
        .await;
    // Loaded after its secret store even though its file sorts first.
    let r = sc.client.post(sc.url("/v1.0/state/viasecret")).body(r#"[{"key":"k","value":1}]"#).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", sc.logs());
    assert!(dir.join("fromsecret.db").exists(), "the connection string came from the secret");
    let m: Value = sc.client.get(sc.url("/v1.0/metadata")).send().await.unwrap().json().await.unwrap();
    let ext = &m["extended"];
    // As daprd (pkg/runtime/processor/secret): a secret that cannot be read is logged and the
    // component starts without the value; here SQLite then misses its connection string.
    let missing = ext["rapr.component.missingsecret"].as_str().unwrap();
    assert!(missing.contains("connectionString") && missing.contains("missingsecret"), "{missing}");
    let logs = sc.logs();
    assert!(logs.contains("secretKeyRef not resolved") && logs.contains("secret nosuch"), "{logs}");
    // A component that does not need the value starts and serves.
    assert!(ext.get("rapr.component.optional").is_none(), "{m}");
    let r = sc.client.post(sc.url("/v1.0/state/optional")).body(r#"[{"key":"k","value":1}]"#).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let noauth = ext["rapr.component.noauth"].as_str().unwrap();
    assert!(noauth.contains("auth.secretStore"), "{noauth}");
    let broken = ext["rapr.component.broken"].as_str().unwrap();
    assert!(broken.contains("component broken") || broken.contains("broken"), "{broken}");
    assert!(broken.contains("missing.json"), "{broken}");
    // A missing secret fails that component only.
    assert_eq!(get(&sc, "/v1.0/secrets/local/other:k").await.1, json!({"other:k": "v"}));
}

#[tokio::test]
async fn a_secrets_file_that_is_not_json_fails_only_that_component() {
    let b = SidecarBuilder::new("badjson");
    let dir = b.dir();
    std::fs::write(dir.join("bad.json"), "this is not json").unwrap();
    let sc = b.file("bad.yaml", &file_store("bad", &dir.join("bad.json"), "")).memory("mem").allow_unhealthy().start().await;
    let m: Value = sc.client.get(sc.url("/v1.0/metadata")).send().await.unwrap().json().await.unwrap();
    let err = m["extended"]["rapr.component.bad"].as_str().unwrap();
    assert!(err.contains("not valid JSON") && err.contains("component bad"), "{err}");
    let r = sc.client.post(sc.url("/v1.0/state/mem")).body(r#"[{"key":"k","value":1}]"#).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

/// daprd refuses a secret scope whose `defaultAccess` is neither allow nor deny when it loads the
/// Configuration (pkg/config `sortAndValidateSecretsConfiguration`) and then does not start.
#[tokio::test]
async fn an_unknown_default_access_stops_the_sidecar_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let yaml = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: cfg\nspec:\n  secrets:\n    scopes:\n    - storeName: local\n      defaultAccess: sometimes\n";
    std::fs::write(&config, yaml).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_rapr"))
        .args(["sidecar", "--app-id", "badaccess", "--dapr-http-port", "0", "--dapr-grpc-port", "0", "--metrics-port", "0"])
        .arg("--config")
        .arg(&config)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), out).await.expect("the sidecar exits").unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("error loading configuration") && text.contains("defaultAccess"), "{text}");
}
