//! Prometheus metrics under daprd's names (`dapr_` + the OpenCensus view name with `/` and `.`
//! turned into `_`), labels, buckets and number formatting, so existing dashboards and alerts
//! work unchanged.
//!
//! One `Metrics` handle per sidecar, cloned into the HTTP and gRPC routers (as middleware), the
//! app channel and its health monitor, the internal invocation client and server, the pub/sub
//! deliveries, the resiliency policies and the component supervisor. Recording touches only
//! atomics and the families' concurrent maps: no mailbox, no lock of ours on the request path.
//! The Configuration's `spec.metric` shapes it: `http.increasedCardinality` (default true, as
//! daprd), `http.pathMatching`, `http.excludeVerbs` (see `path.rs`), `latencyDistributionBuckets`,
//! and `rules` (label rewriting, applied when the text is written: `text.rs`).
//!
//! `http.rs` holds the HTTP server/client/health-probe views and the HTTP middleware, `grpc.rs`
//! the gRPC ones, `service.rs` service invocation and component init, `component.rs` the
//! state/secret component calls, `pubsub_*.rs` pub/sub, `resiliency.rs` the policy views, `placement.rs` rapr's placement lease views.

mod cache;
mod component;
mod grpc;
mod http;
mod path;
mod placement;
mod pubsub_egress;
mod pubsub_ingress;
mod resiliency;
mod service;
mod text;

pub use component::ComponentOp;
pub use grpc::{grpc_server, grpc_status, watch_grpc_status, ProxiedDelivery};
pub use http::http_server;
pub use path::normalize_path;
pub use resiliency::{PolicyKind, PolicyMetrics};
pub use text::LabelRule;

use std::sync::Arc;
use std::time::Instant;

use axum::response::IntoResponse;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// daprd's default latency buckets, in milliseconds.
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
    "dapr_resiliency_activations",
    "rapr_placement_fences",
];

type Labels = Vec<(&'static str, String)>;
type Hist = Family<Labels, Histogram, Buckets>;

/// A histogram's bucket bounds (daprd's defaults, or `latencyDistributionBuckets`).
#[derive(Clone)]
struct Buckets(Arc<[f64]>);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

impl Buckets {
    fn family(&self) -> Hist {
        Family::new_with_constructor(self.clone())
    }
}

/// A counter exported under its exact name: daprd's counters (`request_count`, `completed_rpcs`)
/// carry no `_total` suffix, which the crate's `Counter` would add.
#[derive(Debug, Default, Clone)]
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

/// How a sidecar's metrics are shaped (the Configuration's `spec.metric`).
#[derive(Debug, Clone)]
pub struct MetricOptions {
    /// Whether anything is recorded.
    pub enabled: bool,
    /// `http.increasedCardinality` (daprd's default: true).
    pub increased_cardinality: bool,
    /// `http.excludeVerbs`.
    pub exclude_verbs: bool,
    /// `http.pathMatching`.
    pub path_matching: Vec<String>,
    /// `latencyDistributionBuckets` (none: daprd's defaults).
    pub latency_buckets: Option<Vec<f64>>,
    /// `rules`.
    pub rules: Vec<LabelRule>,
}

impl Default for MetricOptions {
    fn default() -> Self {
        Self { enabled: true, increased_cardinality: true, exclude_verbs: false, path_matching: Vec::new(), latency_buckets: None, rules: Vec::new() }
    }
}

struct Families {
    http: http::HttpFamilies,
    grpc: grpc::GrpcFamilies,
    service: service::ServiceFamilies,
    component: component::ComponentFamilies,
    pubsub_egress: pubsub_egress::EgressFamilies,
    pubsub_ingress: pubsub_ingress::IngressFamilies,
    resiliency: resiliency::ResiliencyFamilies,
    placement: placement::PlacementFamilies,
}

struct Inner {
    registry: Registry,
    f: Families,
    app_id: String,
    /// daprd's `namespace` label: `NAMESPACE`, or `default` when unset (its `CurrentNamespace`).
    namespace: String,
    enabled: bool,
    http: path::HttpLabels,
    rules: Vec<LabelRule>,
    /// The hot recording sites' handles by label values (`cache.rs`).
    cache: Caches,
}

/// One [`cache::HandleCache`] per hot recording site.
#[derive(Default)]
struct Caches {
    http_server: cache::HandleCache,
    http_server_bytes: cache::HandleCache,
    app_http: cache::HandleCache,
    app_http_received: cache::HandleCache,
    grpc_server: cache::HandleCache,
    grpc_server_sizes: cache::HandleCache,
    grpc_client: cache::HandleCache,
    grpc_client_sizes: cache::HandleCache,
    invoke_sent: cache::HandleCache,
    invoke_response: cache::HandleCache,
    invoke_response_latency: cache::HandleCache,
    invoke_received: cache::HandleCache,
    invoke_responded: cache::HandleCache,
    component: cache::HandleCache,
}

/// The sidecar's metrics (cheap to clone).
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("app_id", &self.0.app_id).field("enabled", &self.0.enabled).finish()
    }
}

impl Metrics {
    /// Metrics for `app_id` with daprd's defaults but for the two switches; when `enabled` is
    /// false nothing is recorded (and nothing served).
    pub fn new(app_id: &str, enabled: bool, increased_cardinality: bool) -> Self {
        Self::with_options(app_id, MetricOptions { enabled, increased_cardinality, ..MetricOptions::default() })
    }

    /// Metrics for `app_id` shaped by `o`.
    pub fn with_options(app_id: &str, o: MetricOptions) -> Self {
        let latency = Buckets(o.latency_buckets.clone().filter(|b| !b.is_empty()).map(Arc::from).unwrap_or_else(|| Arc::from(&LATENCY_MS_BUCKETS[..])));
        let size = Buckets(Arc::from(&SIZE_BUCKETS[..]));
        let f = Families {
            http: http::HttpFamilies::new(&latency, &size),
            grpc: grpc::GrpcFamilies::new(&latency, &size),
            service: service::ServiceFamilies::new(&latency),
            component: component::ComponentFamilies::new(&latency),
            pubsub_egress: pubsub_egress::EgressFamilies::new(&latency),
            pubsub_ingress: pubsub_ingress::IngressFamilies::new(&latency),
            resiliency: resiliency::ResiliencyFamilies::default(),
            placement: placement::PlacementFamilies::default(),
        };
        let mut r = Registry::default();
        f.http.register(&mut r);
        f.grpc.register(&mut r);
        f.service.register(&mut r);
        f.component.register(&mut r);
        f.pubsub_egress.register(&mut r);
        f.pubsub_ingress.register(&mut r);
        f.resiliency.register(&mut r);
        f.placement.register(&mut r);
        let namespace = std::env::var("NAMESPACE").unwrap_or_else(|_| "default".into());
        let http = path::HttpLabels {
            legacy: o.increased_cardinality,
            exclude_verbs: o.exclude_verbs,
            matcher: path::PathMatcher::new(&o.path_matching, o.increased_cardinality),
        };
        Self(Arc::new(Inner { registry: r, f, app_id: app_id.to_string(), namespace, enabled: o.enabled, http, rules: o.rules, cache: Caches::default() }))
    }

    /// Whether anything is recorded.
    pub fn enabled(&self) -> bool {
        self.0.enabled
    }

    /// `app_id` and `rest` (the text pass sorts them by name, as Go's client does).
    fn labels(&self, rest: &[(&'static str, &str)]) -> Labels {
        let mut l = Vec::with_capacity(rest.len() + 1);
        l.push(("app_id", self.0.app_id.clone()));
        l.extend(rest.iter().map(|(k, v)| (*k, v.to_string())));
        l
    }

    /// Prometheus text exposition (format 0.0.4), as daprd's exporter writes it (`text.rs`).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut text, &self.0.registry).is_err() {
            return String::new();
        }
        text::daprd_exposition(&text, TOTAL_COUNTERS, &self.0.rules)
    }
}

fn kind(streaming: bool) -> &'static str {
    if streaming {
        "streaming"
    } else {
        "unary"
    }
}

/// Milliseconds since `started`, with the fraction (daprd's `ElapsedSince`).
fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// Whole milliseconds since `started`: daprd's HTTP and gRPC views divide a Go duration by
/// `time.Millisecond`, which truncates.
fn whole_ms(started: Instant) -> f64 {
    started.elapsed().as_millis() as f64
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
        assert!(text.contains("# HELP dapr_runtime_service_invocation_req_sent_total The number of requests sent via service invocation.\n"), "{text}");
        assert!(text.contains("dapr_runtime_service_invocation_req_sent_total{app_id=\"app\",dst_app_id=\"other\",type=\"streaming\"} 1"), "{text}");
        assert!(text.contains("dapr_runtime_component_init_total{app_id=\"app\",component=\"state.sqlite\"} 1"), "{text}");
        assert!(!text.contains("_total_total"));
        assert!(!text.contains("dapr_http_server_request_count"), "a family with no sample is not written: {text}");
    }

    #[test]
    fn latency_buckets_from_the_configuration() {
        let o = MetricOptions { latency_buckets: Some(vec![5.0, 50.0]), ..MetricOptions::default() };
        let m = Metrics::with_options("app", o);
        m.component_init("state.sqlite", "store", None);
        m.state_call("store", ComponentOp::Get, true, Instant::now());
        let text = m.encode();
        assert!(text.contains("le=\"5\"} 1") && text.contains("le=\"50\"} 1") && !text.contains("le=\"1\""), "{text}");
    }

    #[test]
    fn code_names() {
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(5), "NotFound");
        assert_eq!(code_name(99), "Unknown");
    }
}
