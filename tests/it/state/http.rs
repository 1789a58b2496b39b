//! The state API over HTTP against the real binary: every route, Dapr's data layout on disk, and
//! every bad input with daprd's status, `errorCode` and details.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{eventually, Sidecar, SidecarBuilder};

async fn sidecar() -> Sidecar {
    SidecarBuilder::new("httpapp").sqlite("statestore").memory("mem").start().await
}

async fn post(sc: &Sidecar, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    sc.client.post(sc.url(path)).body(body).send().await.unwrap()
}

async fn error_of(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    (status, body)
}

fn reason(body: &Value) -> Option<&str> {
    body["details"].as_array()?.iter().find(|d| d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")?["reason"].as_str()
}

#[tokio::test]
async fn save_get_delete_with_etags_on_both_stores() {
    let sc = sidecar().await;
    for store in ["statestore", "mem"] {
        let r = post(&sc, &format!("/v1.0/state/{store}"), r#"[{"key":"k1","value":{"b":2,"a":"x"}},{"key":"k2","value":"plain"}]"#).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{store}");
        let r = sc.client.get(sc.url(&format!("/v1.0/state/{store}/k1"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "application/json");
        let etag = r.headers()["etag"].to_str().unwrap().to_string();
        assert_eq!(r.text().await.unwrap(), r#"{"a":"x","b":2}"#, "canonical JSON, keys sorted as daprd writes them");
        let r = sc.client.get(sc.url(&format!("/v1.0/state/{store}/k2"))).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), r#""plain""#, "a JSON string keeps its quotes");

        // Stale and current ETags.
        let r = post(&sc, &format!("/v1.0/state/{store}"), format!(r#"[{{"key":"k1","value":1,"etag":"{etag}"}}]"#)).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let (status, body) = error_of(post(&sc, &format!("/v1.0/state/{store}"), format!(r#"[{{"key":"k1","value":2,"etag":"{etag}"}}]"#)).await).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["errorCode"], "ERR_STATE_SAVE");
        assert!(body["message"].as_str().unwrap().starts_with(&format!("failed saving state in state store {store}: possible etag mismatch")), "{body}");
        // These stores never parse an ETag (contrib's in-memory and SQLite): a non-UUID one is a
        // mismatch like any other, for a save, a delete and a first-write on a missing key.
        let (status, body) = error_of(post(&sc, &format!("/v1.0/state/{store}"), r#"[{"key":"k1","value":2,"etag":"not-a-version"}]"#).await).await;
        assert_eq!((status, body["errorCode"].as_str()), (StatusCode::CONFLICT, Some("ERR_STATE_SAVE")), "{body}");
        let r = sc.client.delete(sc.url(&format!("/v1.0/state/{store}/k1"))).header("If-Match", "not-a-version").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(r.json::<Value>().await.unwrap()["errorCode"], "ERR_STATE_DELETE");
        let fw_missing = r#"[{"key":"absent","value":1,"etag":"not-a-version","options":{"concurrency":"first-write"}}]"#;
        let (status, body) = error_of(post(&sc, &format!("/v1.0/state/{store}"), fw_missing).await).await;
        assert_eq!((status, body["errorCode"].as_str()), (StatusCode::CONFLICT, Some("ERR_STATE_SAVE")), "{body}");

        // Delete with If-Match.
        let r = sc.client.delete(sc.url(&format!("/v1.0/state/{store}/k1"))).header("If-Match", etag.as_str()).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(r.json::<Value>().await.unwrap()["errorCode"], "ERR_STATE_DELETE");
        let current = sc.client.get(sc.url(&format!("/v1.0/state/{store}/k1"))).send().await.unwrap().headers()["etag"].to_str().unwrap().to_string();
        let r = sc.client.delete(sc.url(&format!("/v1.0/state/{store}/k1"))).header("If-Match", current).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let r = sc.client.get(sc.url(&format!("/v1.0/state/{store}/k1"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "missing key is 204");
        assert!(r.bytes().await.unwrap().is_empty(), "with an empty body");
        // PUT is accepted like POST, and deleting a missing key succeeds.
        let r = sc.client.put(sc.url(&format!("/v1.0/state/{store}"))).body(r#"[{"key":"p","value":true}]"#).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let r = sc.client.delete(sc.url(&format!("/v1.0/state/{store}/never"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
}

#[tokio::test]
async fn first_write_concurrency_and_query_parameters() {
    let sc = sidecar().await;
    let fw = r#"[{"key":"fw","value":1,"options":{"concurrency":"first-write","consistency":"strong"}}]"#;
    assert_eq!(post(&sc, "/v1.0/state/statestore", fw).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(post(&sc, "/v1.0/state/statestore", fw).await.status(), StatusCode::CONFLICT);
    let (status, body) = error_of(post(&sc, "/v1.0/state/statestore", r#"[{"key":"x","value":1,"options":{"concurrency":"sometimes"}}]"#).await).await;
    assert_eq!((status, body["errorCode"].as_str()), (StatusCode::INTERNAL_SERVER_ERROR, Some("ERR_STATE_SAVE")));
    // metadata.* query parameters reach the store: a TTL given in the query string.
    assert_eq!(post(&sc, "/v1.0/state/statestore?metadata.ttlInSeconds=100", r#"[{"key":"qttl","value":1}]"#).await.status(), StatusCode::NO_CONTENT);
    let r = sc.client.get(sc.url("/v1.0/state/statestore/qttl?consistency=strong")).send().await.unwrap();
    assert!(r.headers().contains_key("metadata.ttlexpiretime"), "{:?}", r.headers());
}

#[tokio::test]
async fn ttl_expires_and_is_reported() {
    let sc = sidecar().await;
    for store in ["statestore", "mem"] {
        let r = post(&sc, &format!("/v1.0/state/{store}"), r#"[{"key":"t","value":1,"metadata":{"ttlInSeconds":"1"}},{"key":"keep","value":1,"metadata":{"ttlInSeconds":"-1"}}]"#).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let url = sc.url(&format!("/v1.0/state/{store}/t"));
        eventually(Duration::from_secs(5), "ttl expiry", || async {
            (sc.client.get(&url).send().await.unwrap().status() == StatusCode::NO_CONTENT).then_some(())
        })
        .await;
        let r = sc.client.get(sc.url(&format!("/v1.0/state/{store}/keep"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(!r.headers().contains_key("metadata.ttlexpiretime"));
        let (status, body) = error_of(post(&sc, &format!("/v1.0/state/{store}"), r#"[{"key":"bad","value":1,"metadata":{"ttlInSeconds":"soon"}}]"#).await).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["errorCode"], "ERR_STATE_SAVE");
        assert!(body["message"].as_str().unwrap().contains("ttlInSeconds"), "{body}");
    }
}

#[tokio::test]
async fn bulk_get_answers_every_key_in_order() {
    let sc = sidecar().await;
    post(&sc, "/v1.0/state/statestore", r#"[{"key":"b1","value":{"n":1}},{"key":"b2","value":"two"}]"#).await;
    let r = post(&sc, "/v1.0/state/statestore/bulk", r#"{"keys":["b1","missing","b2"],"parallelism":2}"#).await;
    assert_eq!(r.status(), StatusCode::OK);
    let items: Vec<Value> = r.json().await.unwrap();
    assert_eq!(items[0]["key"], "b1");
    assert_eq!(items[0]["data"], json!({"n": 1}));
    assert!(items[0]["etag"].is_string());
    assert_eq!(items[1], json!({"key": "missing"}));
    assert_eq!(items[2]["data"], "two");
    // 10,000 keys: all answered, in order.
    let keys: Vec<String> = (0..10_000).map(|i| format!("many-{i}")).collect();
    let r = post(&sc, "/v1.0/state/statestore/bulk", json!({ "keys": keys }).to_string()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let items: Vec<Value> = r.json().await.unwrap();
    assert_eq!(items.len(), 10_000);
    assert!(items.iter().enumerate().all(|(i, it)| it["key"] == format!("many-{i}")));
    let (status, body) = error_of(post(&sc, "/v1.0/state/statestore/bulk", r#"{"keys":"notalist"}"#).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().starts_with("failed deserializing HTTP body"), "{body}");
}

#[tokio::test]
async fn transactions_are_atomic() {
    let sc = sidecar().await;
    for store in ["statestore", "mem"] {
        post(&sc, &format!("/v1.0/state/{store}"), r#"[{"key":"gone","value":1}]"#).await;
        let tx = r#"{"operations":[{"operation":"upsert","request":{"key":"t1","value":{"v":1}}},{"operation":"delete","request":{"key":"gone"}}],"metadata":{"partitionKey":"p"}}"#;
        assert_eq!(post(&sc, &format!("/v1.0/state/{store}/transaction"), tx).await.status(), StatusCode::NO_CONTENT);
        assert_eq!(sc.client.get(sc.url(&format!("/v1.0/state/{store}/t1"))).send().await.unwrap().text().await.unwrap(), r#"{"v":1}"#);
        assert_eq!(sc.client.get(sc.url(&format!("/v1.0/state/{store}/gone"))).send().await.unwrap().status(), StatusCode::NO_CONTENT);
        // A mix of valid operations and one with a stale ETag: nothing applied.
        let stale = "00000000-0000-4000-8000-000000000000";
        let tx = format!(r#"{{"operations":[{{"operation":"upsert","request":{{"key":"t2","value":2}}}},{{"operation":"delete","request":{{"key":"t1"}}}},{{"operation":"upsert","request":{{"key":"t1","value":3,"etag":"{stale}"}}}}]}}"#);
        let (status, body) = error_of(post(&sc, &format!("/v1.0/state/{store}/transaction"), tx).await).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "daprd never maps transaction etag errors to 409");
        assert_eq!(body["errorCode"], "ERR_STATE_TRANSACTION");
        assert!(body["message"].as_str().unwrap().starts_with("error while executing state transaction: "));
        assert_eq!(sc.client.get(sc.url(&format!("/v1.0/state/{store}/t2"))).send().await.unwrap().status(), StatusCode::NO_CONTENT);
        assert_eq!(sc.client.get(sc.url(&format!("/v1.0/state/{store}/t1"))).send().await.unwrap().text().await.unwrap(), r#"{"v":1}"#);
        // Unknown operation, malformed body, illegal key inside a transaction.
        let (status, body) = error_of(post(&sc, &format!("/v1.0/state/{store}/transaction"), r#"{"operations":[{"operation":"merge","request":{"key":"a"}}]}"#).await).await;
        assert_eq!((status, body["errorCode"].as_str()), (StatusCode::BAD_REQUEST, Some("ERR_NOT_SUPPORTED_STATE_OPERATION")));
        let (status, body) = error_of(post(&sc, &format!("/v1.0/state/{store}/transaction"), "{").await).await;
        assert_eq!((status, body["errorCode"].as_str()), (StatusCode::BAD_REQUEST, Some("ERR_MALFORMED_REQUEST")));
        let (status, body) = error_of(post(&sc, &format!("/v1.0/state/{store}/transaction"), r#"{"operations":[{"operation":"upsert","request":{"key":"ok","value":1}},{"operation":"upsert","request":{"key":"a||b","value":1}}]}"#).await).await;
        assert_eq!((status, reason(&body)), (StatusCode::BAD_REQUEST, Some("DAPR_STATE_ILLEGAL_KEY")));
        assert_eq!(sc.client.get(sc.url(&format!("/v1.0/state/{store}/ok"))).send().await.unwrap().status(), StatusCode::NO_CONTENT, "nothing applied");
    }
}

#[tokio::test]
async fn query_with_filter_sort_and_paging() {
    let sc = sidecar().await;
    post(&sc, "/v1.0/state/statestore", r#"[{"key":"p1","value":{"state":"CA","id":1}},{"key":"p2","value":{"state":"WA","id":2}},{"key":"p3","value":{"state":"CA","id":3}}]"#).await;
    let q = r#"{"filter":{"EQ":{"state":"CA"}},"sort":[{"key":"id","order":"DESC"}],"page":{"limit":1}}"#;
    let r = post(&sc, "/v1.0-alpha1/state/statestore/query", q).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["results"][0]["key"], "p3", "keys come back without the app prefix");
    assert_eq!(body["results"][0]["data"], json!({"state": "CA", "id": 3}));
    let token = body["token"].as_str().unwrap();
    let q2 = format!(r#"{{"filter":{{"EQ":{{"state":"CA"}}}},"sort":[{{"key":"id","order":"DESC"}}],"page":{{"limit":1,"token":"{token}"}}}}"#);
    let body: Value = post(&sc, "/v1.0-alpha1/state/statestore/query", q2).await.json().await.unwrap();
    assert_eq!(body["results"][0]["key"], "p1");
    let r = post(&sc, "/v1.0-alpha1/state/statestore/query", r#"{"filter":{"EQ":{"state":"NY"}}}"#).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "no results is 204 as in daprd");
    let (status, body) = error_of(post(&sc, "/v1.0-alpha1/state/statestore/query", r#"{"filter":{"LIKE":{"a":1}}}"#).await).await;
    assert_eq!((status, body["errorCode"].as_str(), reason(&body)), (StatusCode::INTERNAL_SERVER_ERROR, Some("ERR_STATE_QUERY"), Some("DAPR_STATE_QUERY_FAILED")));
    let (status, body) = error_of(post(&sc, "/v1.0-alpha1/state/mem/query", "{}").await).await;
    assert_eq!((status, body["errorCode"].as_str(), reason(&body)), (StatusCode::INTERNAL_SERVER_ERROR, Some("ERR_STATE_STORE_NOT_SUPPORTED"), Some("DAPR_STATE_QUERYING_NOT_SUPPORTED")));
}

#[tokio::test]
async fn bad_input_gets_daprs_errors_and_the_sidecar_keeps_serving() {
    let sc = sidecar().await;
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        ("malformed JSON", "[{".into(), StatusCode::BAD_REQUEST, "ERR_MALFORMED_REQUEST"),
        ("wrong JSON type", r#"{"key":"a"}"#.into(), StatusCode::BAD_REQUEST, "ERR_MALFORMED_REQUEST"),
        ("wrong field type", r#"[{"key":5,"value":1}]"#.into(), StatusCode::BAD_REQUEST, "ERR_MALFORMED_REQUEST"),
        ("empty key", r#"[{"key":"","value":1}]"#.into(), StatusCode::BAD_REQUEST, "ERR_MALFORMED_REQUEST"),
        ("illegal key", r#"[{"key":"a||b","value":1}]"#.into(), StatusCode::BAD_REQUEST, "ERR_MALFORMED_REQUEST"),
        ("metadata not strings", r#"[{"key":"a","value":1,"metadata":{"ttlInSeconds":5}}]"#.into(), StatusCode::BAD_REQUEST, "ERR_MALFORMED_REQUEST"),
    ];
    for (what, body, status, code) in cases {
        let (s, b) = error_of(post(&sc, "/v1.0/state/statestore", body).await).await;
        assert_eq!((s, b["errorCode"].as_str()), (status, Some(code)), "{what}: {b}");
    }
    let (_, b) = error_of(post(&sc, "/v1.0/state/statestore", r#"[{"key":"","value":1}]"#).await).await;
    assert_eq!(b["message"], "\"key\" is a required field");
    let (_, b) = error_of(post(&sc, "/v1.0/state/statestore", r#"[{"key":"a||b","value":1}]"#).await).await;
    assert_eq!(b["message"], "input key/keyPrefix 'a||b' can't contain '||'");
    assert_eq!(reason(&b), Some("DAPR_STATE_ILLEGAL_KEY"));
    assert!(b["details"].as_array().unwrap().iter().any(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest" && d["field_violations"][0]["field"] == "a||b"));
    let r = sc.client.get(sc.url("/v1.0/state/statestore/a||b")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Unknown store, on every route.
    for (method, path) in [("GET", "/v1.0/state/nope/k"), ("DELETE", "/v1.0/state/nope/k"), ("POST", "/v1.0/state/nope/bulk"), ("POST", "/v1.0/state/nope/transaction"), ("POST", "/v1.0-alpha1/state/nope/query")] {
        let body = if path.ends_with("bulk") { r#"{"keys":["a"]}"# } else { "{}" };
        let r = sc.client.request(method.parse().unwrap(), sc.url(path)).body(body).send().await.unwrap();
        let (s, b) = error_of(r).await;
        assert_eq!((s, b["errorCode"].as_str()), (StatusCode::BAD_REQUEST, Some("ERR_STATE_STORE_NOT_FOUND")), "{method} {path}");
        assert_eq!(b["message"], "state store nope is not found");
        assert_eq!(b["details"][0]["reason"], "DAPR_STATE_NOT_FOUND");
        assert_eq!(b["details"][0]["metadata"]["appID"], "httpapp");
    }
    let (s, b) = error_of(post(&sc, "/v1.0/state/nope", "[]").await).await;
    assert_eq!((s, b["errorCode"].as_str()), (StatusCode::BAD_REQUEST, Some("ERR_STATE_STORE_NOT_FOUND")));

    // A body over the default 4 MiB limit.
    let big = format!(r#"[{{"key":"big","value":"{}"}}]"#, "x".repeat(4 * 1024 * 1024 + 10));
    let (s, b) = error_of(post(&sc, "/v1.0/state/statestore", big).await).await;
    assert_eq!((s, b["errorCode"].as_str(), b["message"].as_str()), (StatusCode::BAD_REQUEST, Some("ERR_MALFORMED_REQUEST"), Some("stream too large")));
    let big_query = format!(r#"{{"filter":{{"EQ":{{"a":"{}"}}}}}}"#, "x".repeat(4 * 1024 * 1024 + 10));
    let (s, b) = error_of(post(&sc, "/v1.0-alpha1/state/statestore/query", big_query).await).await;
    assert_eq!((s, b["errorCode"].as_str()), (StatusCode::BAD_REQUEST, Some("ERR_BODY_READ")));
    // Just under the limit is accepted.
    let fits = format!(r#"[{{"key":"fits","value":"{}"}}]"#, "x".repeat(3 * 1024 * 1024));
    assert_eq!(post(&sc, "/v1.0/state/statestore", fits).await.status(), StatusCode::NO_CONTENT);

    // Still serving.
    assert_eq!(post(&sc, "/v1.0/state/statestore", r#"[{"key":"after","value":1}]"#).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(sc.client.get(sc.url("/v1.0/healthz")).send().await.unwrap().status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn no_store_configured() {
    let sc = SidecarBuilder::new("bare").start().await;
    let (s, b) = error_of(sc.client.get(sc.url("/v1.0/state/statestore/k")).send().await.unwrap()).await;
    assert_eq!((s, b["errorCode"].as_str()), (StatusCode::INTERNAL_SERVER_ERROR, Some("ERR_STATE_STORE_NOT_CONFIGURED")));
    assert_eq!(b["details"][0]["reason"], "DAPR_STATE_NOT_CONFIGURED");
}

#[tokio::test]
async fn data_is_stored_in_daprs_sqlite_layout_both_ways() {
    let b = SidecarBuilder::new("layout");
    let db = b.dir().join("statestore.db");
    let sc = b.sqlite("statestore").start().await;
    post(&sc, "/v1.0/state/statestore", r#"[{"key":"j","value":{"a":1}}]"#).await;
    let mut grpc = sc.grpc().await;
    grpc.save_state(rapr_proto::runtime::v1::SaveStateRequest {
        store_name: "statestore".into(),
        states: vec![rapr_proto::common::v1::StateItem { key: "bin".into(), value: vec![0, 1, 2, 255], ..Default::default() }],
    })
    .await
    .unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (value, is_binary, etag): (String, bool, String) =
        conn.query_row("SELECT value, is_binary, etag FROM state WHERE key = 'layout||j'", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
    assert_eq!((value.as_str(), is_binary), (r#"{"a":1}"#, false));
    assert!(uuid::Uuid::parse_str(&etag).is_ok(), "UUID etags as Dapr's store writes them");
    let (value, is_binary): (String, bool) = conn.query_row("SELECT value, is_binary FROM state WHERE key = 'layout||bin'", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!((value.as_str(), is_binary), ("AAEC/w==", true), "raw bytes are base64 with is_binary");
    let level: String = conn.query_row("SELECT value FROM metadata WHERE key = 'migrations'", [], |r| r.get(0)).unwrap();
    assert_eq!(level, "1");
    // A row written the way Dapr writes it is read back by rapr.
    conn.execute(
        "INSERT INTO state (key, value, is_binary, etag, update_time) VALUES ('layout||fromdapr', '{\"by\":\"dapr\"}', 0, '11111111-1111-4111-8111-111111111111', CURRENT_TIMESTAMP)",
        [],
    )
    .unwrap();
    let r = sc.client.get(sc.url("/v1.0/state/statestore/fromdapr")).send().await.unwrap();
    assert_eq!(r.headers()["etag"], "11111111-1111-4111-8111-111111111111");
    assert_eq!(r.text().await.unwrap(), r#"{"by":"dapr"}"#);
}

#[tokio::test]
async fn key_prefix_strategies() {
    let b = SidecarBuilder::new("prefixapp");
    let dir = b.dir();
    let yaml = |name: &str, prefix: &str| {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: state.sqlite\n  version: v1\n  metadata:\n  - name: connectionString\n    value: \"{}\"\n  - name: keyPrefix\n    value: {prefix}\n",
            dir.join(format!("{name}.db")).display()
        )
    };
    let sc = b.file("a.yaml", &yaml("byname", "name")).file("b.yaml", &yaml("bynone", "none")).file("c.yaml", &yaml("bycustom", "MyPrefix")).start().await;
    for store in ["byname", "bynone", "bycustom"] {
        assert_eq!(post(&sc, &format!("/v1.0/state/{store}"), r#"[{"key":"k","value":1}]"#).await.status(), StatusCode::NO_CONTENT);
        let body: Value = post(&sc, &format!("/v1.0/state/{store}/bulk"), r#"{"keys":["k"]}"#).await.json().await.unwrap();
        assert_eq!(body[0]["key"], "k");
    }
    let key_in = |store: &str| -> String {
        rusqlite::Connection::open(dir.join(format!("{store}.db"))).unwrap().query_row("SELECT key FROM state", [], |r| r.get(0)).unwrap()
    };
    assert_eq!(key_in("byname"), "byname||k");
    assert_eq!(key_in("bynone"), "k");
    assert_eq!(key_in("bycustom"), "myprefix||k");
}

#[tokio::test]
async fn metadata_and_health_over_http() {
    let sc = sidecar().await;
    let r = sc.client.put(sc.url("/v1.0/metadata/team")).body("blue").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let m: Value = sc.client.get(sc.url("/v1.0/metadata")).send().await.unwrap().json().await.unwrap();
    assert_eq!(m["id"], "httpapp");
    assert_eq!(m["extended"]["team"], "blue");
    assert!(m["runtimeVersion"].is_string());
    // daprd v1.18 lists its default-on features even without a Configuration.
    assert_eq!(m["enabledFeatures"], serde_json::json!(["HotReload", "WorkflowsRemoteActivityReminder"]), "{m}");
    let comps = m["components"].as_array().unwrap();
    let sqlite = comps.iter().find(|c| c["name"] == "statestore").unwrap();
    assert_eq!(sqlite["type"], "state.sqlite");
    assert_eq!(sqlite["version"], "v1");
    assert_eq!(sqlite["capabilities"], json!(["ETAG", "TRANSACTIONAL", "TTL", "QUERY_API"]));
    let mem = comps.iter().find(|c| c["name"] == "mem").unwrap();
    assert_eq!(mem["capabilities"], json!(["ETAG", "TRANSACTIONAL", "TTL"]));
    assert_eq!(sc.client.get(sc.url("/v1.0/healthz/outbound")).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    let (s, b) = error_of(sc.client.get(sc.url("/v1.0/healthz?appid=other")).send().await.unwrap()).await;
    assert_eq!((s, b["errorCode"].as_str()), (StatusCode::INTERNAL_SERVER_ERROR, Some("ERR_HEALTH_APPID_NOT_MATCH")));
}

/// daprd merges only the query string's `metadata.*` into each operation; the body's `metadata`
/// belongs to the transaction as a whole (a TTL there is no operation's TTL).
#[tokio::test]
async fn transaction_body_metadata_stays_on_the_transaction() {
    let sc = sidecar().await;
    for store in ["statestore", "mem"] {
        let tx = r#"{"operations":[{"operation":"upsert","request":{"key":"body-md","value":1}}],"metadata":{"ttlInSeconds":"100"}}"#;
        assert_eq!(post(&sc, &format!("/v1.0/state/{store}/transaction"), tx).await.status(), StatusCode::NO_CONTENT);
        let r = sc.client.get(sc.url(&format!("/v1.0/state/{store}/body-md"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(!r.headers().contains_key("metadata.ttlexpiretime"), "{store}: body metadata reached the operation: {:?}", r.headers());

        let tx = r#"{"operations":[{"operation":"upsert","request":{"key":"query-md","value":1,"metadata":{"ttlInSeconds":"5"}}}]}"#;
        let r = post(&sc, &format!("/v1.0/state/{store}/transaction?metadata.ttlInSeconds=100"), tx).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let r = sc.client.get(sc.url(&format!("/v1.0/state/{store}/query-md"))).send().await.unwrap();
        let expiry = r.headers().get("metadata.ttlexpiretime").unwrap_or_else(|| panic!("{store}: the query string's TTL must reach the operation")).to_str().unwrap().to_string();
        let at = time::OffsetDateTime::parse(&expiry, &time::format_description::well_known::Rfc3339).unwrap();
        let secs = (at - time::OffsetDateTime::now_utc()).whole_seconds();
        assert!(secs > 50, "{store}: the query string overrides the operation's own metadata, expires in {secs}s");
    }
}
