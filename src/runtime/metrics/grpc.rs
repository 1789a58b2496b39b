//! gRPC RPC metrics: daprd's `grpc.io/server/*` views for the calls the API and internal servers
//! answer, `grpc.io/client/*` for the calls the sidecar makes (to its app, to other sidecars),
//! and the status watch both need.
//!
//! A gRPC call's status is usually known only when its response ends (`grpc-status` in the
//! trailers, after the handler has returned and the body has streamed), so recording happens in
//! a guard carried by the response body; a trailers-only answer is recorded at once. The same
//! guard counts the response's message bytes (`*_bytes_per_rpc`), as a wrapper of the request
//! body counts the request's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::cache::Handle;
use super::{code_name, whole_ms, Buckets, Count, Hist, Labels, Metrics};

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
    watch_sized(resp, move |code, _| done(code))
}

/// [`watch_grpc_status`], also giving the bytes of the response messages (without framing).
fn watch_sized<F>(resp: Response, done: F) -> Response
where
    F: FnOnce(i32, u64) + Send + 'static,
{
    if let Some(code) = grpc_status(resp.headers()) {
        done(code, 0);
        return resp;
    }
    let mut watch = Watch { done: Some(done), status: None, sizer: Sizer::default() };
    let (parts, body) = resp.into_parts();
    let body = body.map_frame(move |frame| {
        // The whole guard moves into the closure (not only its fields), so it records when the
        // body is dropped.
        let watch = &mut watch;
        if let Some(d) = frame.data_ref() {
            watch.sizer.feed(d);
        }
        if let Some(s) = frame.trailers_ref().and_then(grpc_status) {
            watch.status = Some(s);
        }
        frame
    });
    Response::from_parts(parts, axum::body::Body::new(body))
}

struct Watch<F: FnOnce(i32, u64)> {
    done: Option<F>,
    status: Option<i32>,
    sizer: Sizer,
}

impl<F: FnOnce(i32, u64)> Drop for Watch<F> {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done(self.status.unwrap_or(2), self.sizer.payload);
        }
    }
}

/// Counts the message bytes of a gRPC body (each message is a 5-byte prefix, then its bytes):
/// daprd measures `proto.Size` of the messages, not the framing.
#[derive(Default)]
struct Sizer {
    header: [u8; 5],
    have: usize,
    left: u64,
    payload: u64,
}

impl Sizer {
    fn feed(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            if self.left > 0 {
                let n = b.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
                self.left -= n as u64;
                self.payload += n as u64;
                b = &b[n..];
                continue;
            }
            let n = (5 - self.have).min(b.len());
            self.header[self.have..self.have + n].copy_from_slice(&b[..n]);
            self.have += n;
            b = &b[n..];
            if self.have == 5 {
                self.left = u64::from(u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]));
                self.have = 0;
            }
        }
    }
}

/// The gRPC families of one sidecar's registry.
pub(super) struct GrpcFamilies {
    server_completed: Family<Labels, Count>,
    server_latency: Hist,
    server_received_bytes: Hist,
    server_sent_bytes: Hist,
    client_completed: Family<Labels, Count>,
    client_latency: Hist,
    client_sent_bytes: Hist,
    client_received_bytes: Hist,
    probe_count: Family<Labels, Count>,
    probe_latency: Hist,
}

impl GrpcFamilies {
    pub(super) fn new(latency: &Buckets, size: &Buckets) -> Self {
        Self {
            server_completed: Family::default(),
            server_latency: latency.family(),
            server_received_bytes: size.family(),
            server_sent_bytes: size.family(),
            client_completed: Family::default(),
            client_latency: latency.family(),
            client_sent_bytes: size.family(),
            client_received_bytes: size.family(),
            probe_count: Family::default(),
            probe_latency: latency.family(),
        }
    }

    pub(super) fn register(&self, r: &mut Registry) {
        r.register("dapr_grpc_io_server_received_bytes_per_rpc", "Total bytes received across all messages per RPC.", self.server_received_bytes.clone());
        r.register("dapr_grpc_io_server_sent_bytes_per_rpc", "Total bytes sent in across all response messages per RPC.", self.server_sent_bytes.clone());
        r.register(
            "dapr_grpc_io_server_server_latency",
            "Time between first byte of request received to last byte of response sent, or terminal error.",
            self.server_latency.clone(),
        );
        r.register("dapr_grpc_io_server_completed_rpcs", "Distribution of bytes sent per RPC, by method.", self.server_completed.clone());
        r.register("dapr_grpc_io_client_sent_bytes_per_rpc", "Total bytes sent across all request messages per RPC.", self.client_sent_bytes.clone());
        r.register("dapr_grpc_io_client_received_bytes_per_rpc", "Total bytes received across all response messages per RPC.", self.client_received_bytes.clone());
        r.register(
            "dapr_grpc_io_client_roundtrip_latency",
            "Time between first byte of request sent to last byte of response received, or terminal error.",
            self.client_latency.clone(),
        );
        r.register("dapr_grpc_io_client_completed_rpcs", "Count of RPCs by method and status.", self.client_completed.clone());
        r.register("dapr_grpc_io_healthprobes_completed_count", "Count of completed health probes", self.probe_count.clone());
        r.register(
            "dapr_grpc_io_healthprobes_roundtrip_latency",
            "Time between first byte of health probes sent to last byte of response received, or terminal error",
            self.probe_latency.clone(),
        );
    }
}

impl Metrics {
    /// One RPC this sidecar served finished; `sizes` (request, response message bytes) for the
    /// calls daprd's unary interceptor sees (not proxied streams).
    pub(super) fn grpc_server_rpc(&self, method: &str, code: i32, started: Instant, sizes: Option<(u64, u64)>) {
        let f = &self.0.f.grpc;
        let h = self.0.cache.grpc_server.get(&[method, code_name(code)], || {
            let l = self.labels(&[("grpc_server_method", method), ("grpc_server_status", code_name(code))]);
            vec![Handle::Count(f.server_completed.get_or_create(&l).clone()), Handle::Hist(f.server_latency.get_or_create(&l).clone())]
        });
        h[0].inc();
        h[1].observe(whole_ms(started));
        if let Some((received, sent)) = sizes {
            let h = self.0.cache.grpc_server_sizes.get(&[method], || {
                let l = self.labels(&[("grpc_server_method", method)]);
                vec![Handle::Hist(f.server_received_bytes.get_or_create(&l).clone()), Handle::Hist(f.server_sent_bytes.get_or_create(&l).clone())]
            });
            h[0].observe(received as f64);
            // daprd measures the response of a successful call only.
            h[1].observe(if code == 0 { sent as f64 } else { 0.0 });
        }
    }

    /// One RPC this sidecar made finished (daprd's client views carry the status on both);
    /// `sizes` (request, response message bytes) when known.
    pub(super) fn grpc_client_rpc(&self, method: &str, code: i32, started: Instant, sizes: Option<(u64, u64)>) {
        let f = &self.0.f.grpc;
        let h = self.0.cache.grpc_client.get(&[method, code_name(code)], || {
            let l = self.labels(&[("grpc_client_method", method), ("grpc_client_status", code_name(code))]);
            vec![Handle::Count(f.client_completed.get_or_create(&l).clone()), Handle::Hist(f.client_latency.get_or_create(&l).clone())]
        });
        h[0].inc();
        h[1].observe(whole_ms(started));
        if let Some((sent, received)) = sizes {
            let h = self.0.cache.grpc_client_sizes.get(&[method], || {
                let l = self.labels(&[("grpc_client_method", method)]);
                vec![Handle::Hist(f.client_sent_bytes.get_or_create(&l).clone()), Handle::Hist(f.client_received_bytes.get_or_create(&l).clone())]
            });
            h[0].observe(sent as f64);
            h[1].observe(received as f64);
        }
    }

    /// A call to the app over gRPC (`AppCallback`) finished: daprd's app channel counts it with
    /// its unary client interceptor; `sizes` are the request and response message sizes.
    pub fn app_grpc_call(&self, method: &str, code: tonic::Code, started: Instant, sizes: Option<(u64, u64)>) {
        if self.0.enabled {
            self.grpc_client_rpc(method, code as i32, started, sizes);
        }
    }

    /// A gRPC health probe of the app (`AppCallbackHealthCheck/HealthCheck`) finished.
    pub fn app_grpc_probe(&self, code: tonic::Code, started: Instant) {
        if !self.0.enabled {
            return;
        }
        let l = self.labels(&[("grpc_client_status", code_name(code as i32))]);
        self.0.f.grpc.probe_count.get_or_create(&l).0.inc();
        self.0.f.grpc.probe_latency.get_or_create(&l).observe(whole_ms(started));
    }
}

/// The streaming RPCs rapr serves itself (every other served method is unary).
fn own_stream(path: &str) -> bool {
    matches!(path, "/dapr.proto.runtime.v1.Dapr/SubscribeTopicEventsAlpha1" | "/dapr.proto.internals.v1.ServiceInvocation/CallLocalStream") || path.starts_with("/grpc.reflection.")
}

/// gRPC middleware (API and internal servers): daprd's `grpc.io/server/*` views, or the client
/// views for a proxied call delivered to the app (see [`ProxiedDelivery`]). Message sizes are
/// recorded for calls that are not proxied (daprd's stream interceptors record none).
pub async fn grpc_server(State(m): State<Metrics>, req: Request, next: Next) -> Response {
    if !m.0.enabled {
        return next.run(req).await;
    }
    let proxied = req.headers().contains_key("dapr-app-id");
    // daprd's stream interceptors record proxied streams only: its own streaming RPCs
    // (subscriptions, CallLocalStream, reflection) are in no gRPC view.
    if !proxied && own_stream(req.uri().path()) {
        return next.run(req).await;
    }
    let method = req.uri().path().to_string();
    let received = Arc::new(AtomicU64::new(0));
    let req = if proxied {
        req
    } else {
        let (parts, body) = req.into_parts();
        let (counter, mut sizer) = (Arc::clone(&received), Sizer::default());
        let body = body.map_frame(move |frame| {
            if let Some(d) = frame.data_ref() {
                sizer.feed(d);
                counter.store(sizer.payload, Ordering::Relaxed);
            }
            frame
        });
        Request::from_parts(parts, axum::body::Body::new(body))
    };
    let started = Instant::now();
    let resp = next.run(req).await;
    let delivered = resp.extensions().get::<ProxiedDelivery>().is_some();
    watch_sized(resp, move |code, sent| {
        if delivered {
            m.grpc_client_rpc(&method, code, started, None);
        } else {
            let sizes = (!proxied).then(|| (received.load(Ordering::Relaxed), sent));
            m.grpc_server_rpc(&method, code, started, sizes);
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

    #[test]
    fn sizer_counts_message_bytes_across_frames() {
        let mut s = Sizer::default();
        s.feed(&[0, 0, 0]);
        s.feed(&[0, 3, b'a', b'b']);
        s.feed(&[b'c', 0, 0, 0, 0, 1, b'x']);
        assert_eq!(s.payload, 4);
    }
}
