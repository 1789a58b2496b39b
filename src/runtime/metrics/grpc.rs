//! gRPC RPC metrics: daprd's `grpc.io/server/*` views for the calls the API and internal servers
//! answer, `grpc.io/client/*` for the calls the sidecar makes (to its app, to other sidecars),
//! and the status watch both need.
//!
//! A gRPC call's status is usually known only when its response ends (`grpc-status` in the
//! trailers, after the handler has returned and the body has streamed), so recording happens in
//! a guard carried by the response body; a trailers-only answer is recorded at once.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;

use super::{code_name, ms, Metrics};

/// Marks the response to a proxied call this sidecar delivered to its app over the internal
/// port. daprd counts those as client RPCs (its internal server's stream interceptor is the
/// client one: the sidecar proxies them on as a client), not as calls it served.
#[derive(Debug, Clone, Copy)]
pub struct ProxiedDelivery;

/// The `grpc-status` of a header or trailer map.
pub fn grpc_status(h: &http::HeaderMap) -> Option<i32> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Calls `done` once with the call's gRPC status: from the headers of a trailers-only answer,
/// else from the trailers; UNKNOWN (2) when the body ends or is dropped without one.
pub fn watch_grpc_status<F>(resp: Response, done: F) -> Response
where
    F: FnOnce(i32) + Send + 'static,
{
    if let Some(code) = grpc_status(resp.headers()) {
        done(code);
        return resp;
    }
    let mut watch = Watch { done: Some(done), status: None };
    let (parts, body) = resp.into_parts();
    let body = body.map_frame(move |frame| {
        // The whole guard moves into the closure (not only its fields), so it records when the
        // body is dropped.
        let watch = &mut watch;
        if let Some(s) = frame.trailers_ref().and_then(grpc_status) {
            watch.status = Some(s);
        }
        frame
    });
    Response::from_parts(parts, axum::body::Body::new(body))
}

struct Watch<F: FnOnce(i32)> {
    done: Option<F>,
    status: Option<i32>,
}

impl<F: FnOnce(i32)> Drop for Watch<F> {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done(self.status.unwrap_or(2));
        }
    }
}

impl Metrics {
    /// One RPC this sidecar served finished.
    pub(super) fn grpc_server_rpc(&self, method: &str, code: i32, started: Instant) {
        let l = self.labels(&[("grpc_server_method", method), ("grpc_server_status", code_name(code))]);
        self.0.f.grpc_server_completed_rpcs.get_or_create(&l).0.inc();
        // daprd's server latency view has the method only.
        let l = self.labels(&[("grpc_server_method", method)]);
        self.0.f.grpc_server_latency.get_or_create(&l).observe(ms(started));
    }

    /// One RPC this sidecar made finished (daprd's client views carry the status on both).
    pub(super) fn grpc_client_rpc(&self, method: &str, code: i32, started: Instant) {
        let l = self.labels(&[("grpc_client_method", method), ("grpc_client_status", code_name(code))]);
        self.0.f.grpc_client_completed_rpcs.get_or_create(&l).0.inc();
        self.0.f.grpc_client_roundtrip_latency.get_or_create(&l).observe(ms(started));
    }

    /// A call to the app over gRPC (`AppCallback`) finished: daprd's app channel counts it with
    /// its unary client interceptor.
    pub fn app_grpc_call(&self, method: &str, code: tonic::Code, started: Instant) {
        if self.0.enabled {
            self.grpc_client_rpc(method, code as i32, started);
        }
    }
}

/// gRPC middleware (API and internal servers): daprd's `grpc.io/server/*` views, or the client
/// views for a proxied call delivered to the app (see [`ProxiedDelivery`]).
pub async fn grpc_server(State(m): State<Metrics>, req: Request, next: Next) -> Response {
    if !m.0.enabled {
        return next.run(req).await;
    }
    let method = req.uri().path().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let delivered = resp.extensions().get::<ProxiedDelivery>().is_some();
    watch_grpc_status(resp, move |code| {
        if delivered {
            m.grpc_client_rpc(&method, code, started);
        } else {
            m.grpc_server_rpc(&method, code, started);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::sync::Arc;

    fn seen() -> (Arc<AtomicI32>, impl FnOnce(i32) + Send + 'static) {
        let got = Arc::new(AtomicI32::new(-1));
        let g = Arc::clone(&got);
        (got, move |c| g.store(c, Ordering::SeqCst))
    }

    #[tokio::test]
    async fn status_from_headers_trailers_or_missing() {
        let (got, done) = seen();
        let mut resp = Response::new(axum::body::Body::empty());
        resp.headers_mut().insert("grpc-status", http::HeaderValue::from_static("5"));
        let _ = watch_grpc_status(resp, done);
        assert_eq!(got.load(Ordering::SeqCst), 5, "trailers-only: at once");

        let (got, done) = seen();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames = vec![Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from_static(b"x"))), Ok(hyper::body::Frame::trailers(trailers))];
        let body = axum::body::Body::new(http_body_util::StreamBody::new(futures::stream::iter(frames)));
        let resp = watch_grpc_status(Response::new(body), done);
        assert_eq!(got.load(Ordering::SeqCst), -1, "not before the body ends");
        let _ = resp.into_body().collect().await.unwrap();
        assert_eq!(got.load(Ordering::SeqCst), 0);

        let (got, done) = seen();
        drop(watch_grpc_status(Response::new(axum::body::Body::from("x")), done));
        assert_eq!(got.load(Ordering::SeqCst), 2, "no status at all: UNKNOWN");
    }
}
