//! Prometheus metrics under daprd's names (`dapr_` + the OpenCensus view name with `/` and `.`
//! turned into `_`), labels and buckets, so existing dashboards and alerts work unchanged.
//!
//! One `Metrics` handle per sidecar, cloned into the HTTP and gRPC routers (as middleware), the
//! app channel, the internal invocation client and server, and the component supervisor.
//! Recording touches only atomics and the families' concurrent maps: no mailbox, no lock of ours
//! on the request path. HTTP labels are low-cardinality by default (no `path` label); with the
//! Configuration's `spec.metric.http.increasedCardinality: true` the path is added, normalised as
//! daprd does (state and secret keys, actor ids and workflow instance ids never become labels).
//!
//! `http.rs` holds the HTTP server/client views and their middleware, `grpc.rs` the gRPC ones,
//! `component.rs` the component call views (`dapr_component_state_*`, `dapr_component_secret_*`).

mod component;
mod grpc;
mod http;
mod pubsub_egress;
mod pubsub_ingress;

pub use component::ComponentOp;
pub use grpc::{grpc_server, grpc_status, watch_grpc_status, ProxiedDelivery};
pub use http::{http_server, normalize_path};

use std::sync::Arc;
use std::time::Instant;

use axum::response::IntoResponse;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// daprd's latency buckets, in milliseconds.
pub const LATENCY_MS_BUCKETS: [f64; 34] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0, 25.0, 30.0, 40.0, 50.0, 65.0, 80.0, 100.0, 130.0, 160.0, 200.0, 250.0, 300.0, 400.0, 500.0,
    650.0, 800.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0, 50000.0, 100000.0,
];
/// daprd's size buckets, in bytes.
pub const SIZE_BUCKETS: [f64; 13] =
    [1024.0, 2048.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0, 268435456.0, 1073741824.0, 4294967296.0];

/// Counters whose daprd name ends in `_total` (registered without it: the crate adds it).
const TOTAL_COUNTERS: &[&str] = &[
    "dapr_runtime_service_invocation_req_sent",
    "dapr_runtime_service_invocation_req_recv",
    "dapr_runtime_service_invocation_res_sent",
    "dapr_runtime_service_invocation_res_recv",
    "dapr_runtime_component_init",
    "dapr_runtime_component_init_fail",
];

type Labels = Vec<(&'static str, String)>;
type Hist = Family<Labels, Histogram, fn() -> Histogram>;

/// A counter exported under its exact name: daprd's counters (`request_count`, `completed_rpcs`)
/// carry no `_total` suffix, which the crate's `Counter` would add.
#[derive(Debug, Default)]
struct Count(Counter);

impl TypedMetric for Count {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Count {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&(self.0.get() as i64))
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

fn latency() -> Histogram {
    Histogram::new(LATENCY_MS_BUCKETS)
}

fn size() -> Histogram {
    Histogram::new(SIZE_BUCKETS)
}

struct Families {
    http_server_request_count: Family<Labels, Count>,
    http_server_request_bytes: Hist,
    http_server_response_bytes: Hist,
    http_server_latency: Hist,
    http_server_response_count: Family<Labels, Count>,
    http_client_completed_count: Family<Labels, Count>,
    http_client_roundtrip_latency: Hist,
    grpc_server_completed_rpcs: Family<Labels, Count>,
    grpc_server_latency: Hist,
    grpc_client_completed_rpcs: Family<Labels, Count>,
    grpc_client_roundtrip_latency: Hist,
    invoke_req_sent: Family<Labels, Counter>,
    invoke_req_recv: Family<Labels, Counter>,
    invoke_res_sent: Family<Labels, Counter>,
    invoke_res_recv: Family<Labels, Counter>,
    invoke_res_recv_latency: Hist,
    component_loaded: Family<Labels, Count>,
    component_init: Family<Labels, Counter>,
    component_init_fail: Family<Labels, Counter>,
    component: component::ComponentFamilies,
    pubsub_egress: pubsub_egress::EgressFamilies,
    pubsub_ingress: pubsub_ingress::IngressFamilies,
}

struct Inner {
    registry: Registry,
    f: Families,
    app_id: String,
    /// daprd's `namespace` label: `NAMESPACE`, or `default` when unset (its `CurrentNamespace`).
    namespace: String,
    enabled: bool,
    increased_cardinality: bool,
}

/// The sidecar's metrics (cheap to clone).
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("app_id", &self.0.app_id).field("enabled", &self.0.enabled).finish()
    }
}

fn hist(ctor: fn() -> Histogram) -> Hist {
    Family::new_with_constructor(ctor)
}

impl Metrics {
    /// Metrics for `app_id`; when `enabled` is false nothing is recorded (and nothing served).
    pub fn new(app_id: &str, enabled: bool, increased_cardinality: bool) -> Self {
        let f = Families {
            http_server_request_count: Family::default(),
            http_server_request_bytes: hist(size),
            http_server_response_bytes: hist(size),
            http_server_latency: hist(latency),
            http_server_response_count: Family::default(),
            http_client_completed_count: Family::default(),
            http_client_roundtrip_latency: hist(latency),
            grpc_server_completed_rpcs: Family::default(),
            grpc_server_latency: hist(latency),
            grpc_client_completed_rpcs: Family::default(),
            grpc_client_roundtrip_latency: hist(latency),
            invoke_req_sent: Family::default(),
            invoke_req_recv: Family::default(),
            invoke_res_sent: Family::default(),
            invoke_res_recv: Family::default(),
            invoke_res_recv_latency: hist(latency),
            component_loaded: Family::default(),
            component_init: Family::default(),
            component_init_fail: Family::default(),
            component: component::ComponentFamilies::new(),
            pubsub_egress: pubsub_egress::EgressFamilies::new(),
            pubsub_ingress: pubsub_ingress::IngressFamilies::new(),
        };
        let mut r = Registry::default();
        r.register("dapr_http_server_request_count", "The number of HTTP requests", f.http_server_request_count.clone());
        r.register("dapr_http_server_request_bytes", "Size distribution of HTTP request body", f.http_server_request_bytes.clone());
        r.register("dapr_http_server_response_bytes", "Size distribution of HTTP response body", f.http_server_response_bytes.clone());
        r.register("dapr_http_server_latency", "Latency distribution of HTTP requests (ms)", f.http_server_latency.clone());
        r.register("dapr_http_server_response_count", "The number of HTTP responses", f.http_server_response_count.clone());
        r.register("dapr_http_client_completed_count", "Count of completed requests to the app", f.http_client_completed_count.clone());
        r.register("dapr_http_client_roundtrip_latency", "End-to-end latency of requests to the app (ms)", f.http_client_roundtrip_latency.clone());
        r.register("dapr_grpc_io_server_completed_rpcs", "Count of RPCs by method and status", f.grpc_server_completed_rpcs.clone());
        r.register("dapr_grpc_io_server_server_latency", "Distribution of server latency in milliseconds", f.grpc_server_latency.clone());
        r.register("dapr_grpc_io_client_completed_rpcs", "Count of RPCs by method and status", f.grpc_client_completed_rpcs.clone());
        r.register("dapr_grpc_io_client_roundtrip_latency", "Distribution of round-trip latency in milliseconds", f.grpc_client_roundtrip_latency.clone());
        r.register("dapr_runtime_service_invocation_req_sent", "The number of requests sent via service invocation", f.invoke_req_sent.clone());
        r.register("dapr_runtime_service_invocation_req_recv", "The number of requests received via service invocation", f.invoke_req_recv.clone());
        r.register("dapr_runtime_service_invocation_res_sent", "The number of responses sent via service invocation", f.invoke_res_sent.clone());
        r.register("dapr_runtime_service_invocation_res_recv", "The number of responses received via service invocation", f.invoke_res_recv.clone());
        r.register("dapr_runtime_service_invocation_res_recv_latency_ms", "The latency of service invocation responses", f.invoke_res_recv_latency.clone());
        r.register("dapr_runtime_component_loaded", "The number of successfully loaded components", f.component_loaded.clone());
        r.register("dapr_runtime_component_init", "The number of initialized components", f.component_init.clone());
        r.register("dapr_runtime_component_init_fail", "The number of component initialization failures", f.component_init_fail.clone());
        f.component.register(&mut r);
        f.pubsub_egress.register(&mut r);
        f.pubsub_ingress.register(&mut r);
        let namespace = std::env::var("NAMESPACE").unwrap_or_else(|_| "default".into());
        Self(Arc::new(Inner { registry: r, f, app_id: app_id.to_string(), namespace, enabled, increased_cardinality }))
    }

    /// Whether anything is recorded.
    pub fn enabled(&self) -> bool {
        self.0.enabled
    }

    fn labels(&self, rest: &[(&'static str, &str)]) -> Labels {
        let mut l = Vec::with_capacity(rest.len() + 1);
        l.push(("app_id", self.0.app_id.clone()));
        l.extend(rest.iter().map(|(k, v)| (*k, v.to_string())));
        l
    }

    /// Prometheus text exposition (format 0.0.4, as daprd serves it). The crate writes a
    /// `_total` counter's family name without the suffix in `# TYPE`/`# HELP`; daprd (Go's
    /// client) writes the full name, which the classic parser needs to type the samples.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut text, &self.0.registry).is_err() {
            return String::new();
        }
        let mut out = String::with_capacity(text.len() + 256);
        for line in text.lines() {
            let meta = line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)).or_else(|| line.strip_prefix("# HELP ").map(|r| ("# HELP ", r)));
            match meta {
                Some((kind, rest)) if rest.ends_with(" counter") || kind == "# HELP " => {
                    let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                    let suffix = if TOTAL_COUNTERS.contains(&name) { "_total" } else { "" };
                    out.push_str(&format!("{kind}{name}{suffix} {tail}\n"));
                }
                _ if line == "# EOF" => {}
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }

    /// A call to another sidecar is about to be sent.
    pub fn invoke_sent(&self, target: &str, streaming: bool) {
        if self.0.enabled {
            let l = self.labels(&[("dst_app_id", target), ("type", kind(streaming))]);
            self.0.f.invoke_req_sent.get_or_create(&l).inc();
        }
    }

    /// Another sidecar answered (`status`: the app's HTTP status, or a gRPC code below 100);
    /// also records the gRPC client RPC.
    pub fn invoke_answered(&self, target: &str, streaming: bool, rpc: &str, grpc: tonic::Code, status: i32, started: Instant) {
        if !self.0.enabled {
            return;
        }
        self.invoke_response(target, streaming, status, Some(started));
        self.grpc_client_rpc(rpc, grpc as i32, started);
    }

    /// A proxied gRPC call (`dapr-app-id`) to `target` ended with gRPC `code`. daprd records the
    /// latency of unary calls only: a stream's end says nothing about the target's speed.
    pub fn proxy_answered(&self, target: &str, streaming: bool, code: i32, started: Instant) {
        if self.0.enabled {
            self.invoke_response(target, streaming, code, (!streaming).then_some(started));
        }
    }

    /// `res_recv`, and its latency when `started` is given.
    fn invoke_response(&self, target: &str, streaming: bool, status: i32, started: Option<Instant>) {
        let status = status.to_string();
        let l = self.labels(&[("src_app_id", target), ("status", &status), ("type", kind(streaming))]);
        self.0.f.invoke_res_recv.get_or_create(&l).inc();
        if let Some(started) = started {
            let l = self.labels(&[("src_app_id", target), ("status", &status)]);
            self.0.f.invoke_res_recv_latency.get_or_create(&l).observe(ms(started));
        }
    }

    /// A call from another sidecar arrived.
    pub fn invoke_received(&self, caller: &str) {
        if self.0.enabled {
            self.0.f.invoke_req_recv.get_or_create(&self.labels(&[("src_app_id", caller)])).inc();
        }
    }

    /// The answer to another sidecar's call was sent.
    pub fn invoke_responded(&self, caller: &str, status: i32) {
        if self.0.enabled {
            let l = self.labels(&[("dst_app_id", caller), ("status", &status.to_string())]);
            self.0.f.invoke_res_sent.get_or_create(&l).inc();
        }
    }

    /// A component finished an init attempt (`component` is its type, e.g. `state.redis`).
    pub fn component_init(&self, component: &str, name: &str, error: Option<&str>) {
        if !self.0.enabled {
            return;
        }
        match error {
            None => {
                self.0.f.component_loaded.get_or_create(&self.labels(&[])).0.inc();
                self.0.f.component_init.get_or_create(&self.labels(&[("component", component)])).inc();
            }
            Some(_) => {
                let l = self.labels(&[("component", component), ("reason", "init"), ("componentName", name)]);
                self.0.f.component_init_fail.get_or_create(&l).inc();
            }
        }
    }
}

fn kind(streaming: bool) -> &'static str {
    if streaming {
        "streaming"
    } else {
        "unary"
    }
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// grpc-go's names of the status codes (what daprd puts in `grpc_*_status`).
pub fn code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    usize::try_from(code).ok().and_then(|c| NAMES.get(c)).copied().unwrap_or("Unknown")
}

/// The `/metrics` router served on `--metrics-port`.
pub fn router(m: Metrics) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = m.clone();
            async move { ([(::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], m.encode()).into_response() }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_daprd_names_without_extra_suffixes() {
        let m = Metrics::new("app", true, false);
        m.invoke_sent("other", true);
        m.component_init("state.sqlite", "store", None);
        let text = m.encode();
        assert!(text.contains("# TYPE dapr_runtime_service_invocation_req_sent_total counter"), "{text}");
        assert!(text.contains("dapr_runtime_service_invocation_req_sent_total{app_id=\"app\",dst_app_id=\"other\",type=\"streaming\"} 1"), "{text}");
        assert!(text.contains("dapr_runtime_component_init_total{app_id=\"app\",component=\"state.sqlite\"} 1"), "{text}");
        assert!(!text.contains("_total_total"));
    }

    #[test]
    fn code_names() {
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(5), "NotFound");
        assert_eq!(code_name(99), "Unknown");
    }
}
