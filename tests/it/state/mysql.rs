//! `state.mysql` against the real MariaDB (127.0.0.1:3306, root, empty password): the conformance
//! suite, data compatibility with Dapr's table layout through the real binary, expired rows, and
//! bad input. Every test uses its own random schema and drops it at the end (even on failure).

use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use rapr::components::registry::{ComponentError, Registry};
use rapr::components::state::conformance::{matrix, run, EtagRules, Outcome};
use rapr::components::state::{Concurrency, Feature, GetRequest, SetRequest, StateOptions, StateStore, StoreError};
use rapr::config::ComponentSpec;
use rapr_proto::common::v1 as common;
use rapr_proto::runtime::v1 as pb;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{eventually, free_port, Sidecar, SidecarBuilder};

const DSN: &str = "root:@tcp(127.0.0.1:3306)/?allowNativePasswords=true";

fn admin_opts() -> Opts {
    Opts::from_url("mysql://root@127.0.0.1:3306").unwrap()
}

/// A direct connection for checking rows behind rapr's back.
async fn admin() -> Conn {
    Conn::new(admin_opts()).await.expect("MariaDB at 127.0.0.1:3306")
}

/// A random schema name, dropped when the guard goes (a panicking test included).
struct Schema(String);

impl Schema {
    fn new() -> Self {
        Self(format!("rapr_it_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]))
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.0.clone();
        // Drop runs outside any async context we could borrow: a private runtime on a thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(mut c) = Conn::new(admin_opts()).await {
                    let _ = c.query_drop(format!("DROP DATABASE IF EXISTS {name}")).await;
                    let _ = c.disconnect().await;
                }
            });
        })
        .join();
    }
}

fn spec(name: &str, pairs: &[(&str, &str)]) -> ComponentSpec {
    // A cold MariaDB table creation can exceed the default 5 s.
    ComponentSpec { init_timeout: Duration::from_secs(20), ..ComponentSpec::new(name, "state.mysql").with_metadata(pairs.iter().copied()) }
}

fn yaml(name: &str, pairs: &[(&str, &str)]) -> String {
    let mut y = format!("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: state.mysql\n  version: v1\n  metadata:\n");
    for (k, v) in pairs {
        y.push_str(&format!("  - name: {k}\n    value: {}\n", serde_json::to_string(v).unwrap()));
    }
    y
}

#[tokio::test]
async fn mysql_passes_the_state_conformance_suite() {
    let schema = Schema::new();
    let md = [("connectionString", DSN), ("schemaName", schema.0.as_str()), ("cleanupInterval", "1s")];
    let store: Arc<dyn StateStore> = Registry::default().build_state(&spec("my", &md)).await.expect("mysql store builds");
    let report = tokio::time::timeout(Duration::from_secs(90), run("state.mysql", Arc::clone(&store), EtagRules::OPAQUE)).await.expect("suite timed out");
    for (feature, claim) in [("etag", Feature::ETag), ("ttl", Feature::Ttl), ("transactions", Feature::Transactional)] {
        assert!(store.features().contains(&claim), "state.mysql must claim {feature}");
        let outcome = &report.results.iter().find(|(f, _)| *f == feature).unwrap().1;
        assert_ne!(outcome, &Outcome::NotClaimed, "state.mysql claims {feature} but the suite skipped it");
    }
    assert!(!store.features().contains(&Feature::QueryApi), "Dapr's MySQL store has no query API");
    println!("state conformance matrix (pass = ran and held, - = not claimed and refused cleanly):\n{}", matrix(std::slice::from_ref(&report)));
    assert!(report.failures().is_empty(), "conformance failures:\n{}", report.failures().join("\n"));
    store.close().await;
}

#[tokio::test]
async fn mysql_expired_rows_are_invisible_and_swept_like_daprs() {
    let schema = Schema::new();
    let s = schema.0.as_str();
    let reg = Registry::default();
    // No sweeper on this one: the expired row stays in the table.
    let store = reg.build_state(&spec("my", &[("connectionString", DSN), ("schemaName", s), ("cleanupInterval", "0")])).await.unwrap();
    let mut c = admin().await;
    let old = uuid::Uuid::new_v4().to_string();
    c.query_drop(format!(
        "INSERT INTO {s}.state (id, value, isbinary, eTag, expiredate) VALUES ('app||gone', '1', 0, '{old}', CURRENT_TIMESTAMP - INTERVAL 1 MINUTE)"
    ))
    .await
    .unwrap();
    assert_eq!(store.get(GetRequest { key: "app||gone".into(), ..Default::default() }).await.unwrap(), None);
    let upd = SetRequest { key: "app||gone".into(), value: "2".into(), is_json: true, etag: Some(old), ..Default::default() };
    assert!(matches!(store.set(upd).await, Err(StoreError::ETagMismatch(_))), "an expired row's etag no longer matches");
    // First-write treats the unswept expired row as absent (Dapr's special case).
    let fw = StateOptions { concurrency: Concurrency::FirstWrite, ..Default::default() };
    store.set(SetRequest { key: "app||gone".into(), value: "3".into(), is_json: true, options: fw, ..Default::default() }).await.unwrap();
    let got = store.get(GetRequest { key: "app||gone".into(), ..Default::default() }).await.unwrap().unwrap();
    assert_eq!(got.data, "3");
    assert!(!got.metadata.contains_key("ttlExpireTime"));
    store.close().await;

    // A sweeper every second removes rows Dapr (or anyone) left expired, and records the sweep.
    c.query_drop(format!("INSERT INTO {s}.state (id, value, isbinary, eTag, expiredate) VALUES ('app||old', '1', 0, 'x', CURRENT_TIMESTAMP - INTERVAL 1 MINUTE)"))
        .await
        .unwrap();
    let sweeper = reg.build_state(&spec("my", &[("connectionString", DSN), ("schemaName", s), ("cleanupInterval", "1s")])).await.unwrap();
    eventually(Duration::from_secs(15), "the expired row to be swept", || {
        let sql = format!("SELECT COUNT(*) FROM {s}.state WHERE id = 'app||old'");
        async move {
            let mut conn = Conn::new(admin_opts()).await.ok()?;
            let n: Option<i64> = conn.query_first(sql).await.ok()?;
            let _ = conn.disconnect().await;
            (n == Some(0)).then_some(())
        }
    })
    .await;
    let last: Option<String> = c.query_first(format!("SELECT value FROM {s}.dapr_metadata WHERE id = 'last-cleanup'")).await.unwrap();
    assert!(last.is_some_and(|v| !v.is_empty()), "the sweep records last-cleanup as Dapr's does");
    let live: Option<i64> = c.query_first(format!("SELECT COUNT(*) FROM {s}.state WHERE id = 'app||gone'")).await.unwrap();
    assert_eq!(live, Some(1), "live rows survive the sweep");
    sweeper.close().await;
    let _ = c.disconnect().await;
}

/// A sidecar for app `app` with a MySQL store `my` on `schema` and an in-memory store `mem`.
async fn sidecar(schema: &str) -> Sidecar {
    let y = yaml("my", &[("connectionString", DSN), ("schemaName", schema)]);
    SidecarBuilder::new("app").file("my.yaml", &y).memory("mem").start().await
}

#[tokio::test]
async fn mysql_rows_are_daprs_layout_both_ways_through_the_sidecar() {
    let schema = Schema::new();
    let s = schema.0.as_str();
    let sc = sidecar(s).await;
    let mut c = admin().await;

    // The table as components-contrib creates it.
    let cols: Vec<(String, String, String)> = c
        .exec("SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.columns WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'state' ORDER BY ORDINAL_POSITION", (s,))
        .await
        .unwrap();
    let names: Vec<&str> = cols.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(names, ["id", "value", "isbinary", "insertDate", "updateDate", "eTag", "expiredate"], "{cols:?}");
    assert_eq!((cols[0].1.as_str(), cols[5].1.as_str(), cols[6].2.as_str()), ("varchar(255)", "varchar(36)", "YES"), "{cols:?}");
    let idx: Option<i64> = c
        .exec_first("SELECT COUNT(*) FROM information_schema.statistics WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'state' AND INDEX_NAME = 'expiredate_idx'", (s,))
        .await
        .unwrap();
    assert_eq!(idx, Some(1));
    let meta: Option<i64> =
        c.exec_first("SELECT COUNT(*) FROM information_schema.tables WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'dapr_metadata'", (s,)).await.unwrap();
    assert_eq!(meta, Some(1));

    // rapr -> Dapr: an HTTP save is a JSON row under `app||key`.
    let r = sc.client.post(sc.url("/v1.0/state/my")).json(&json!([{"key": "key", "value": {"n": 1}, "metadata": {"ttlInSeconds": "600"}}])).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", r.text().await.unwrap());
    let row: Option<(String, i64, String, Option<i64>)> =
        c.query_first(format!("SELECT value, isbinary, eTag, UNIX_TIMESTAMP(expiredate) FROM {s}.state WHERE id = 'app||key'")).await.unwrap();
    let (value, isbinary, etag, expires) = row.expect("the row is stored under app||key");
    assert_eq!(serde_json::from_str::<Value>(&value).unwrap(), json!({"n": 1}));
    assert_eq!(isbinary, 0);
    assert!(uuid::Uuid::parse_str(&etag).is_ok(), "UUID etags as Dapr writes them: {etag}");
    assert!(expires.is_some(), "the TTL lands in expiredate");
    let r = sc.client.get(sc.url("/v1.0/state/my/key")).send().await.unwrap();
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert!(r.headers().contains_key("metadata.ttlexpiretime"), "{:?}", r.headers());

    // gRPC bytes without a JSON content type: a JSON string of base64, isbinary set.
    let mut g = sc.grpc().await;
    let item = common::StateItem { key: "raw".into(), value: vec![0, 1, 2, 255], ..Default::default() };
    g.save_state(pb::SaveStateRequest { store_name: "my".into(), states: vec![item] }).await.unwrap();
    let row: Option<(String, i64)> = c.query_first(format!("SELECT value, isbinary FROM {s}.state WHERE id = 'app||raw'")).await.unwrap();
    assert_eq!(row, Some(("\"AAEC/w==\"".to_string(), 1)));

    // Dapr -> rapr: rows written in Dapr's layout read back with their value and ETag.
    let (e1, e2) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    c.exec_drop(
        format!("INSERT INTO {s}.state (id, value, isbinary, eTag) VALUES ('app||dj', ?, 0, ?), ('app||db', ?, 1, ?)"),
        (r#"{"from":"dapr"}"#, e1.as_str(), "\"3q2+7w==\"", e2.as_str()),
    )
    .await
    .unwrap();
    let r = sc.client.get(sc.url("/v1.0/state/my/dj")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), e1);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"from": "dapr"}));
    let r = g.get_state(pb::GetStateRequest { store_name: "my".into(), key: "db".into(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!((r.data, r.etag), (vec![0xde, 0xad, 0xbe, 0xef], e2));
    // Dapr's ETag works for a conditional write through rapr; a stale one is Dapr's 409.
    let r = sc.client.post(sc.url("/v1.0/state/my")).json(&json!([{"key": "dj", "value": 2, "etag": e1}])).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = sc.client.post(sc.url("/v1.0/state/my")).json(&json!([{"key": "dj", "value": 3, "etag": e1}])).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let _ = c.disconnect().await;
}

/// Starts a sidecar with a broken MySQL component `bad` beside an in-memory `mem`, checks the
/// report names the component and holds `words`, and that `mem` still serves.
async fn assert_rejected(pairs: &[(&str, &str)], words: &[&str]) -> Sidecar {
    let sc = SidecarBuilder::new("app").file("bad.yaml", &yaml("bad", pairs)).memory("mem").allow_unhealthy().start().await;
    let url = sc.url("/v1.0/metadata");
    let report = eventually(Duration::from_secs(15), "the bad component's report", || async {
        let m: Value = sc.client.get(&url).send().await.ok()?.json().await.ok()?;
        m["extended"]["rapr.component.bad"].as_str().map(str::to_string)
    })
    .await;
    assert!(report.starts_with("failed: ") && report.contains("bad"), "{report}");
    for w in words {
        assert!(report.contains(w), "report names {w:?}: {report}");
    }
    assert!(!report.contains("secret"), "the password never shows: {report}");
    let r = sc.client.get(sc.url("/v1.0/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let r = sc.client.post(sc.url("/v1.0/state/mem")).json(&json!([{"key": "k", "value": 1}])).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(sc.client.get(sc.url("/v1.0/state/mem/k")).send().await.unwrap().text().await.unwrap(), "1");
    sc
}

#[tokio::test]
async fn mysql_unparseable_connection_string_is_reported() {
    assert_rejected(&[("connectionString", "root@localhost:3306")], &["connectionString", "not a valid MySQL DSN"]).await;
    assert_rejected(&[("connectionString", "root:@tcp(127.0.0.1:3306/")], &["connectionString", "closing parenthesis"]).await;
}

#[tokio::test]
async fn mysql_wrong_credentials_fail_init_and_are_retried() {
    let schema = Schema::new();
    let dsn = "rapr_no_such_user:secret@tcp(127.0.0.1:3306)/";
    let sc = assert_rejected(&[("connectionString", dsn), ("schemaName", &schema.0)], &["init failed", "rapr_no_such_user", "Access denied"]).await;
    assert!(!sc.logs().contains("secret@"), "the password is not logged");
    eventually(Duration::from_secs(10), "a retry of the failed init", || async { sc.logs().contains("retrying component").then_some(()) }).await;
    // Unreachable server: init fails fast, naming the component (direct build, no sidecar).
    let dead = format!("root:@tcp(127.0.0.1:{})/", free_port());
    let err = Registry::default().build_state(&spec("down", &[("connectionString", &dead)])).await.err().expect("init must fail");
    assert!(matches!(err, ComponentError::Init { .. }) && !err.is_permanent(), "{err}");
    assert!(err.to_string().contains("down") && err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn mysql_sql_in_table_name_is_rejected_and_never_executed() {
    let schema = Schema::new();
    let s = schema.0.as_str();
    let mut c = admin().await;
    c.query_drop(format!("CREATE DATABASE {s}")).await.unwrap();
    c.query_drop(format!("CREATE TABLE {s}.victim (id INT)")).await.unwrap();
    let evil = format!("t; DROP TABLE {s}.victim");
    assert_rejected(&[("connectionString", DSN), ("schemaName", s), ("tableName", &evil)], &["tableName", "not a valid identifier"]).await;
    let evil_schema = format!("{s}; DROP TABLE {s}.victim; --");
    assert_rejected(&[("connectionString", DSN), ("schemaName", &evil_schema)], &["schemaName"]).await;
    let tables: Vec<String> = c.exec("SELECT TABLE_NAME FROM information_schema.tables WHERE TABLE_SCHEMA = ?", (s,)).await.unwrap();
    assert_eq!(tables, ["victim"], "nothing ran: the victim survives and no table was created");
    let _ = c.disconnect().await;
}

#[tokio::test]
async fn mysql_large_values_within_the_sidecar_limit() {
    let schema = Schema::new();
    let sc = sidecar(&schema.0).await;
    let mut c = admin().await;
    let packet: Option<u64> = c.query_first("SELECT @@max_allowed_packet").await.unwrap();
    let packet = packet.unwrap();
    // ~3.9 MB: under the sidecar's 4 MiB body limit once wrapped in the save request's JSON.
    let big = "x".repeat(3_900_000);
    let r = sc.client.post(sc.url("/v1.0/state/my")).json(&json!([{"key": "big", "value": big}])).send().await.unwrap();
    if packet < 4 * 1024 * 1024 {
        // The backend refuses it: Dapr's save error naming the store, and the store keeps serving.
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["errorCode"], "ERR_STATE_SAVE", "{body}");
        assert!(body["message"].as_str().unwrap().contains("my"), "{body}");
    } else {
        println!("max_allowed_packet is {packet} bytes (>= 4 MiB): a 3.9 MB value must save and read back");
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", r.text().await.unwrap());
        let got = sc.client.get(sc.url("/v1.0/state/my/big")).send().await.unwrap();
        assert_eq!(got.status(), StatusCode::OK);
        let v: Value = got.json().await.unwrap();
        assert_eq!(v.as_str().map(str::len), Some(3_900_000));
    }
    let r = sc.client.post(sc.url("/v1.0/state/my")).json(&json!([{"key": "small", "value": 1}])).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let _ = c.disconnect().await;
}
