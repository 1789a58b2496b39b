//! `--enable-api-logging`: one info line per API call, as daprd writes them.
//!
//! - HTTP: `HTTP API Called`, scope `dapr.runtime.http-info`, fields `method` (`GET /v1.0/state/s/k`,
//!   or with the Configuration's `logging.apiLogging.obfuscateURLs` the route instead of the path:
//!   `GET /v1.0/state/{store}/{key}`, where daprd writes its endpoint name such as `GetState`),
//!   `useragent`, `code`, `size` (response bytes) and `duration` (ms). Health checks are logged
//!   unless `omitHealthChecks`.
//! - gRPC: `gRPC API Called`, scope `dapr.runtime.grpc.api-info`, fields `method` (the full method
//!   path), `useragent`, `code` (the gRPC status number) and `duration` (ms).
//!
//! daprd keeps these loggers at info whatever `--log-level` says; `runtime::logging` does the same
//! for the two targets below. A line is written when the response body is done (or dropped), so
//! `size`, the gRPC status from the trailers and `duration` cover the whole answer.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

/// Tracing target of the HTTP lines (scope `dapr.runtime.http-info`).
pub const HTTP_TARGET: &str = "rapr::api::http::api_log";
/// Tracing target of the gRPC lines (scope `dapr.runtime.grpc.api-info`).
pub const GRPC_TARGET: &str = "rapr::api::grpc::api_log";

/// The Configuration's `logging.apiLogging` switches that shape the lines.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiLogOptions {
    /// Log the route, not the path (which may carry keys or ids).
    pub obfuscate_urls: bool,
    /// Leave `/v1.0/healthz*` calls out.
    pub omit_health_checks: bool,
}

const HEALTH: &[&str] = &["/v1.0/healthz", "/v1.0/healthz/outbound"];

/// HTTP middleware (`axum::middleware::from_fn_with_state`).
pub async fn http(axum::extract::State(opts): axum::extract::State<ApiLogOptions>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if opts.omit_health_checks && HEALTH.contains(&path.as_str()) {
        return next.run(req).await;
    }
    let shown = match (opts.obfuscate_urls, req.extensions().get::<MatchedPath>()) {
        (true, Some(m)) => m.as_str().to_string(),
        _ => path,
    };
    let method = format!("{} {shown}", req.method());
    let useragent = user_agent(&req);
    let start = Instant::now();
    let resp = next.run(req).await;
    let code = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let done = Box::new(move |size: u64, _grpc: Option<i32>| {
        let duration = start.elapsed().as_millis() as u64;
        tracing::info!(target: HTTP_TARGET, method = %method, useragent = useragent.as_deref(), code, size, duration, "HTTP API Called");
    });
    Response::from_parts(parts, Body::new(Logged { inner: body, size: 0, grpc: None, done: Some(done) }))
}

/// gRPC middleware (`axum::middleware::from_fn`).
pub async fn grpc(req: Request, next: Next) -> Response {
    let method = req.uri().path().to_string();
    let useragent = user_agent(&req);
    let start = Instant::now();
    let resp = next.run(req).await;
    // A trailers-only answer (an error) carries the status in its head.
    let head = grpc_status(resp.headers());
    let (parts, body) = resp.into_parts();
    let done = Box::new(move |_size: u64, trailer: Option<i32>| {
        let duration = start.elapsed().as_millis() as u64;
        // No status at all: the stream broke off (daprd's handler would report it as Unknown).
        let code = trailer.or(head).unwrap_or(2);
        tracing::info!(target: GRPC_TARGET, method = %method, useragent = useragent.as_deref(), code, duration, "gRPC API Called");
    });
    Response::from_parts(parts, Body::new(Logged { inner: body, size: 0, grpc: None, done: Some(done) }))
}

fn user_agent(req: &Request) -> Option<String> {
    req.headers().get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()).map(str::to_string)
}

fn grpc_status(h: &http::HeaderMap) -> Option<i32> {
    h.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

type Done = Box<dyn FnOnce(u64, Option<i32>) + Send>;

/// A response body that counts what it sends and writes the log line when done.
struct Logged {
    inner: Body,
    size: u64,
    grpc: Option<i32>,
    done: Option<Done>,
}

impl Logged {
    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            done(self.size, self.grpc);
        }
    }
}

impl hyper::body::Body for Logged {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.size += data.len() as u64;
                } else if let Some(trailers) = frame.trailers_ref() {
                    self.grpc = grpc_status(trailers);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        self.finish();
    }
}
