//! `/metrics` of a real sidecar against daprd v1.18's views: every family it exports here has
//! daprd's name, type, label names (the view's tag keys, pkg/diagnostics/*_monitoring.go) and
//! buckets, numbers written as Go's client writes them (`le="1"`, `le="1.048576e+06"`). Then the
//! Configuration's `spec.metric` switches: low cardinality, `excludeVerbs`, `pathMatching`,
//! `latencyDistributionBuckets` and `rules`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;

use crate::harness::{eventually, Sidecar, SidecarBuilder};
use crate::telemetry::{header_app, metrics_port, scrape};

/// daprd's families: name, type and label names (`le` aside), from its views.
const DAPRD_FAMILIES: &[(&str, &str, &[&str])] = &[
    ("dapr_http_server_request_count", "counter", &["app_id", "method", "path", "status"]),
    ("dapr_http_server_latency", "histogram", &["app_id", "method", "path", "status"]),
    ("dapr_http_server_response_count", "counter", &["app_id", "method", "path", "status"]),
    ("dapr_http_server_request_bytes", "histogram", &["app_id"]),
    ("dapr_http_server_response_bytes", "histogram", &["app_id"]),
    ("dapr_http_client_sent_bytes", "histogram", &["app_id", "method", "path", "status"]),
    ("dapr_http_client_received_bytes", "histogram", &["app_id"]),
    ("dapr_http_client_roundtrip_latency", "histogram", &["app_id", "method", "path", "status"]),
    ("dapr_http_client_completed_count", "counter", &["app_id", "method", "path", "status"]),
    ("dapr_http_healthprobes_completed_count", "counter", &["app_id", "status"]),
    ("dapr_http_healthprobes_roundtrip_latency", "histogram", &["app_id", "status"]),
    ("dapr_grpc_io_server_completed_rpcs", "counter", &["app_id", "grpc_server_method", "grpc_server_status"]),
    ("dapr_grpc_io_server_server_latency", "histogram", &["app_id", "grpc_server_method", "grpc_server_status"]),
    ("dapr_grpc_io_server_received_bytes_per_rpc", "histogram", &["app_id", "grpc_server_method"]),
    ("dapr_grpc_io_server_sent_bytes_per_rpc", "histogram", &["app_id", "grpc_server_method"]),
    ("dapr_resiliency_loaded", "counter", &["app_id", "name", "namespace"]),
    ("dapr_resiliency_count", "counter", &["app_id", "flow_direction", "name", "namespace", "policy", "status", "target"]),
    ("dapr_component_state_count", "counter", &["app_id", "component", "namespace", "operation", "success"]),
    ("dapr_component_state_latencies", "histogram", &["app_id", "component", "namespace", "operation", "success"]),
    ("dapr_runtime_component_loaded", "counter", &["app_id"]),
    ("dapr_runtime_component_init_total", "counter", &["app_id", "component"]),
];

/// daprd's default latency buckets and its size buckets, as Go's client writes them.
const LATENCY_LE: &str = "1 2 3 4 5 6 8 10 13 16 20 25 30 40 50 65 80 100 130 160 200 250 300 400 500 650 800 1000 2000 5000 10000 20000 50000 100000 +Inf";
const SIZE_LE: &str = "1024 2048 4096 16384 65536 262144 1.048576e+06 4.194304e+06 1.6777216e+07 6.7108864e+07 2.68435456e+08 1.073741824e+09 4.294967296e+09 +Inf";

/// One sample line: name, labels, value.
type Sample = (String, BTreeMap<String, String>, String);

fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (head, value) = l.rsplit_once(' ').unwrap();
            let (name, labels) = head.split_once('{').unwrap_or((head, ""));
            let labels = labels
                .trim_end_matches('}')
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once("=\"").unwrap();
                    (k.to_string(), v.trim_end_matches('"').to_string())
                })
                .collect();
            (name.to_string(), labels, value.to_string())
        })
        .collect()
}

/// The samples of family `name` (a histogram's `_bucket`/`_sum`/`_count` included).
fn family<'a>(all: &'a [Sample], name: &str) -> Vec<&'a Sample> {
    all.iter().filter(|(n, _, _)| n == name || n.strip_prefix(name).is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))).collect()
}

/// The `le` values of the first series of histogram `name`, in order.
fn buckets(all: &[Sample], name: &str) -> String {
    let first = family(all, name).into_iter().find(|s| s.0.ends_with("_bucket")).unwrap_or_else(|| panic!("{name} has no buckets"));
    let mut series = first.1.clone();
    series.remove("le");
    let bucket = format!("{name}_bucket");
    let les: Vec<&str> = all
        .iter()
        .filter(|(n, l, _)| *n == bucket && l.iter().filter(|(k, _)| *k != "le").eq(series.iter()))
        .map(|(_, l, _)| l["le"].as_str())
        .collect();
    les.join(" ")
}

fn value(all: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    all.iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, _, v)| v.parse::<f64>().unwrap())
        .reduce(|a, b| a + b)
}

const RESILIENCY: &str = "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: metrics-res\nspec:\n  policies:\n    retries:\n      twice:\n        policy: constant\n        duration: 10ms\n        maxRetries: 2\n  targets:\n    components:\n      store:\n        outbound:\n          retry: twice\n";

async fn exercise(sc: &Sidecar) {
    let r = sc.client.post(sc.url("/v1.0/state/store")).json(&json!([{ "key": "k-4711", "value": 1 }])).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = sc.client.get(sc.url("/v1.0/state/store/k-4711")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut grpc = sc.grpc().await;
    grpc.get_state(rapr_proto::runtime::v1::GetStateRequest { store_name: "store".into(), key: "k-4711".into(), ..Default::default() }).await.unwrap();
}

#[tokio::test]
async fn metrics_names_labels_and_buckets_are_daprds() {
    let app = header_app().await;
    let sc = SidecarBuilder::new("met-names")
        .memory("store")
        .file("resiliency.yaml", RESILIENCY)
        .args(&["--app-port", &app.to_string(), "--enable-app-health-check", "--app-health-probe-interval", "1"])
        .start()
        .await;
    exercise(&sc).await;
    let r = sc.client.post(sc.url("/v1.0/invoke/met-names/method/orders/42")).body("hello").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let port = metrics_port(&sc).await;
    // The health monitor probes every second: wait for its first count.
    let text = eventually(Duration::from_secs(10), "a health probe counted", || async {
        let t = scrape(&sc, port).await;
        t.contains("dapr_http_healthprobes_completed_count{").then_some(t)
    })
    .await;
    let all = samples(&text);

    for (name, kind, labels) in DAPRD_FAMILIES {
        assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name} {kind} missing:\n{text}");
        let want: BTreeSet<&str> = labels.iter().copied().collect();
        for (n, l, _) in family(&all, name) {
            let got: BTreeSet<&str> = l.keys().map(String::as_str).filter(|k| *k != "le").collect();
            assert_eq!(got, want, "labels of {n}:\n{text}");
        }
    }
    for name in ["dapr_http_server_latency", "dapr_grpc_io_server_server_latency", "dapr_http_healthprobes_roundtrip_latency", "dapr_component_state_latencies"] {
        assert_eq!(buckets(&all, name), LATENCY_LE, "{name}");
    }
    for name in ["dapr_http_server_request_bytes", "dapr_grpc_io_server_received_bytes_per_rpc", "dapr_http_client_sent_bytes"] {
        assert_eq!(buckets(&all, name), SIZE_LE, "{name}");
    }
    // Increased cardinality is daprd's default: paths carry no key.
    let req = |method: &str, path: &str, status: &str| value(&all, "dapr_http_server_request_count", &[("method", method), ("path", path), ("status", status)]);
    assert_eq!(req("POST", "/v1.0/state/store", "204"), Some(1.0), "{text}");
    assert_eq!(req("GET", "/v1.0/state/store", "200"), Some(1.0), "{text}");
    assert!(!text.contains("k-4711"), "a key became a label:\n{text}");
    assert_eq!(value(&all, "dapr_http_client_completed_count", &[("method", "POST"), ("path", "/orders/42"), ("status", "200")]), Some(1.0), "{text}");
    assert_eq!(value(&all, "dapr_http_client_sent_bytes_sum", &[("method", "POST"), ("path", "/orders/42"), ("status", "")]), Some(5.0), "{text}");
    let get_state = [("grpc_server_method", "/dapr.proto.runtime.v1.Dapr/GetState"), ("grpc_server_status", "OK")];
    assert_eq!(value(&all, "dapr_grpc_io_server_server_latency_count", &get_state), Some(1.0), "{text}");
    let sent = value(&all, "dapr_grpc_io_server_sent_bytes_per_rpc_sum", &get_state[..1]).unwrap();
    let received = value(&all, "dapr_grpc_io_server_received_bytes_per_rpc_sum", &get_state[..1]).unwrap();
    assert!(sent > 0.0 && received > 0.0, "message bytes: sent {sent} received {received}");
    assert!(value(&all, "dapr_http_healthprobes_completed_count", &[("status", "200")]).unwrap() >= 1.0, "{text}");
    assert_eq!(value(&all, "dapr_resiliency_loaded", &[("name", "metrics-res"), ("namespace", "")]), Some(1.0), "{text}");
    let res = [("flow_direction", "outbound"), ("name", "metrics-res"), ("policy", "retry"), ("status", ""), ("target", "Statestore_store")];
    assert!(value(&all, "dapr_resiliency_count", &res).unwrap() >= 3.0, "one per state call:\n{text}");
    assert!(!text.contains("le=\"1.0\""), "Go's number format:\n{text}");
}

#[tokio::test]
async fn metric_configuration_shapes_labels_and_buckets() {
    let b = SidecarBuilder::new("met-config").memory("store");
    let cfg = b.dir().join("resources").join("config.yaml");
    let config = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: metrics\nspec:\n  metrics:\n    latencyDistributionBuckets: [5, 50]\n    http:\n      increasedCardinality: false\n      excludeVerbs: true\n      pathMatching: [\"/v1.0/state/{store}\"]\n    rules:\n    - name: dapr_http_server_request_count\n      labels:\n      - name: path\n        regex:\n          \"/state\": \"^/v1.0/state/.*$\"\n";
    let sc = b.file("config.yaml", config).args(&["--config", cfg.to_str().unwrap()]).start().await;
    exercise(&sc).await;
    let r = sc.client.get(sc.url("/v1.0/metadata")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = scrape(&sc, metrics_port(&sc).await).await;
    let all = samples(&text);
    // The rule rewrote the matched pattern; unmatched paths keep an empty label (low cardinality).
    assert_eq!(value(&all, "dapr_http_server_request_count", &[("method", ""), ("path", "/state"), ("status", "204")]), Some(1.0), "{text}");
    assert_eq!(value(&all, "dapr_http_server_latency_count", &[("method", ""), ("path", "/v1.0/state/{store}"), ("status", "200")]), Some(1.0), "{text}");
    assert!(value(&all, "dapr_http_server_latency_count", &[("method", ""), ("path", ""), ("status", "200")]).is_some_and(|n| n >= 1.0), "{text}");
    assert!(!text.contains("dapr_http_server_response_count"), "a legacy family:\n{text}");
    assert_eq!(buckets(&all, "dapr_http_server_latency"), "5 50 +Inf");
    assert_eq!(buckets(&all, "dapr_grpc_io_server_server_latency"), "5 50 +Inf");
    assert_eq!(buckets(&all, "dapr_http_server_request_bytes"), SIZE_LE, "sizes keep daprd's buckets");
}
