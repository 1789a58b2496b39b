//! Micro-benchmarks of the work every API request pays before and after its handler: axum
//! routing, the metrics middleware (`http_server`, `grpc_server`: label vectors, the family
//! lookups, `normalize_path`), the trace-context middleware (`server_span`: W3C `traceparent`
//! extracted, a server span, the header rewritten), and the metric recordings of one invocation.
//!
//! ```text
//! stack/*    one request through a stub router: bare, then each middleware, then the
//!            sidecar's whole stack (`telemetry::instrument`) for the HTTP API and for the
//!            internal gRPC server; a regression in a layer shows as its delta from `bare`
//! record/*   the metric calls each invocation makes besides the middleware (caller and target
//!            side, the app call, a state call) and `normalize_path`
//! ```
//! The stub handler answers 1 KB the way an invocation does, so the middleware's body-size
//! reads see a real answer; the request is the load generator's (`rapr bench invoke-http`),
//! with an incoming `traceparent`. Metrics are on, as by default. Tracing is measured at
//! sampling rate 0 (daprd's default without a Configuration) and 1 (every span recorded, no
//! exporter: the export itself runs on its own task, off the request path).

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Instant;

use axum::body::Body;
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use rapr::config::configuration::TracingSpec;
use rapr::runtime::metrics::{grpc_server, http_server, normalize_path, ComponentOp, Metrics};
use rapr::runtime::telemetry::{instrument, server_span, Tracing};
use tower::ServiceExt;

const PAYLOAD: usize = 1024;
const INVOKE_PATH: &str = "/v1.0/invoke/bench-echo/method/echo";
const INTERNAL_PATH: &str = "/dapr.proto.internals.v1.ServiceInvocation/CallLocalStream";

fn payload() -> Bytes {
    Bytes::from(vec![b'x'; PAYLOAD])
}

/// The HTTP API's stand-in: the invoke route answering 1 KB of JSON.
fn http_router() -> Router {
    Router::new().route(
        "/v1.0/invoke/{*rest}",
        any(|| async { Response::builder().header(http::header::CONTENT_TYPE, "application/json").body(Body::from(payload())).unwrap_or_default() }),
    )
}

/// The internal server's stand-in: a gRPC answer whose status comes in the trailers, as a
/// streamed `CallLocalStream` answer does (the metrics middleware records it when the body ends).
fn grpc_router() -> Router {
    Router::new().route(
        INTERNAL_PATH,
        any(|| async {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            let frames = [Ok::<_, Infallible>(Frame::data(payload())), Ok(Frame::trailers(trailers))];
            Response::builder().header(http::header::CONTENT_TYPE, "application/grpc").body(Body::new(StreamBody::new(futures::stream::iter(frames)))).unwrap_or_default()
        }),
    )
}

fn http_request(body: &Bytes) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri(INVOKE_PATH)
        .header(http::header::HOST, "127.0.0.1:3500")
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, PAYLOAD)
        .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .body(Body::from(body.clone()))
        .unwrap_or_default()
}

fn grpc_request(body: &Bytes) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri(INTERNAL_PATH)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .header("dapr-caller-app-id", "bench-caller")
        .body(Body::from(body.clone()))
        .unwrap_or_default()
}

/// One request through `router`, its answer read to the end (trailers included).
async fn round_trip(router: &Router, req: Request<Body>) -> Bytes {
    match router.clone().oneshot(req).await {
        Ok(resp) => resp.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default(),
        Err(e) => match e {},
    }
}

fn tracer(sampling_rate: f64) -> Tracing {
    Tracing::new("bench-caller", &TracingSpec { sampling_rate, ..Default::default() }).expect("a tracer without exporters")
}

fn stack(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    let body = payload();
    let metrics = Metrics::new("bench-caller", true, false);
    let metrics_paths = Metrics::new("bench-caller", true, true);
    let (unsampled, sampled) = (tracer(0.0), tracer(1.0));
    let http = [
        ("bare", http_router()),
        ("metrics", http_router().layer(axum::middleware::from_fn_with_state(metrics.clone(), http_server))),
        ("metrics_increased_cardinality", http_router().layer(axum::middleware::from_fn_with_state(metrics_paths, http_server))),
        ("trace_unsampled", http_router().layer(axum::middleware::from_fn_with_state(unsampled.clone(), server_span))),
        ("trace_sampled", http_router().layer(axum::middleware::from_fn_with_state(sampled.clone(), server_span))),
        ("instrumented_unsampled", instrument(http_router(), false, &metrics, &unsampled)),
        ("instrumented_sampled", instrument(http_router(), false, &metrics, &sampled)),
    ];
    let mut g = c.benchmark_group("stack/http_api");
    for (name, router) in &http {
        g.bench_function(*name, |b| b.to_async(&rt).iter(|| round_trip(router, http_request(&body))));
    }
    g.finish();
    let grpc = [
        ("bare", grpc_router()),
        ("metrics", grpc_router().layer(axum::middleware::from_fn_with_state(metrics.clone(), grpc_server))),
        ("instrumented_unsampled", instrument(grpc_router(), true, &metrics, &unsampled)),
    ];
    let mut g = c.benchmark_group("stack/internal_grpc");
    for (name, router) in &grpc {
        g.bench_function(*name, |b| b.to_async(&rt).iter(|| round_trip(router, grpc_request(&body))));
    }
    g.finish();
}

fn record(c: &mut Criterion) {
    let m = Metrics::new("bench-caller", true, false);
    let mut g = c.benchmark_group("record");
    g.bench_function("invoke_caller", |b| {
        b.iter(|| {
            let started = Instant::now();
            m.invoke_sent(black_box("bench-echo"), true);
            m.invoke_answered("bench-echo", true, INTERNAL_PATH, tonic::Code::Ok, 200, started, None);
        })
    });
    g.bench_function("invoke_target", |b| {
        b.iter(|| {
            m.invoke_received(black_box("bench-caller"));
            m.invoke_responded("bench-caller", 200);
        })
    });
    g.bench_function("app_http_call", |b| b.iter(|| m.app_http_call("POST", black_box("/echo"), Some(200), (0, Some(0)), Instant::now())));
    g.bench_function("state_call", |b| b.iter(|| m.state_call(black_box("statestore"), ComponentOp::Get, true, Instant::now())));
    for (name, path) in [("invoke", INVOKE_PATH), ("state", "/v1.0/state/statestore/order-1"), ("actors", "/v1.0/actors/Cart/42/method/add")] {
        g.bench_function(format!("normalize_path/{name}"), |b| b.iter(|| normalize_path(black_box(path))));
    }
    g.finish();
}

criterion_group!(benches, stack, record);
criterion_main!(benches);
