//! HTTP metrics: daprd's `http/server/*` views for the HTTP API (a middleware), `http/client/*`
//! for the sidecar's calls to an HTTP app, and `http/healthprobes/*` for its health probes
//! (pkg/diagnostics/http_monitoring.go). The `method` and `path` labels come from `path.rs`.
//!
//! Counts and latency are recorded when the handler returns; the response size when the body
//! has been sent (at once when its length is known), so a streamed answer is measured whole.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::cache::Handle;
use super::{whole_ms, Buckets, Count, Hist, Labels, Metrics};

/// The HTTP families of one sidecar's registry.
pub(super) struct HttpFamilies {
    server_request_count: Family<Labels, Count>,
    server_request_bytes: Hist,
    server_response_bytes: Hist,
    server_latency: Hist,
    server_response_count: Family<Labels, Count>,
    client_sent_bytes: Hist,
    client_received_bytes: Hist,
    client_roundtrip_latency: Hist,
    client_completed_count: Family<Labels, Count>,
    probe_count: Family<Labels, Count>,
    probe_latency: Hist,
}

impl HttpFamilies {
    pub(super) fn new(latency: &Buckets, size: &Buckets) -> Self {
        Self {
            server_request_count: Family::default(),
            server_request_bytes: size.family(),
            server_response_bytes: size.family(),
            server_latency: latency.family(),
            server_response_count: Family::default(),
            client_sent_bytes: size.family(),
            client_received_bytes: size.family(),
            client_roundtrip_latency: latency.family(),
            client_completed_count: Family::default(),
            probe_count: Family::default(),
            probe_latency: latency.family(),
        }
    }

    pub(super) fn register(&self, r: &mut Registry) {
        r.register("dapr_http_server_request_count", "Count of HTTP requests processed by the server.", self.server_request_count.clone());
        r.register("dapr_http_server_request_bytes", "HTTP request body size if set as ContentLength (uncompressed) in server.", self.server_request_bytes.clone());
        r.register("dapr_http_server_response_bytes", "HTTP response body size (uncompressed) in server.", self.server_response_bytes.clone());
        r.register("dapr_http_server_latency", "HTTP request end-to-end latency in server.", self.server_latency.clone());
        r.register("dapr_http_server_response_count", "The number of HTTP responses", self.server_response_count.clone());
        r.register("dapr_http_client_sent_bytes", "Total bytes sent in request body (not including headers)", self.client_sent_bytes.clone());
        r.register(
            "dapr_http_client_received_bytes",
            "Total bytes received in response bodies (not including headers but including error responses with bodies)",
            self.client_received_bytes.clone(),
        );
        r.register(
            "dapr_http_client_roundtrip_latency",
            "Time between first byte of request headers sent to last byte of response received, or terminal error",
            self.client_roundtrip_latency.clone(),
        );
        r.register("dapr_http_client_completed_count", "Count of completed requests", self.client_completed_count.clone());
        r.register("dapr_http_healthprobes_completed_count", "Count of completed health probes", self.probe_count.clone());
        r.register(
            "dapr_http_healthprobes_roundtrip_latency",
            "Time between first byte of health probes headers sent to last byte of response received, or terminal error",
            self.probe_latency.clone(),
        );
    }
}

impl Metrics {
    /// A call to the app over HTTP finished: `status` (`None`: a transport failure, which daprd
    /// counts as 500), the request body size and the response's `Content-Length` (daprd's -1
    /// when unknown).
    pub fn app_http_call(&self, method: &str, path: &str, status: Option<u16>, sizes: (u64, Option<u64>), started: Instant) {
        if !self.0.enabled {
            return;
        }
        let elapsed = whole_ms(started);
        let h = &self.0.http;
        let (method, path) = (h.method(method), h.client_path(path));
        let status = status.unwrap_or(500).to_string();
        let f = &self.0.f.http;
        let h = self.0.cache.app_http.get(&[&method, &path, &status], || {
            let sent = self.labels(&[("method", &method), ("path", &path), ("status", "")]);
            let l = self.labels(&[("method", &method), ("path", &path), ("status", &status)]);
            vec![
                Handle::Hist(f.client_sent_bytes.get_or_create(&sent).clone()),
                Handle::Count(f.client_completed_count.get_or_create(&l).clone()),
                Handle::Hist(f.client_roundtrip_latency.get_or_create(&l).clone()),
            ]
        });
        h[0].observe(sizes.0 as f64);
        h[1].inc();
        h[2].observe(elapsed);
        let received = self.0.cache.app_http_received.get(&[], || vec![Handle::Hist(f.client_received_bytes.get_or_create(&self.labels(&[])).clone())]);
        received[0].observe(sizes.1.map_or(-1.0, |n| n as f64));
    }

    /// An HTTP health probe of the app finished (`status`: the app's, 500 for a network error).
    pub fn app_http_probe(&self, status: u16, started: Instant) {
        if !self.0.enabled {
            return;
        }
        let l = self.labels(&[("status", &status.to_string())]);
        self.0.f.http.probe_count.get_or_create(&l).0.inc();
        self.0.f.http.probe_latency.get_or_create(&l).observe(whole_ms(started));
    }
}

fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// HTTP API middleware: daprd's `http/server/*` views.
pub async fn http_server(State(m): State<Metrics>, req: Request, next: Next) -> Response {
    if !m.0.enabled {
        return next.run(req).await;
    }
    let request_size = content_length(req.headers()).unwrap_or(0);
    let method = m.0.http.method(req.method().as_str());
    let path = m.0.http.server_path(req.uri().path());
    let started = Instant::now();
    let resp = next.run(req).await;
    let elapsed = whole_ms(started);
    let status = resp.status();
    let f = &m.0.f.http;
    let h = m.0.cache.http_server.get(&[&method, &path, status.as_str()], || {
        let l = m.labels(&[("method", &method), ("path", &path), ("status", status.as_str())]);
        let mut h = vec![Handle::Count(f.server_request_count.get_or_create(&l).clone()), Handle::Hist(f.server_latency.get_or_create(&l).clone())];
        if m.0.http.legacy {
            h.push(Handle::Count(f.server_response_count.get_or_create(&l).clone()));
        }
        h
    });
    h[0].inc();
    h[1].observe(elapsed);
    if let Some(responses) = h.get(2) {
        responses.inc();
    }
    let bytes = server_bytes(&m);
    bytes[0].observe(request_size as f64);
    let known = content_length(resp.headers()).or_else(|| axum::body::HttpBody::size_hint(resp.body()).exact());
    if let Some(n) = known {
        bytes[1].observe(n as f64);
        return resp;
    }
    let mut sent = Sent { m: Some(m), n: 0 };
    let (parts, body) = resp.into_parts();
    let body = body.map_frame(move |frame| {
        // The guard moves into the closure whole, so it records when the body is dropped.
        let sent = &mut sent;
        if let Some(d) = frame.data_ref() {
            sent.n += d.len() as u64;
        }
        frame
    });
    Response::from_parts(parts, axum::body::Body::new(body))
}

/// The request and response size histograms of the HTTP API (labelled by app id only).
fn server_bytes(m: &Metrics) -> std::sync::Arc<[Handle]> {
    let f = &m.0.f.http;
    m.0.cache.http_server_bytes.get(&[], || {
        let l = m.labels(&[]);
        vec![Handle::Hist(f.server_request_bytes.get_or_create(&l).clone()), Handle::Hist(f.server_response_bytes.get_or_create(&l).clone())]
    })
}

/// Records a streamed response's size when its body is done.
struct Sent {
    m: Option<Metrics>,
    n: u64,
}

impl Drop for Sent {
    fn drop(&mut self) {
        if let Some(m) = self.m.take() {
            server_bytes(&m)[1].observe(self.n as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_calls_and_probes_carry_daprds_labels() {
        let m = Metrics::new("app", true, true);
        m.app_http_call("GET", "/orders/1", Some(200), (3, None), Instant::now());
        m.app_http_call("BREW", "/orders/1", None, (0, Some(5)), Instant::now());
        m.app_http_probe(204, Instant::now());
        let text = m.encode();
        assert!(text.contains("dapr_http_client_completed_count{app_id=\"app\",method=\"GET\",path=\"/orders/1\",status=\"200\"} 1"), "{text}");
        assert!(text.contains("dapr_http_client_completed_count{app_id=\"app\",method=\"UNKNOWN\",path=\"/orders/1\",status=\"500\"} 1"), "{text}");
        assert!(text.contains("dapr_http_client_sent_bytes_count{app_id=\"app\",method=\"GET\",path=\"/orders/1\",status=\"\"} 1"), "{text}");
        assert!(text.contains("dapr_http_client_received_bytes_sum{app_id=\"app\"} 4"), "-1 for the unknown size: {text}");
        assert!(text.contains("dapr_http_healthprobes_completed_count{app_id=\"app\",status=\"204\"} 1"), "{text}");
        assert!(text.contains("dapr_http_healthprobes_roundtrip_latency_bucket{app_id=\"app\",status=\"204\",le=\"1\"} 1"), "{text}");
    }
}
