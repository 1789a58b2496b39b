//! Micro-benchmarks of the service invocation path between the two sidecars (HTTP invoke,
//! `rapr bench invoke-http`), minus the sockets: what each sidecar does to one call's
//! description, and the name resolution in front of every remote call.
//!
//! ```text
//! caller sidecar: CallMeta::from_http -> stamp -> to_internal -> lead frame encoded   (caller/*)
//!                 SqliteNameResolver::resolve, a cache hit                            (nameres/*)
//! target sidecar: lead frame decoded -> from_internal -> app_headers, path_and_query   (target/*)
//! way back:       response_headers (target) -> header_map (caller)                    (response/*)
//! ```
//! The request is the load generator's: POST with `host`, `content-type`, `content-length` and
//! the `traceparent` the caller's trace middleware adds, a 1 KB JSON body. Each stage is timed
//! alone and then whole per side, so a regression names its stage. End-to-end latency is
//! `rapr bench`'s job (DESIGN.md §9); these guard the CPU each call costs.
//!
//! Setup failures `expect` with a message: a fixture that cannot be built has no figure to give.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use prost::Message;
use rapr::invoke::message::{header_map, response_headers, CallMeta};
use rapr::invoke::nameres::{NameResolverConfig, SqliteNameResolver};
use rapr_proto::common::v1 as common;
use rapr_proto::internals::v1 as internals;

/// The body size of Dapr's published method (and `rapr bench`'s default).
const PAYLOAD: usize = 1024;

/// The headers the caller sidecar's invoke handler sees for one load-generator request.
fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(http::header::HOST, HeaderValue::from_static("127.0.0.1:3500"));
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(PAYLOAD));
    h.insert("traceparent", HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
    h
}

/// The echo app's answer headers, as the target sidecar reads them.
fn app_response_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(PAYLOAD));
    h.insert(http::header::DATE, HeaderValue::from_static("Fri, 27 Nov 2026 09:00:00 GMT"));
    h
}

/// The caller's stamped description of one call.
fn stamped(headers: &HeaderMap) -> CallMeta {
    let mut meta = CallMeta::from_http("echo".into(), Method::POST, None, headers);
    meta.stamp("bench-caller", "bench-echo");
    meta
}

/// The leading frame of `CallLocalStream` as it goes on the wire (the body follows in frames of
/// its own).
fn lead_frame(meta: &CallMeta) -> Vec<u8> {
    internals::InternalInvokeRequestStream { request: Some(meta.to_internal()), payload: None }.encode_to_vec()
}

fn caller(c: &mut Criterion) {
    let headers = request_headers();
    let meta = stamped(&headers);
    let mut g = c.benchmark_group("caller");
    g.bench_function("from_http", |b| b.iter(|| CallMeta::from_http(black_box("echo".into()), Method::POST, None, black_box(&headers))));
    g.bench_function("stamp", |b| {
        b.iter_batched(|| CallMeta::from_http("echo".into(), Method::POST, None, &headers), |mut m| {
            m.stamp(black_box("bench-caller"), black_box("bench-echo"));
            m
        }, BatchSize::SmallInput)
    });
    g.bench_function("to_internal", |b| b.iter(|| black_box(&meta).to_internal()));
    let req = meta.to_internal();
    g.bench_function("encode_lead_frame", |b| {
        b.iter(|| internals::InternalInvokeRequestStream { request: Some(black_box(&req).clone()), payload: None }.encode_to_vec())
    });
    let body = vec![b'x'; PAYLOAD];
    g.bench_function("encode_payload_frame_1k", |b| {
        b.iter(|| internals::InternalInvokeRequestStream { request: None, payload: Some(common::StreamPayload { data: black_box(&body).clone(), seq: 0 }) }.encode_to_vec())
    });
    g.bench_function("whole", |b| b.iter(|| lead_frame(&stamped(black_box(&headers)))));
    g.finish();
}

fn target(c: &mut Criterion) {
    let meta = stamped(&request_headers());
    let wire = lead_frame(&meta);
    let req = meta.to_internal();
    let mut g = c.benchmark_group("target");
    g.bench_function("decode_lead_frame", |b| b.iter(|| internals::InternalInvokeRequestStream::decode(black_box(wire.as_slice()))));
    g.bench_function("from_internal", |b| b.iter(|| CallMeta::from_internal(black_box(&req))));
    let back = CallMeta::from_internal(&req);
    g.bench_function("app_headers", |b| b.iter(|| black_box(&back).app_headers()));
    g.bench_function("path_and_query", |b| b.iter(|| black_box(&back).path_and_query()));
    g.bench_function("whole", |b| {
        b.iter(|| {
            let lead = internals::InternalInvokeRequestStream::decode(black_box(wire.as_slice())).ok().and_then(|l| l.request).unwrap_or_default();
            let m = CallMeta::from_internal(&lead);
            (m.app_headers(), m.path_and_query())
        })
    });
    g.finish();
}

fn response(c: &mut Criterion) {
    let app = app_response_headers();
    let internal = response_headers(&app);
    let mut g = c.benchmark_group("response");
    g.bench_function("response_headers", |b| b.iter(|| response_headers(black_box(&app))));
    g.bench_function("header_map", |b| b.iter(|| header_map(black_box(&internal))));
    g.finish();
}

/// `resolve` for an app id seen within the cache's lifetime (every call but about one a second
/// at load), and for an unknown id, which always queries SQLite: what a lookup costs uncached.
/// Each answer is checked, so a registration gone stale cannot pass its error path off as a hit.
fn nameres(c: &mut Criterion) {
    // A worker thread keeps the registration's refresher running between samples; the calls
    // measured run on the bench thread.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a tokio runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (resolver, _registration) = rt.block_on(async {
        let r = SqliteNameResolver::open(&NameResolverConfig::at(dir.path().join("nr.db"))).await.expect("the registry opens");
        let reg = r.register("bench-echo", "127.0.0.1:50002").await.expect("registration");
        r.resolve("bench-echo").await.expect("the app resolves");
        (r, reg)
    });
    let mut g = c.benchmark_group("nameres");
    g.bench_function("resolve_cached", |b| {
        b.to_async(&rt).iter(|| async { resolver.resolve(black_box("bench-echo")).await.expect("the registered app resolves") })
    });
    g.bench_function("resolve_unknown_queries", |b| {
        b.to_async(&rt).iter(|| async { resolver.resolve(black_box("nobody")).await.expect_err("nobody is registered as nobody") })
    });
    g.finish();
}

criterion_group!(benches, caller, target, response, nameres);
criterion_main!(benches);
