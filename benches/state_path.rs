//! Micro-benchmarks of a state call (`rapr bench state-get` / `state-save` against
//! `state.in-memory`), layer by layer from the store up, so a regression names its layer.
//!
//! ```text
//! keys/*     KeyPrefix::apply (`appid||key`, every request) and strip (query answers)
//! store/*    MemoryStore get / set / bulk_get called directly
//! answers/*  bulk_answers: the ordered bulk-get answer the SQL stores build from their rows
//! client/*   StateClient (deadline, crash points, drain token) -> the store
//! facade/*   StateApi (directory snapshot, key prefix, resiliency policy, component metrics)
//!            over a host started by the ComponentSupervisor, as the sidecar runs it
//! http/*     the HTTP API router over that facade: routing, extractors, the JSON body decoded
//!            and re-encoded (save), the JSON answers (bulk get), the GET answer's headers;
//!            without the metrics and trace middleware, which `http_api.rs` measures
//! ```
//! Values are 1 KB of JSON, the store holds 1,000 keys. The async layers run on a
//! current-thread runtime: the figures leave out the cross-thread wake-ups of the sidecar's
//! multi-thread runtime, which `rapr bench` measures with the rest.
//!
//! Setup failures `expect` with a message: a fixture that cannot be built has no figure to give.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::Request;
use http_body_util::BodyExt;
use ractor::Actor;
use rapr::api::http::{HttpShared, HttpState};
use rapr::api::Facades;
use rapr::api::invoke::InvokeApi;
use rapr::api::metadata::{AppConnection, MetadataApi};
use rapr::api::secrets::SecretsApi;
use rapr::api::state::{SaveItem, StateApi};
use rapr::api::state_keys::KeyPrefix;
use rapr::components::directory::DirectoryHandle;
use rapr::components::registry::Registry;
use rapr::components::state::memory::MemoryStore;
use rapr::components::state::{bulk_answers, Consistency, GetRequest, Metadata, SetRequest, StateClient, StateStore, StoreError, StoredItem};
use rapr::components::supervisor::{ComponentSupervisor, ComponentSupervisorArgs, ComponentSupervisorClient};
use rapr::config::ComponentSpec;
use rapr::resiliency::Resiliency;
use rapr::invoke::remote::RemoteInvoker;
use rapr::runtime::metrics::Metrics;
use rapr::runtime::restart::RestartPolicy;
use rapr::runtime::shutdown::ShutdownHandle;
use tokio::runtime::Runtime;
use tower::ServiceExt;

const APP: &str = "bench-app";
const STORE: &str = "statestore";
const KEYS: usize = 1000;
const BULK: usize = 10;

fn value() -> Bytes {
    let mut v = br#"{"data":""#.to_vec();
    v.resize(1024 - 2, b'x');
    v.extend_from_slice(br#""}"#);
    Bytes::from(v)
}

fn stored_key(i: usize) -> String {
    format!("{APP}||key-{i}")
}

fn get(key: String) -> GetRequest {
    GetRequest { key, metadata: Metadata::new(), consistency: Consistency::Eventual }
}

fn set(key: String, value: &Bytes) -> SetRequest {
    SetRequest { key, value: value.clone(), is_json: true, ..Default::default() }
}

fn spec() -> ComponentSpec {
    ComponentSpec::new(STORE, "state.in-memory")
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
}

/// Writes the 1,000 keys through any layer's `set`.
async fn fill<F, Fut>(value: &Bytes, set_one: F)
where
    F: Fn(usize, Bytes) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for i in 0..KEYS {
        set_one(i, value.clone()).await;
    }
}

fn keys(c: &mut Criterion) {
    let prefix = KeyPrefix::fixed(Some(APP));
    let mut g = c.benchmark_group("keys");
    g.bench_function("apply", |b| b.iter(|| prefix.apply(black_box("order-1"))));
    g.bench_function("strip", |b| b.iter(|| KeyPrefix::strip(black_box("bench-app||order-1"))));
    g.finish();
}

fn store(c: &mut Criterion) {
    let rt = runtime();
    let store = MemoryStore::new();
    let value = value();
    rt.block_on(fill(&value, |i, v| {
        let store = &store;
        async move { store.set(set(stored_key(i), &v)).await.expect("an unconditional write") }
    }));
    let bulk: Vec<GetRequest> = (0..BULK).map(|i| get(stored_key(i * 7))).collect();
    let mut g = c.benchmark_group("store");
    g.bench_function("get", |b| b.to_async(&rt).iter(|| store.get(get(stored_key(black_box(500))))));
    g.bench_function("get_missing", |b| b.to_async(&rt).iter(|| store.get(get(black_box("bench-app||nope").to_string()))));
    g.bench_function("set", |b| b.to_async(&rt).iter(|| store.set(set(stored_key(black_box(500)), &value))));
    g.bench_function("bulk_get_10", |b| b.to_async(&rt).iter_batched(|| bulk.clone(), |reqs| store.bulk_get(reqs), BatchSize::SmallInput));
    g.finish();
}

/// `bulk_answers` as the SQL stores call it: rows by key (value, etag), half the keys found.
fn answers(c: &mut Criterion) {
    let value = value();
    let keys: Vec<String> = (0..BULK).map(stored_key).collect();
    let rows: HashMap<String, (Vec<u8>, String)> = keys.iter().step_by(2).map(|k| (k.clone(), (value.to_vec(), "7d2c1b0e-4f3a-4e5b-9c8d-112233445566".to_string()))).collect();
    let decode = |(data, etag): (Vec<u8>, String)| Ok::<_, StoreError>(StoredItem { data: Bytes::from(data), etag: Some(etag), metadata: Metadata::new() });
    let mut g = c.benchmark_group("answers");
    g.bench_function("bulk_answers_10", |b| b.iter_batched(|| (keys.clone(), rows.clone()), |(k, r)| bulk_answers(k, r, decode), BatchSize::SmallInput));
    g.finish();
}

fn client(c: &mut Criterion) {
    let rt = runtime();
    let value = value();
    let client = StateClient::new(Arc::new(MemoryStore::new()), Duration::from_secs(5), tokio_util::task::TaskTracker::new());
    rt.block_on(fill(&value, |i, v| {
        let client = &client;
        async move { client.set(set(stored_key(i), &v)).await.expect("an unconditional write") }
    }));
    let mut g = c.benchmark_group("client");
    g.bench_function("get", |b| b.to_async(&rt).iter(|| client.get(get(stored_key(black_box(500))))));
    g.bench_function("set", |b| b.to_async(&rt).iter(|| client.set(set(stored_key(black_box(500)), &value))));
    g.finish();
}

/// The facade and the HTTP API over one store started by the ComponentSupervisor, as the
/// sidecar runs it (one fixture: the supervisor names its children by runtime id).
fn served(c: &mut Criterion) {
    let rt = runtime();
    let value = value();
    let directory = DirectoryHandle::default();
    let api = rt.block_on(async {
        let args = ComponentSupervisorArgs {
            runtime_id: "bench".into(),
            app_id: APP.into(),
            specs: vec![spec()],
            load_errors: vec![],
            registry: Arc::new(Registry::default()),
            directory: directory.clone(),
            policy: RestartPolicy::default(),
            call_timeout: Duration::from_secs(5),
            probe: rapr::components::host::HealthProbe::default(),
            metrics: Metrics::new(APP, true, false),
        };
        let (sup, _) = Actor::spawn(Some("bench/components".into()), ComponentSupervisor, args).await.expect("the supervisor starts");
        ComponentSupervisorClient::new(sup).await_initial().await;
        StateApi::new(directory.clone(), Resiliency::none())
    });
    let save_item = |key: String, value: &Bytes| SaveItem { key, value: value.clone(), is_json: true, ..Default::default() };
    rt.block_on(fill(&value, |i, v| {
        let api = &api;
        async move { api.save(STORE, vec![save_item(format!("key-{i}"), &v)]).await.expect("the in-memory store is up") }
    }));
    let bulk: Vec<String> = (0..BULK).map(|i| format!("key-{}", i * 7)).collect();

    let mut g = c.benchmark_group("facade");
    g.bench_function("get", |b| {
        b.to_async(&rt).iter(|| async { api.get(STORE, black_box("key-500"), Consistency::Eventual, Metadata::new()).await.ok().flatten().expect("the key was written") })
    });
    g.bench_function("save", |b| b.to_async(&rt).iter(|| async { api.save(STORE, vec![save_item(black_box("key-500").into(), &value)]).await.expect("a write") }));
    g.bench_function("bulk_get_10", |b| {
        b.to_async(&rt).iter_batched(|| bulk.clone(), |keys| async { api.bulk_get(STORE, keys, Metadata::new()).await.expect("a bulk read") }, BatchSize::SmallInput)
    });
    g.finish();

    let facades = Facades {
        state: api.clone(),
        metadata: MetadataApi::new(APP.into(), vec![], AppConnection::default(), directory.clone()),
        secrets: SecretsApi::new(directory.clone(), BTreeMap::new()),
        invoke: InvokeApi::new(APP, None, None, Arc::new(RemoteInvoker::new(4 << 20)), Resiliency::none()),
        pubsub: rapr::api::pubsub::PubSubApi::new(directory.clone(), Resiliency::none(), APP),
    };
    let router = rapr::api::http::router(HttpState::new(HttpShared {
        facades,
        shutdown: ShutdownHandle::new(),
        app_id: Arc::from(APP),
        max_body: 4 << 20,
        api_token: None,
    }));
    let save_body = Bytes::from([&br#"[{"key":"key-500","value":"#[..], &value[..], b"}]"].concat());
    let bulk_body = Bytes::from(serde_json::to_vec(&serde_json::json!({ "keys": bulk })).expect("keys encode"));
    let mut g = c.benchmark_group("http");
    g.bench_function("get", |b| b.to_async(&rt).iter(|| expect_status(&router, http_request("GET", "/v1.0/state/statestore/key-500", Bytes::new()), 200)));
    g.bench_function("save", |b| b.to_async(&rt).iter(|| expect_status(&router, http_request("POST", "/v1.0/state/statestore", save_body.clone()), 204)));
    g.bench_function("bulk_get_10", |b| b.to_async(&rt).iter(|| expect_status(&router, http_request("POST", "/v1.0/state/statestore/bulk", bulk_body.clone()), 200)));
    g.finish();
}

fn http_request(method: &str, path: &str, body: Bytes) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path).header(http::header::HOST, "127.0.0.1:3500");
    if !body.is_empty() {
        b = b.header(http::header::CONTENT_TYPE, "application/json").header(http::header::CONTENT_LENGTH, body.len());
    }
    b.body(Body::from(body)).expect("a valid request")
}

/// One request through the API router, its answer read to the end and its status checked (a
/// failing route must not pass its error path off as the figure).
async fn expect_status(router: &Router, req: Request<Body>, status: u16) -> Bytes {
    let resp = match router.clone().oneshot(req).await {
        Ok(r) => r,
        Err(e) => match e {},
    };
    assert_eq!(resp.status().as_u16(), status, "unexpected answer");
    resp.into_body().collect().await.map(|c| c.to_bytes()).expect("the answer reads")
}

criterion_group!(benches, keys, store, answers, client, served);
criterion_main!(benches);
