//! `state.postgresql` against the real PostgreSQL (127.0.0.1:5432, db `test`): the conformance
//! suite, data compatibility with Dapr's table layout through the real binary, and bad input.
//! Every test uses its own random table names and drops them at the end.

use std::sync::Arc;
use std::time::Duration;

use rapr::components::registry::Registry;
use rapr::components::state::conformance::{matrix, run, EtagRules, Outcome};
use rapr::components::state::{Feature, StateStore};
use rapr::config::ComponentSpec;
use reqwest::StatusCode;
use serde_json::Value;
use tokio_postgres::{Client, NoTls};

use crate::harness::{eventually, SidecarBuilder};

const CONN: &str = "host=127.0.0.1 user=postgres dbname=test";

/// A direct connection for checking rows behind rapr's back.
async fn pg() -> Client {
    let (client, conn) = tokio_postgres::connect(CONN, NoTls).await.expect("postgresql at 127.0.0.1:5432");
    tokio::spawn(conn);
    client
}

/// Random (state, metadata) table names for one test.
fn tables() -> (String, String) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    (format!("rapr_test_state_{}", &id[..12]), format!("rapr_test_meta_{}", &id[..12]))
}

async fn drop_tables(c: &Client, names: &[&str]) {
    for n in names {
        c.batch_execute(&format!("DROP TABLE IF EXISTS {n}")).await.unwrap();
    }
}

fn spec(name: &str, type_name: &str, pairs: &[(&str, &str)]) -> ComponentSpec {
    // A cold PostgreSQL migration can exceed the default 5 s.
    ComponentSpec { init_timeout: Duration::from_secs(20), ..ComponentSpec::new(name, type_name).with_metadata(pairs.iter().copied()) }
}

fn yaml(name: &str, pairs: &[(&str, &str)]) -> String {
    let mut y = format!("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: state.postgresql\n  version: v1\n  metadata:\n");
    for (k, v) in pairs {
        y.push_str(&format!("  - name: {k}\n    value: {}\n", serde_json::to_string(v).unwrap()));
    }
    y
}

async fn table_exists(c: &Client, name: &str) -> bool {
    c.query_one("SELECT to_regclass($1) IS NOT NULL", &[&name]).await.unwrap().get(0)
}

#[tokio::test]
async fn postgres_passes_the_state_conformance_suite() {
    let (table, meta) = tables();
    let md = [("connectionString", CONN), ("tableName", table.as_str()), ("metadataTableName", meta.as_str()), ("cleanupInterval", "1s")];
    let reg = Registry::default();
    let mut reports = Vec::new();
    // Both type names daprd registers build the same store, on the same tables.
    for type_name in ["state.postgresql", "state.postgres"] {
        let store: Arc<dyn StateStore> = reg.build_state(&spec("pg", type_name, &md)).await.expect("postgres store builds");
        let report = tokio::time::timeout(Duration::from_secs(60), run(type_name, Arc::clone(&store), EtagRules::POSTGRES_V1)).await.expect("suite timed out");
        for (feature, claim) in [("etag", Feature::ETag), ("ttl", Feature::Ttl), ("transactions", Feature::Transactional), ("query", Feature::QueryApi)] {
            assert!(store.features().contains(&claim), "{type_name} must claim {feature}");
            let outcome = &report.results.iter().find(|(f, _)| *f == feature).unwrap().1;
            assert_ne!(outcome, &Outcome::NotClaimed, "{type_name} claims {feature} but the suite skipped it");
        }
        store.close().await;
        reports.push(report);
    }
    println!("state conformance matrix (pass = ran and held, - = not claimed and refused cleanly):\n{}", matrix(&reports));
    let failures: Vec<String> = reports.iter().flat_map(|r| r.failures()).collect();
    let c = pg().await;
    let level: String = c.query_one(&format!("SELECT value FROM {meta} WHERE key = 'migrations'"), &[]).await.unwrap().get(0);
    drop_tables(&c, &[&table, &meta]).await;
    assert!(failures.is_empty(), "conformance failures:\n{}", failures.join("\n"));
    assert_eq!(level, "2", "migration level as Dapr's v1 records it");
}

#[tokio::test]
async fn postgres_sweeps_expired_rows_and_records_the_last_cleanup() {
    let (table, meta) = tables();
    let md = [("connectionString", CONN), ("tableName", table.as_str()), ("metadataTableName", meta.as_str()), ("cleanupInterval", "1s")];
    let store = Registry::default().build_state(&spec("pg", "state.postgresql", &md)).await.unwrap();
    let c = pg().await;
    // An expired row as daprd would have left it: invisible to reads, deleted by the sweep.
    c.execute(&format!("INSERT INTO {table} (key, value, isbinary, expiredate) VALUES ('a||old', '1', false, now() - interval '1 minute')"), &[]).await.unwrap();
    assert!(store.get(rapr::components::state::GetRequest { key: "a||old".into(), ..Default::default() }).await.unwrap().is_none());
    let q = format!("SELECT count(*) FROM {table}");
    eventually(Duration::from_secs(10), "the sweep to delete the expired row", || async { (c.query_one(&q, &[]).await.unwrap().get::<_, i64>(0) == 0).then_some(()) }).await;
    let last: String = c.query_one(&format!("SELECT value FROM {meta} WHERE key = 'last-cleanup'"), &[]).await.unwrap().get(0);
    assert!(!last.is_empty());
    store.close().await;
    drop_tables(&c, &[&table, &meta]).await;
}

#[tokio::test]
async fn postgres_rows_are_daprs_layout_both_ways_through_the_sidecar() {
    let (table, meta) = tables();
    let c = pg().await;
    let md = [("connectionString", CONN), ("tableName", table.as_str()), ("metadataTableName", meta.as_str())];
    let sc = SidecarBuilder::new("pgapp").file("pg.yaml", &yaml("pg", &md)).start().await;

    // Dapr's columns, names and types.
    let cols: Vec<(String, String, String)> = c
        .query("SELECT column_name::text, data_type::text, is_nullable::text FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position", &[&table])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let want = [
        ("key", "text", "NO"),
        ("value", "jsonb", "NO"),
        ("isbinary", "boolean", "NO"),
        ("insertdate", "timestamp with time zone", "NO"),
        ("updatedate", "timestamp with time zone", "YES"),
        ("expiredate", "timestamp with time zone", "YES"),
    ];
    let want: Vec<(String, String, String)> = want.iter().map(|(a, b, n)| (a.to_string(), b.to_string(), n.to_string())).collect();
    assert_eq!(cols, want);

    // An HTTP save lands as `app||key` with a jsonb value; the ETag rapr returns is the row's xmin.
    let r = sc.client.post(sc.url("/v1.0/state/pg")).body(r#"[{"key":"key","value":{"n":1,"s":"x"}},{"key":"ttl","value":1,"metadata":{"ttlInSeconds":"600"}}]"#).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", r.text().await.unwrap());
    let row = c.query_one(&format!("SELECT value, isbinary, xmin::text, updatedate IS NULL FROM {table} WHERE key = 'pgapp||key'"), &[]).await.unwrap();
    assert_eq!(row.get::<_, Value>(0), serde_json::json!({"n": 1, "s": "x"}));
    assert!(!row.get::<_, bool>(1));
    let xmin: String = row.get(2);
    let r = sc.client.get(sc.url("/v1.0/state/pg/key")).send().await.unwrap();
    assert_eq!(r.headers()["etag"].to_str().unwrap(), xmin);
    assert_eq!(r.text().await.unwrap(), r#"{"n":1,"s":"x"}"#);
    let exp: bool = c.query_one(&format!("SELECT expiredate > now() + interval '590 seconds' FROM {table} WHERE key = 'pgapp||ttl'"), &[]).await.unwrap().get(0);
    assert!(exp, "ttlInSeconds sets expiredate");
    let r = sc.client.get(sc.url("/v1.0/state/pg/ttl")).send().await.unwrap();
    assert!(r.headers().contains_key("metadata.ttlexpiretime"), "{:?}", r.headers());

    // Rows written the way daprd writes them read back through rapr, JSON and binary.
    c.execute(
        &format!("INSERT INTO {table} (key, value, isbinary) VALUES ('pgapp||fromdapr', '{{\"who\": \"daprd\", \"list\": [1, 2]}}', false), ('pgapp||bin', to_jsonb($1::text), true)"),
        &[&"AP+AAWJ5dGVz"],
    )
    .await
    .unwrap();
    let xmin: String = c.query_one(&format!("SELECT xmin::text FROM {table} WHERE key = 'pgapp||fromdapr'"), &[]).await.unwrap().get(0);
    let r = sc.client.get(sc.url("/v1.0/state/pg/fromdapr")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), xmin);
    assert_eq!(r.json::<Value>().await.unwrap(), serde_json::json!({"who": "daprd", "list": [1, 2]}));
    let r = sc.client.get(sc.url("/v1.0/state/pg/bin")).send().await.unwrap();
    assert_eq!(r.headers()["etag"].to_str().unwrap(), xmin, "both rows came from one transaction");
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"\x00\xff\x80\x01bytes");

    // That ETag works for a conditional write, and the row's xmin moves on.
    let r = sc.client.post(sc.url("/v1.0/state/pg")).body(format!(r#"[{{"key":"fromdapr","value":2,"etag":"{xmin}"}}]"#)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let row = c.query_one(&format!("SELECT value::text, xmin::text, updatedate IS NOT NULL FROM {table} WHERE key = 'pgapp||fromdapr'"), &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "2");
    assert_ne!(row.get::<_, String>(1), xmin);
    assert!(row.get::<_, bool>(2), "an update sets updatedate");
    drop(sc);
    drop_tables(&c, &[&table, &meta]).await;
}

#[tokio::test]
async fn postgres_etags_malformed_is_400_and_stale_is_409() {
    let (table, meta) = tables();
    let md = [("connectionString", CONN), ("tableName", table.as_str()), ("metadataTableName", meta.as_str())];
    let sc = SidecarBuilder::new("pgetag").file("pg.yaml", &yaml("pg", &md)).start().await;
    let save = |body: String| sc.client.post(sc.url("/v1.0/state/pg")).body(body).send();
    assert_eq!(save(r#"[{"key":"k","value":1}]"#.into()).await.unwrap().status(), StatusCode::NO_CONTENT);
    let r = save(r#"[{"key":"k","value":2,"etag":"not-a-number"}]"#.into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errorCode"], "ERR_STATE_SAVE");
    assert!(body["message"].as_str().unwrap().contains("invalid etag value"), "{body}");
    let r = save(r#"[{"key":"k","value":2,"etag":"1"}]"#.into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = sc.client.delete(sc.url("/v1.0/state/pg/k")).header("If-Match", "x1").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["errorCode"], "ERR_STATE_DELETE");
    drop(sc);
    drop_tables(&pg().await, &[&table, &meta]).await;
}

#[tokio::test]
async fn postgres_unreachable_server_fails_init_and_may_be_retried() {
    let port = crate::harness::free_port().to_string();
    let conn = format!("host=127.0.0.1 port={port} user=postgres dbname=test");
    let e = match Registry::default().build_state(&spec("down", "state.postgresql", &[("connectionString", &conn), ("timeout", "2s")])).await {
        Ok(_) => panic!("a store on a closed port must not start"),
        Err(e) => e,
    };
    assert!(!e.is_permanent(), "a server that is down can come back: {e}");
    let text = e.to_string();
    assert!(text.contains("component down") && text.contains("cannot connect to postgresql"), "{text}");
}

#[tokio::test]
async fn postgres_bad_configs_fail_their_component_only_with_clear_errors() {
    let c = pg().await;
    let (table, meta) = tables();
    let injected = format!("{table}_injected");
    let evil = format!("{table}; CREATE TABLE {injected} (x int)");
    let sc = SidecarBuilder::new("pgbad")
        .file("unparsable.yaml", &yaml("unparsable", &[("connectionString", "host=127.0.0.1 user=postgres password=s3cret dbname")]))
        .file("nouser.yaml", &yaml("nouser", &[("connectionString", "host=127.0.0.1 user=rapr_no_such_user dbname=test"), ("tableName", &table), ("metadataTableName", &meta)]))
        .file("injection.yaml", &yaml("injection", &[("connectionString", CONN), ("tableName", &evil), ("metadataTableName", &meta)]))
        .memory("mem")
        .allow_unhealthy()
        .start()
        .await;

    let url = sc.url("/v1.0/metadata");
    let statuses: Value = eventually(Duration::from_secs(20), "all three components reported failed", || async {
        let m: Value = sc.client.get(&url).send().await.ok()?.json().await.ok()?;
        let ext = m["extended"].clone();
        ["unparsable", "nouser", "injection"].iter().all(|n| ext[format!("rapr.component.{n}")].as_str().is_some_and(|s| s.starts_with("failed: "))).then_some(ext)
    })
    .await;
    let status = |n: &str| statuses[format!("rapr.component.{n}")].as_str().unwrap().to_string();
    for n in ["unparsable", "nouser", "injection"] {
        println!("{n}: {}", status(n));
    }
    let s = status("unparsable");
    assert!(s.contains("component unparsable") && s.contains("connectionString") && s.contains("does not parse"), "{s}");
    assert!(!s.contains("s3cret"), "the password must not leak: {s}");
    let s = status("nouser");
    assert!(s.contains("component nouser") && s.contains("rapr_no_such_user"), "{s}");
    let s = status("injection");
    assert!(s.contains("component injection") && s.contains("tableName") && s.contains("not a valid table name"), "{s}");

    // The SQL in the table name never ran, and the failed stores answer Dapr's error.
    assert!(!table_exists(&c, &injected).await, "injected SQL was executed");
    assert!(!table_exists(&c, &meta).await, "nothing was created for a rejected component");
    let r = sc.client.get(sc.url("/v1.0/state/nouser/k")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // The in-memory store serves throughout.
    let r = sc.client.post(sc.url("/v1.0/state/mem")).body(r#"[{"key":"k","value":"ok"}]"#).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = sc.client.get(sc.url("/v1.0/state/mem/k")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), r#""ok""#);
    drop(sc);
    drop_tables(&c, &[&injected, &table, &meta]).await;
}

/// daprd keeps the migration level in the metadata table, shared by every state table using it:
/// a second `tableName` on an already-migrated metadata table is never created. rapr does the
/// same, warns at init, and a component with its own `metadataTableName` gets its table.
#[tokio::test]
async fn postgres_migration_level_is_per_metadata_table_and_a_missing_table_warns() {
    let c = pg().await;
    let (first, meta) = tables();
    let (second, own_meta) = tables();
    let third = format!("{second}_own");
    let md = |table: &str, meta: &str| [("connectionString", CONN.to_string()), ("tableName", table.to_string()), ("metadataTableName", meta.to_string())];
    let (md_first, md_second, md_third) = (md(&first, &meta), md(&second, &meta), md(&third, &own_meta));
    // The first component migrates `meta` to the latest level and creates its table.
    let store = Registry::default().build_state(&spec("first", "state.postgresql", &refs(&md_first))).await.expect("first store builds");
    store.close().await;
    assert!(table_exists(&c, &first).await);

    let sc = SidecarBuilder::new("pgshared")
        .file("second.yaml", &yaml("second", &refs(&md_second)))
        .file("third.yaml", &yaml("third", &refs(&md_third)))
        .start()
        .await;
    assert!(!table_exists(&c, &second).await, "daprd never creates a second table under a migrated metadata table");
    let logs = sc.logs();
    assert!(logs.lines().any(|l| (l.contains("WARN") || l.contains("level=warning")) && l.contains(&second) && l.contains("metadataTableName")), "no warning naming {second}:\n{logs}");
    let r = sc.client.post(sc.url("/v1.0/state/second")).body(r#"[{"key":"k","value":1}]"#).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    // Its own metadata table: its own level, its own table.
    let r = sc.client.post(sc.url("/v1.0/state/third")).body(r#"[{"key":"k","value":1}]"#).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(table_exists(&c, &third).await);
    drop(sc);
    drop_tables(&c, &[&first, &second, &third, &meta, &own_meta]).await;
}

fn refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}
