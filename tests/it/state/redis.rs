//! `state.redis` against real Redis servers: the conformance suite on the shared server
//! (127.0.0.1:6379, random key prefixes, keys removed afterwards), Dapr's data layout through
//! the real binary, bad metadata, and supervision with PRIVATE redis-server instances on free
//! ports that these tests start, kill and restart (the shared server is never stopped).

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rapr::components::registry::Registry;
use rapr::components::state::conformance::{matrix, run, EtagRules, Outcome};
use rapr::components::state::{
    BulkGetItem, DeleteRequest, Feature, GetRequest, Metadata, SetRequest, StateStore, StoreError, StoredItem, TransactionOp,
};
use rapr::config::ComponentSpec;
use rapr_proto::runtime::v1 as pb;
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::private_server::PrivateServer;
use crate::harness::{eventually, free_port, Sidecar, SidecarBuilder};

const SHARED: &str = "127.0.0.1:6379";

async fn redis_conn(addr: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{addr}/")).unwrap().get_multiplexed_async_connection().await.unwrap()
}

async fn cmd<T: redis::FromRedisValue>(conn: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> T {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(conn).await.unwrap()
}

/// Deletes every key matching `pattern` on the shared server.
async fn cleanup(pattern: &str) {
    let mut conn = redis_conn(SHARED).await;
    let keys: Vec<String> = cmd(&mut conn, &["KEYS", pattern]).await;
    for k in keys {
        let _: i64 = cmd(&mut conn, &["DEL", &k]).await;
    }
}

fn redis_yaml(name: &str, host: Option<&str>, extra: &[(&str, &str)]) -> String {
    let mut y = format!("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: state.redis\n  version: v1\n  metadata:\n");
    for (k, v) in host.map(|h| ("redisHost", h)).into_iter().chain(extra.iter().copied()) {
        y.push_str(&format!("  - name: {k}\n    value: \"{v}\"\n"));
    }
    y
}

/// A private redis-server on `port` with its own data folder.
fn private_redis(port: u16, extra: &[&str]) -> PrivateServer {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let dir = tempfile::tempdir().unwrap();
    PrivateServer::new(
        "the private redis-server",
        port,
        Box::new(move || {
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .args(&extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server")
        }),
    )
}

async fn post(sc: &Sidecar, path: &str, body: &str) -> reqwest::Response {
    sc.client.post(sc.url(path)).body(body.to_string()).send().await.unwrap()
}

async fn get(sc: &Sidecar, path: &str) -> reqwest::Response {
    sc.client.get(sc.url(path)).send().await.unwrap()
}

async fn json_of(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn component_status(sc: &Sidecar, name: &str) -> Option<String> {
    let m: Value = get(sc, "/v1.0/metadata").await.json().await.unwrap();
    m["extended"][format!("rapr.component.{name}")].as_str().map(str::to_string)
}

/// Forwards to a store and remembers every key touched, so the test deletes exactly its keys.
struct Recording {
    inner: Arc<dyn StateStore>,
    // reason: test-only bookkeeping, never held across an await.
    #[allow(clippy::disallowed_types)]
    keys: std::sync::Mutex<HashSet<String>>,
}

impl Recording {
    fn note<'a>(&self, keys: impl IntoIterator<Item = &'a String>) {
        self.keys.lock().unwrap().extend(keys.into_iter().cloned());
    }
}

#[async_trait]
impl StateStore for Recording {
    fn features(&self) -> &'static [Feature] {
        self.inner.features()
    }
    async fn get(&self, req: GetRequest) -> Result<Option<StoredItem>, StoreError> {
        self.inner.get(req).await
    }
    async fn set(&self, req: SetRequest) -> Result<(), StoreError> {
        self.note([&req.key]);
        self.inner.set(req).await
    }
    async fn delete(&self, req: DeleteRequest) -> Result<(), StoreError> {
        self.inner.delete(req).await
    }
    async fn bulk_get(&self, reqs: Vec<GetRequest>) -> Result<Vec<BulkGetItem>, StoreError> {
        self.inner.bulk_get(reqs).await
    }
    async fn transact(&self, ops: Vec<TransactionOp>, md: Metadata) -> Result<(), StoreError> {
        for op in &ops {
            if let TransactionOp::Set(r) = op {
                self.note([&r.key]);
            }
        }
        self.inner.transact(ops, md).await
    }
}

fn spec(name: &str, pairs: &[(&str, &str)]) -> ComponentSpec {
    ComponentSpec::new(name, "state.redis").with_metadata(pairs.iter().copied())
}

#[tokio::test]
async fn redis_store_passes_the_state_conformance_suite() {
    let store = Registry::default().build_state(&spec("conformance", &[("redisHost", SHARED)])).await.expect("state.redis builds");
    let rec = Arc::new(Recording { inner: store, keys: Default::default() });
    let report = tokio::time::timeout(Duration::from_secs(60), run("state.redis", rec.clone() as Arc<dyn StateStore>, EtagRules::REDIS)).await.expect("suite timed out");
    let keys: Vec<String> = rec.keys.lock().unwrap().iter().cloned().collect();
    let mut conn = redis_conn(SHARED).await;
    for k in &keys {
        let _: i64 = cmd(&mut conn, &["DEL", k]).await;
    }
    println!("state conformance matrix (pass = ran and held, - = not claimed and refused cleanly):\n{}", matrix(std::slice::from_ref(&report)));
    for (feature, claim) in [("etag", Feature::ETag), ("ttl", Feature::Ttl), ("transactions", Feature::Transactional)] {
        let outcome = &report.results.iter().find(|(f, _)| *f == feature).unwrap().1;
        assert!(rec.features().contains(&claim));
        assert_eq!(outcome, &Outcome::Passed, "state.redis claims {feature}");
    }
    assert!(report.failures().is_empty(), "conformance failures:\n{}", report.failures().join("\n"));
    assert!(!rec.features().contains(&Feature::QueryApi));
    assert!(!keys.is_empty());
}

#[tokio::test]
async fn redis_keeps_daprs_layout_in_both_directions() {
    let app = format!("rl{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let sc = SidecarBuilder::new(&app)
        .file("r.yaml", &redis_yaml("rstore", Some(SHARED), &[("actorStateStore", "false"), ("queryIndexes", "")]))
        .file("rttl.yaml", &redis_yaml("rttl", Some(SHARED), &[("ttlInSeconds", "50")]))
        .start()
        .await;
    let mut conn = redis_conn(SHARED).await;
    let key = |k: &str| format!("{app}||{k}");

    // rapr writes Dapr's hash: data (the value bytes) and version (1, then 2).
    assert_eq!(post(&sc, "/v1.0/state/rstore", r#"[{"key":"k","value":{"a":1}}]"#).await.status(), StatusCode::NO_CONTENT);
    let h: HashMap<String, String> = cmd(&mut conn, &["HGETALL", &key("k")]).await;
    assert_eq!(h, HashMap::from([("data".into(), r#"{"a":1}"#.into()), ("version".into(), "1".into())]));
    let r = get(&sc, "/v1.0/state/rstore/k").await;
    assert_eq!(r.headers()["etag"], "1");
    assert_eq!(r.text().await.unwrap(), r#"{"a":1}"#);
    assert_eq!(post(&sc, "/v1.0/state/rstore", r#"[{"key":"k","value":2,"etag":"1"}]"#).await.status(), StatusCode::NO_CONTENT);
    let v: String = cmd(&mut conn, &["HGET", &key("k"), "version"]).await;
    assert_eq!(v, "2");
    let (status, body) = json_of(post(&sc, "/v1.0/state/rstore", r#"[{"key":"k","value":3,"etag":"1"}]"#).await).await;
    assert_eq!((status, body["errorCode"].as_str()), (StatusCode::CONFLICT, Some("ERR_STATE_SAVE")), "{body}");
    let (status, _) = json_of(post(&sc, "/v1.0/state/rstore", r#"[{"key":"k","value":3,"etag":"abc"}]"#).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a non-numeric etag is invalid");

    // A hash written as Dapr writes it reads back with etag = version; deletes check it.
    let _: i64 = cmd(&mut conn, &["HSET", &key("dapr"), "data", r#""from dapr""#, "version", "7"]).await;
    let r = get(&sc, "/v1.0/state/rstore/dapr").await;
    assert_eq!(r.headers()["etag"], "7");
    assert_eq!(r.text().await.unwrap(), r#""from dapr""#);
    let r = sc.client.delete(sc.url("/v1.0/state/rstore/dapr")).header("If-Match", "6").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = sc.client.delete(sc.url("/v1.0/state/rstore/dapr")).header("If-Match", "7").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(cmd::<i64>(&mut conn, &["EXISTS", &key("dapr")]).await, 0);
    // A plain string (Dapr's pre-hash layout) reads as a value without an etag.
    let _: () = cmd(&mut conn, &["SET", &key("plain"), r#""old""#]).await;
    let r = get(&sc, "/v1.0/state/rstore/plain").await;
    assert!(!r.headers().contains_key("etag"));
    assert_eq!(r.text().await.unwrap(), r#""old""#);

    // TTL is Redis's own; -1 persists; the component default applies when the request has none.
    let body = r#"[{"key":"t","value":1,"metadata":{"ttlInSeconds":"100"}}]"#;
    assert_eq!(post(&sc, "/v1.0/state/rstore", body).await.status(), StatusCode::NO_CONTENT);
    let ttl: i64 = cmd(&mut conn, &["TTL", &key("t")]).await;
    assert!((1..=100).contains(&ttl), "ttl {ttl}");
    assert!(get(&sc, "/v1.0/state/rstore/t").await.headers().contains_key("metadata.ttlexpiretime"));
    assert_eq!(post(&sc, "/v1.0/state/rstore", r#"[{"key":"t","value":1,"metadata":{"ttlInSeconds":"-1"}}]"#).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(cmd::<i64>(&mut conn, &["TTL", &key("t")]).await, -1);
    assert_eq!(post(&sc, "/v1.0/state/rttl", r#"[{"key":"d","value":1}]"#).await.status(), StatusCode::NO_CONTENT);
    let ttl: i64 = cmd(&mut conn, &["TTL", &key("d")]).await;
    assert!((1..=50).contains(&ttl), "component default ttl {ttl}");
    assert_eq!(post(&sc, "/v1.0/state/rttl", r#"[{"key":"d","value":1,"metadata":{"ttlInSeconds":"-1"}}]"#).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(cmd::<i64>(&mut conn, &["TTL", &key("d")]).await, -1, "-1 overrides the component default");

    // Transactions and bulk get.
    let tx = r#"{"operations":[{"operation":"upsert","request":{"key":"x1","value":"a"}},{"operation":"delete","request":{"key":"k"}}]}"#;
    assert_eq!(post(&sc, "/v1.0/state/rstore/transaction", tx).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(cmd::<i64>(&mut conn, &["EXISTS", &key("k")]).await, 0);
    let (_, items) = json_of(post(&sc, "/v1.0/state/rstore/bulk", r#"{"keys":["x1","nope"]}"#).await).await;
    assert_eq!(items[0]["data"], "a");
    assert_eq!(items[0]["etag"], "1");
    assert!(items[1].get("data").is_none(), "{items}");
    drop(sc);
    cleanup(&format!("{app}||*")).await;
}

#[tokio::test]
async fn bad_redis_metadata_fails_only_that_component() {
    let port = free_port();
    let mut private = private_redis(port, &["--requirepass", "right-password"]);
    private.start().await;
    let host = format!("127.0.0.1:{port}");
    let sc = SidecarBuilder::new("rbad")
        .file("badhost.yaml", &redis_yaml("badhost", Some("127.0.0.1:notaport"), &[]))
        .file("nohost.yaml", &redis_yaml("nohost", None, &[("redisPassword", "x")]))
        .file("tls.yaml", &redis_yaml("tls", Some(SHARED), &[("enableTLS", "true")]))
        .file("wrongpass.yaml", &redis_yaml("wrongpass", Some(&host), &[("redisPassword", "wrong"), ("dialTimeout", "1s")]))
        .file("rightpass.yaml", &redis_yaml("rightpass", Some(&host), &[("redisPassword", "right-password")]))
        .memory("mem")
        .allow_unhealthy()
        .start()
        .await;
    for (name, expect) in [
        ("badhost", vec!["badhost", "redisHost", "notaport"]),
        ("nohost", vec!["nohost", "redisHost", "is required"]),
        ("tls", vec!["tls", "enableTLS", "not supported"]),
        ("wrongpass", vec!["wrongpass", "init failed", &host]),
    ] {
        let status = eventually(Duration::from_secs(20), &format!("{name} to be reported failed"), || async {
            component_status(&sc, name).await.filter(|s| s.contains(expect[1]))
        })
        .await;
        println!("{name}: {status}");
        for e in expect {
            assert!(status.contains(e), "{name}: {status:?} lacks {e:?}");
        }
        let (code, body) = json_of(get(&sc, &format!("/v1.0/state/{name}/k")).await).await;
        assert_eq!((code, body["errorCode"].as_str()), (StatusCode::BAD_REQUEST, Some("ERR_STATE_STORE_NOT_FOUND")), "{body}");
    }
    let (code, body) = json_of(get(&sc, "/v1.0/healthz").await).await;
    assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    // The other components serve throughout; the right password connects to the same server.
    for store in ["mem", "rightpass"] {
        assert_eq!(post(&sc, &format!("/v1.0/state/{store}"), r#"[{"key":"k","value":"ok"}]"#).await.status(), StatusCode::NO_CONTENT);
        assert_eq!(get(&sc, &format!("/v1.0/state/{store}/k")).await.text().await.unwrap(), r#""ok""#);
    }
    // A value over Redis's 512 MB string limit is not exercised: the sidecar's body limit is far
    // below it, so such a request never reaches the store.
}

#[tokio::test]
async fn redis_component_recovers_when_its_server_appears() {
    let port = free_port();
    let host = format!("127.0.0.1:{port}");
    let sc = SidecarBuilder::new("rlate")
        .file("late.yaml", &redis_yaml("late", Some(&host), &[("dialTimeout", "1s")]))
        .memory("mem")
        .allow_unhealthy()
        .start()
        .await;

    // Step 1: nothing listens: failed, named in health and metadata; the in-memory store serves.
    let status = eventually(Duration::from_secs(15), "late to be reported failed", || async {
        component_status(&sc, "late").await.filter(|s| s.contains("error connecting to redis"))
    })
    .await;
    println!("step 1: late is {status:?}");
    assert!(status.contains(&host), "{status}");
    let (code, body) = json_of(get(&sc, "/v1.0/healthz").await).await;
    assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body["message"].as_str().unwrap_or_default().contains("late"), "{body}");
    let (code, body) = json_of(get(&sc, "/v1.0/state/late/k").await).await;
    assert_eq!((code, body["errorCode"].as_str()), (StatusCode::BAD_REQUEST, Some("ERR_STATE_STORE_NOT_FOUND")));
    assert_eq!(post(&sc, "/v1.0/state/mem", r#"[{"key":"k","value":1}]"#).await.status(), StatusCode::NO_CONTENT);

    // Step 2: the server appears; the supervisor's retry brings the component up by itself.
    let mut server = private_redis(port, &[]);
    server.start().await;
    println!("step 2: redis-server listening on {host}");
    let url = sc.url("/v1.0/healthz");
    eventually(Duration::from_secs(45), "late to recover", || async { (sc.client.get(&url).send().await.unwrap().status() == 204).then_some(()) }).await;
    println!("step 3: healthz 204");
    assert_eq!(post(&sc, "/v1.0/state/late", r#"[{"key":"k","value":"back"}]"#).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(get(&sc, "/v1.0/state/late/k").await.text().await.unwrap(), r#""back""#);
    let data: String = cmd(&mut redis_conn(&host).await, &["HGET", "rlate||k", "data"]).await;
    assert_eq!(data, r#""back""#);
    assert!(component_status(&sc, "late").await.is_none());
    assert!(sc.logs().contains("retrying component"), "the log shows the retries");
}

#[tokio::test]
async fn redis_outage_mid_traffic_answers_daprs_errors_and_recovers() {
    let port = free_port();
    let host = format!("127.0.0.1:{port}");
    let mut server = private_redis(port, &[]);
    server.start().await;
    let sc = Arc::new(
        SidecarBuilder::new("rflaky")
            .file("flaky.yaml", &redis_yaml("flaky", Some(&host), &[("dialTimeout", "1s"), ("readTimeout", "1s")]))
            .memory("mem")
            .start()
            .await,
    );

    // A stream of saves, counting acknowledgements and errors.
    let (stop, acked, failed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let writer = {
        let (sc, stop, acked, failed) = (Arc::clone(&sc), Arc::clone(&stop), Arc::clone(&acked), Arc::clone(&failed));
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let r = sc.client.post(sc.url("/v1.0/state/flaky")).body(format!(r#"[{{"key":"s{i}","value":{i}}}]"#)).timeout(Duration::from_secs(15)).send().await;
                let ok = r.is_ok_and(|r| r.status() == StatusCode::NO_CONTENT);
                (if ok { &acked } else { &failed }).fetch_add(1, Ordering::SeqCst);
                outcomes.push(ok);
            }
            outcomes
        })
    };
    eventually(Duration::from_secs(20), "saves to be acknowledged", || async { (acked.load(Ordering::SeqCst) >= 20).then_some(()) }).await;

    // The server dies mid-stream: Dapr's errors, the in-memory store keeps serving.
    server.kill();
    let acked_at_kill = acked.load(Ordering::SeqCst);
    println!("killed redis-server after {acked_at_kill} acknowledged saves");
    eventually(Duration::from_secs(20), "saves to fail", || async { (failed.load(Ordering::SeqCst) >= 3).then_some(()) }).await;
    let (code, body) = json_of(post(&sc, "/v1.0/state/flaky", r#"[{"key":"x","value":1}]"#).await).await;
    assert_eq!((code, body["errorCode"].as_str()), (StatusCode::INTERNAL_SERVER_ERROR, Some("ERR_STATE_SAVE")), "{body}");
    println!("save during the outage: {code} {body}");
    let (code, body) = json_of(get(&sc, "/v1.0/state/flaky/s1").await).await;
    assert_eq!((code, body["errorCode"].as_str()), (StatusCode::INTERNAL_SERVER_ERROR, Some("ERR_STATE_GET")), "{body}");
    let err = sc.grpc().await.get_state(pb::GetStateRequest { store_name: "flaky".into(), key: "s1".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    // Bulk get answers per key, as Dapr's per-key bulk get does.
    let (code, items) = json_of(post(&sc, "/v1.0/state/flaky/bulk", r#"{"keys":["s1"]}"#).await).await;
    assert_eq!(code, StatusCode::OK, "{items}");
    assert!(items[0]["error"].as_str().is_some_and(|e| !e.is_empty()), "{items}");
    assert_eq!(post(&sc, "/v1.0/state/mem", r#"[{"key":"k","value":1}]"#).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(get(&sc, "/v1.0/state/mem/k").await.status(), StatusCode::OK);

    // The server returns on the same port: requests succeed again, no sidecar restart.
    server.start().await;
    let failed_at_restart = failed.load(Ordering::SeqCst);
    println!("restarted redis-server after {failed_at_restart} failed saves");
    let acked_at_restart = acked.load(Ordering::SeqCst);
    eventually(Duration::from_secs(30), "saves to succeed again", || async { (acked.load(Ordering::SeqCst) >= acked_at_restart + 10).then_some(()) }).await;
    stop.store(true, Ordering::SeqCst);
    let outcomes = writer.await.unwrap();
    assert!(outcomes.iter().rev().take(5).all(|ok| *ok), "the last saves succeed");
    assert!(acked_at_kill >= 20 && failed_at_restart >= 3, "the fault really hit the stream");
    assert_eq!(post(&sc, "/v1.0/state/flaky", r#"[{"key":"after","value":"yes"}]"#).await.status(), StatusCode::NO_CONTENT);
    let r = get(&sc, "/v1.0/state/flaky/after").await;
    assert_eq!(r.headers()["etag"], "1");
    assert_eq!(r.text().await.unwrap(), r#""yes""#);
}

#[tokio::test]
async fn a_hung_redis_server_times_out_instead_of_hanging() {
    let port = free_port();
    let mut server = private_redis(port, &[]);
    server.start().await;
    let host = format!("127.0.0.1:{port}");
    let sc = SidecarBuilder::new("rhung")
        .file("hung.yaml", &redis_yaml("hung", Some(&host), &[("dialTimeout", "500ms"), ("readTimeout", "500ms")]))
        .start()
        .await;
    assert_eq!(post(&sc, "/v1.0/state/hung", r#"[{"key":"k","value":1}]"#).await.status(), StatusCode::NO_CONTENT);

    // The server stops answering (SIGSTOP): the call's deadline turns the hang into an error.
    server.signal("STOP");
    let started = Instant::now();
    let (code, body) = json_of(post(&sc, "/v1.0/state/hung", r#"[{"key":"k","value":2}]"#).await).await;
    println!("save to a hung server after {:?}: {code} {body}", started.elapsed());
    assert_eq!((code, body["errorCode"].as_str()), (StatusCode::INTERNAL_SERVER_ERROR, Some("ERR_STATE_SAVE")), "{body}");
    assert!(started.elapsed() < Duration::from_secs(10), "answered within the deadline, not after a hang");
    let (code, body) = json_of(get(&sc, "/v1.0/state/hung/k").await).await;
    assert_eq!((code, body["errorCode"].as_str()), (StatusCode::INTERNAL_SERVER_ERROR, Some("ERR_STATE_GET")), "{body}");

    // It resumes: requests succeed again.
    server.signal("CONT");
    eventually(Duration::from_secs(20), "saves to succeed after SIGCONT", || async {
        (post(&sc, "/v1.0/state/hung", r#"[{"key":"k","value":3}]"#).await.status() == StatusCode::NO_CONTENT).then_some(())
    })
    .await;
    assert_eq!(get(&sc, "/v1.0/state/hung/k").await.text().await.unwrap(), "3");
}
