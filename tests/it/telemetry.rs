//! Telemetry of real sidecars: Prometheus `/metrics` on `--metrics-port` under daprd's names and
//! labels (low cardinality: no key ever becomes a label), including component calls and gRPC
//! calls (to a gRPC app, and proxied with `dapr-app-id`), and W3C trace context carried from the
//! caller through both sidecars to the app, with spans exported over OTLP/HTTP to a receiver the
//! test runs.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::IntoResponse;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::harness::{eventually, Sidecar, SidecarBuilder};

/// An app answering every call with the headers it received.
async fn header_app() -> u16 {
    async fn echo(req: Request) -> impl IntoResponse {
        let headers: serde_json::Map<String, Value> =
            req.headers().iter().map(|(k, v)| (k.as_str().to_string(), Value::String(v.to_str().unwrap_or("").into()))).collect();
        axum::Json(json!({ "path": req.uri().path(), "headers": headers }))
    }
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, Router::new().fallback(echo)).await.unwrap() });
    port
}

/// The metrics port the sidecar logged (the harness asks for a free one).
pub(crate) async fn metrics_port(sc: &Sidecar) -> u16 {
    eventually(Duration::from_secs(10), "the metrics server to be logged", || async {
        let logs = sc.logs();
        let line = logs.lines().find(|l| l.contains("metrics server listening"))?;
        let after = &line[line.find("127.0.0.1:")? + "127.0.0.1:".len()..];
        after.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
    })
    .await
}

pub(crate) async fn scrape(sc: &Sidecar, port: u16) -> String {
    let r = sc.client.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    r.text().await.unwrap()
}

/// The value of the sample named `name` whose labels include every `labels` pair.
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .reduce(|a, b| a + b)
}

#[tokio::test]
async fn metrics_use_daprd_names_and_count_state_and_invocation_calls() {
    let home = tempfile::tempdir().unwrap();
    let app = header_app().await;
    let target = SidecarBuilder::new("tel-target").home(home.path()).args(&["--app-port", &app.to_string()]).start().await;
    let caller = SidecarBuilder::new("tel-caller").home(home.path()).memory("store").start().await;
    let port = metrics_port(&caller).await;
    let before = scrape(&caller, port).await;
    assert_eq!(sample(&before, "dapr_runtime_component_init_total", &[("app_id", "tel-caller"), ("component", "state.in-memory")]), Some(1.0), "{before}");
    assert_eq!(sample(&before, "dapr_runtime_component_loaded", &[("app_id", "tel-caller")]), Some(1.0));

    let secret_key = "order-7f3a9c";
    for i in 0..3 {
        let r = caller.client.post(caller.url("/v1.0/state/store")).json(&json!([{ "key": secret_key, "value": i }])).send().await.unwrap();
        assert_eq!(r.status(), 204);
        let r = caller.client.get(caller.url(&format!("/v1.0/state/store/{secret_key}"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = caller.client.get(caller.url("/v1.0/invoke/tel-target/method/orders/123")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut grpc = caller.grpc().await;
    grpc.get_state(rapr_proto::runtime::v1::GetStateRequest { store_name: "store".into(), key: secret_key.into(), ..Default::default() }).await.unwrap();
    // A save the store refuses (an ETag that is not the stored one: a mismatch, as daprd's
    // in-memory store answers) is a failed component call.
    let r = caller.client.post(caller.url("/v1.0/state/store")).json(&json!([{ "key": secret_key, "value": 9, "etag": "not-a-uuid" }])).send().await.unwrap();
    assert_eq!(r.status(), 409);

    let text = scrape(&caller, port).await;
    for family in [
        "dapr_http_server_request_count",
        "dapr_http_server_latency",
        "dapr_http_server_response_count",
        "dapr_grpc_io_server_completed_rpcs",
        "dapr_grpc_io_server_server_latency",
        "dapr_grpc_io_client_completed_rpcs",
        "dapr_grpc_io_client_roundtrip_latency",
        "dapr_runtime_service_invocation_req_sent_total",
        "dapr_runtime_service_invocation_res_recv_total",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family} missing:\n{text}");
    }
    let post = sample(&text, "dapr_http_server_request_count", &[("app_id", "tel-caller"), ("method", "POST")]).unwrap();
    let get = sample(&text, "dapr_http_server_response_count", &[("method", "GET"), ("status", "200")]).unwrap();
    assert!(post >= 3.0 && get >= 6.0, "post {post} get {get}");
    assert!(sample(&text, "dapr_http_server_latency_bucket", &[("method", "GET"), ("status", "200"), ("le", "+Inf")]).unwrap() >= 6.0);
    for le in ["1.0", "13.0", "650.0", "100000.0"] {
        assert!(sample(&text, "dapr_http_server_latency_bucket", &[("method", "GET"), ("le", le)]).is_some(), "daprd's bucket {le}:\n{text}");
    }
    let sent = sample(&text, "dapr_runtime_service_invocation_req_sent_total", &[("dst_app_id", "tel-target"), ("type", "streaming")]);
    assert_eq!(sent, Some(3.0), "{text}");
    assert_eq!(sample(&text, "dapr_runtime_service_invocation_res_recv_total", &[("src_app_id", "tel-target"), ("status", "200")]), Some(3.0));
    assert_eq!(
        sample(&text, "dapr_grpc_io_server_completed_rpcs", &[("grpc_server_method", "/dapr.proto.runtime.v1.Dapr/GetState"), ("grpc_server_status", "OK")]),
        Some(1.0),
        "{text}"
    );
    // daprd's component metrics: one sample per state API call, labelled by store, operation and
    // outcome (never by key).
    let state = |op: &str, ok: &str| sample(&text, "dapr_component_state_count", &[("app_id", "tel-caller"), ("component", "store"), ("namespace", "default"), ("operation", op), ("success", ok)]);
    assert_eq!((state("set", "true"), state("get", "true"), state("set", "false")), (Some(3.0), Some(4.0), Some(1.0)), "{text}");
    assert!(text.contains("# TYPE dapr_component_state_count counter"), "{text}");
    let latencies = |suffix: &str, extra: &[(&str, &str)]| {
        let mut l = vec![("component", "store"), ("operation", "get"), ("success", "true")];
        l.extend_from_slice(extra);
        sample(&text, &format!("dapr_component_state_latencies{suffix}"), &l)
    };
    assert_eq!(latencies("_count", &[]), Some(4.0), "{text}");
    assert_eq!(latencies("_bucket", &[("le", "+Inf")]), Some(4.0));
    assert!(latencies("_bucket", &[("le", "1.0")]).is_some(), "daprd's buckets:\n{text}");
    assert!(!text.contains(secret_key), "a key became a label:\n{text}");
    assert!(!text.contains("path=\""), "low cardinality by default:\n{text}");

    // The target counts what it received and its app calls.
    let tport = metrics_port(&target).await;
    let ttext = scrape(&target, tport).await;
    assert_eq!(sample(&ttext, "dapr_runtime_service_invocation_req_recv_total", &[("src_app_id", "tel-caller")]), Some(3.0), "{ttext}");
    assert_eq!(sample(&ttext, "dapr_runtime_service_invocation_res_sent_total", &[("dst_app_id", "tel-caller"), ("status", "200")]), Some(3.0));
    assert_eq!(sample(&ttext, "dapr_http_client_completed_count", &[("method", "GET"), ("status", "200")]), Some(3.0), "{ttext}");
    assert!(!ttext.contains("orders/123"));
}

/// A gRPC app whose `AppCallback.OnInvoke` echoes the method name.
async fn grpc_app() -> u16 {
    use rapr_proto::app::app_callback_server::{AppCallback, AppCallbackServer};
    use rapr_proto::common::v1::{InvokeRequest, InvokeResponse};
    struct Echo;
    #[tonic::async_trait]
    impl AppCallback for Echo {
        no_topic_callbacks!();
        async fn on_invoke(&self, r: tonic::Request<InvokeRequest>) -> Result<tonic::Response<InvokeResponse>, tonic::Status> {
            let data = Some(prost_types::Any { type_url: String::new(), value: r.into_inner().method.into_bytes() });
            Ok(tonic::Response::new(InvokeResponse { data, content_type: "text/plain".into() }))
        }
    }
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let router = tonic::service::Routes::new(AppCallbackServer::new(Echo)).into_axum_router();
    tokio::spawn(async move { axum::serve(l, router).await.unwrap() });
    port
}

const ON_INVOKE: &str = "/dapr.proto.runtime.v1.AppCallback/OnInvoke";

#[tokio::test]
async fn metrics_count_grpc_app_calls_and_proxied_calls_as_daprd() {
    use rapr_proto::app::app_callback_client::AppCallbackClient;
    use rapr_proto::common::v1::InvokeRequest;
    let home = tempfile::tempdir().unwrap();
    let app = grpc_app().await;
    let target = SidecarBuilder::new("tel-grpc").home(home.path()).args(&["--app-port", &app.to_string(), "--app-protocol", "grpc"]).start().await;
    let caller = SidecarBuilder::new("tel-grpc-caller").home(home.path()).start().await;

    // Self-invocation over gRPC: InvokeService to the sidecar's own gRPC app.
    let mut dapr = target.grpc().await;
    let req = rapr_proto::runtime::v1::InvokeServiceRequest { id: "tel-grpc".into(), message: Some(InvokeRequest { method: "self".into(), ..Default::default() }) };
    dapr.invoke_service(req).await.unwrap();
    // Proxied (`dapr-app-id`): once through the caller's sidecar, once straight to the target's.
    for sc in [&caller, &target] {
        let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", sc.grpc)).unwrap().connect().await.unwrap();
        let mut req = tonic::Request::new(InvokeRequest { method: "proxied".into(), ..Default::default() });
        req.metadata_mut().insert("dapr-app-id", "tel-grpc".parse().unwrap());
        AppCallbackClient::new(ch).on_invoke(req).await.unwrap();
    }

    // The caller served the proxied call and counts it as a unary invocation of tel-grpc.
    let text = scrape(&caller, metrics_port(&caller).await).await;
    let server = |t: &str| sample(t, "dapr_grpc_io_server_completed_rpcs", &[("grpc_server_method", ON_INVOKE), ("grpc_server_status", "OK")]);
    assert_eq!(server(&text), Some(1.0), "{text}");
    assert_eq!(sample(&text, "dapr_runtime_service_invocation_req_sent_total", &[("dst_app_id", "tel-grpc"), ("type", "unary")]), Some(1.0), "{text}");
    assert_eq!(sample(&text, "dapr_runtime_service_invocation_res_recv_total", &[("src_app_id", "tel-grpc"), ("status", "0"), ("type", "unary")]), Some(1.0));
    assert_eq!(sample(&text, "dapr_runtime_service_invocation_res_recv_latency_ms_count", &[("src_app_id", "tel-grpc"), ("status", "0")]), Some(1.0), "{text}");

    // The target: its app channel's OnInvoke (InvokeService) and the delivered proxied call are
    // client RPCs (daprd's internal server counts proxied deliveries with its client
    // interceptor); only the call on its own API port is a served one. Its proxy handler counts
    // the delivered and the local call as invocations, as daprd's does on both sidecars.
    let text = scrape(&target, metrics_port(&target).await).await;
    let client = |status: &str| sample(&text, "dapr_grpc_io_client_completed_rpcs", &[("app_id", "tel-grpc"), ("grpc_client_method", ON_INVOKE), ("grpc_client_status", status)]);
    assert_eq!(client("OK"), Some(2.0), "{text}");
    assert_eq!(sample(&text, "dapr_grpc_io_client_roundtrip_latency_count", &[("grpc_client_method", ON_INVOKE), ("grpc_client_status", "OK")]), Some(2.0));
    assert_eq!(server(&text), Some(1.0), "{text}");
    assert_eq!(sample(&text, "dapr_runtime_service_invocation_req_sent_total", &[("dst_app_id", "tel-grpc"), ("type", "unary")]), Some(2.0), "{text}");
    assert_eq!(sample(&text, "dapr_runtime_service_invocation_res_recv_total", &[("src_app_id", "tel-grpc"), ("status", "0")]), Some(2.0));
}

#[tokio::test]
async fn metrics_can_be_switched_off() {
    let sc = SidecarBuilder::new("tel-off").args(&["--enable-metrics", "false"]).start().await;
    assert!(!sc.logs().contains("metrics server listening"), "{}", sc.logs());
}

/// A minimal OTLP/HTTP receiver: every `POST /v1/traces` body is decoded and forwarded.
async fn otlp_receiver() -> (u16, mpsc::UnboundedReceiver<ExportTraceServiceRequest>) {
    let (tx, rx) = mpsc::unbounded_channel();
    async fn traces(State(tx): State<mpsc::UnboundedSender<ExportTraceServiceRequest>>, body: Bytes) -> impl IntoResponse {
        match ExportTraceServiceRequest::decode(body) {
            Ok(req) => {
                let _ = tx.send(req);
                (axum::http::StatusCode::OK, [("content-type", "application/x-protobuf")], Vec::new())
            }
            Err(_) => (axum::http::StatusCode::BAD_REQUEST, [("content-type", "text/plain")], b"bad protobuf".to_vec()),
        }
    }
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let app = Router::new().route("/v1/traces", axum::routing::post(traces)).with_state(tx);
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (port, rx)
}

/// (service name, trace id hex, span id hex, parent span id hex, span name) of every span.
fn spans(req: &ExportTraceServiceRequest) -> Vec<(String, String, String, String, String)> {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
            .and_then(|a| a.value.as_ref())
            .and_then(|v| match &v.value {
                Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                out.push((service.clone(), hex(&s.trace_id), hex(&s.span_id), hex(&s.parent_span_id), s.name.clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn traces_cross_both_sidecars_to_the_app_and_reach_the_otlp_receiver() {
    let (otlp, mut rx) = otlp_receiver().await;
    let config = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: tracing\nspec:\n  tracing:\n    samplingRate: \"1\"\n    otel:\n      endpointAddress: 127.0.0.1:{otlp}\n      isSecure: false\n      protocol: http\n"
    );
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("config.yaml");
    std::fs::write(&cfg, config).unwrap();
    let cfg = cfg.to_str().unwrap();
    let app = header_app().await;
    let target = SidecarBuilder::new("trc-target").home(home.path()).args(&["--app-port", &app.to_string(), "--config", cfg]).start().await;
    let caller = SidecarBuilder::new("trc-caller").home(home.path()).args(&["--config", cfg]).start().await;
    assert!(!caller.logs().contains("not implemented by rapr yet"), "tracing counts as implemented:\n{}", caller.logs());

    // A caller that already has a trace: the same trace id reaches the app, with a new span id.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let incoming = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let r = caller.client.get(caller.url("/v1.0/invoke/trc-target/method/traced")).header("traceparent", &incoming).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.unwrap();
    let tp = seen["headers"]["traceparent"].as_str().expect("the app sees a traceparent").to_string();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[1], trace_id, "same trace id at the app");
    assert_ne!(parts[2], "00f067aa0ba902b7", "a new span id at the app");
    assert_eq!(parts[3], "01");

    // Without a traceparent, a new trace starts and still reaches the app.
    let r = caller.client.get(caller.url("/v1.0/invoke/trc-target/method/fresh")).send().await.unwrap();
    let seen: Value = r.json().await.unwrap();
    let fresh = seen["headers"]["traceparent"].as_str().expect("a new trace reaches the app").to_string();
    assert!(!fresh.contains(trace_id));

    // Both sidecars export their spans of the first trace; the target's span is the app's parent
    // and a child of the caller's.
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let services: Vec<String> = got.iter().filter(|s: &&(String, String, String, String, String)| s.1 == trace_id).map(|s| s.0.clone()).collect();
        if services.iter().any(|s| s == "trc-caller") && services.iter().any(|s| s == "trc-target") {
            break;
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(req)) => got.extend(spans(&req)),
            _ => panic!("spans of both sidecars did not arrive; got {got:?}\n{}\n{}", caller.logs(), target.logs()),
        }
    }
    let ours: Vec<_> = got.iter().filter(|s| s.1 == trace_id).collect();
    let caller_span = ours.iter().find(|s| s.0 == "trc-caller").unwrap();
    let target_span = ours.iter().find(|s| s.0 == "trc-target").unwrap();
    assert_eq!(caller_span.3, "00f067aa0ba902b7", "the caller's span is a child of the incoming one");
    assert_eq!(target_span.3, caller_span.2, "the target's span is a child of the caller's");
    assert_eq!(parts[2], target_span.2, "the app's parent is the target sidecar's span");
}

/// An OTLP/HTTP receiver that also hands over the request headers of each export.
async fn otlp_receiver_with_headers() -> (u16, mpsc::UnboundedReceiver<(axum::http::HeaderMap, ExportTraceServiceRequest)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    type Tx = mpsc::UnboundedSender<(axum::http::HeaderMap, ExportTraceServiceRequest)>;
    async fn traces(State(tx): State<Tx>, headers: axum::http::HeaderMap, body: Bytes) -> impl IntoResponse {
        match ExportTraceServiceRequest::decode(body) {
            Ok(req) => {
                let _ = tx.send((headers, req));
                (axum::http::StatusCode::OK, [("content-type", "application/x-protobuf")], Vec::new())
            }
            Err(_) => (axum::http::StatusCode::BAD_REQUEST, [("content-type", "text/plain")], b"bad protobuf".to_vec()),
        }
    }
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let app = Router::new().route("/v1/traces", axum::routing::post(traces)).with_state(tx);
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (port, rx)
}

#[tokio::test]
async fn otlp_exporter_from_the_environment_as_daprd_reads_it() {
    let (otlp, mut rx) = otlp_receiver_with_headers().await;
    // No Configuration at all: the endpoint, protocol, headers and service name come from the
    // OTel variables daprd honours, and an environment endpoint samples everything.
    let sc = SidecarBuilder::new("otel-env")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://127.0.0.1:{otlp}"))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-rapr-token=s3cret%20value")
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "5000")
        .env("OTEL_SERVICE_NAME", "svc-from-env")
        .start()
        .await;
    let r = sc.client.get(sc.url("/v1.0/state/nostore/k")).send().await.unwrap();
    assert!(r.status().is_client_error() || r.status().is_server_error());
    let tp = r.headers().get("traceparent").and_then(|v| v.to_str().ok()).expect("traceparent on the answer").to_string();
    assert!(tp.ends_with("-01"), "sampled: {tp}");
    let trace_id = tp.split('-').nth(1).unwrap().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((headers, req))) => {
                let ours: Vec<_> = spans(&req).into_iter().filter(|s| s.1 == trace_id).collect();
                if let Some(s) = ours.first() {
                    assert_eq!(s.0, "svc-from-env", "OTEL_SERVICE_NAME names the service");
                    assert_eq!(s.4, "/v1.0/state/nostore/k");
                    assert_eq!(headers.get("x-rapr-token").and_then(|v| v.to_str().ok()), Some("s3cret value"), "OTEL_EXPORTER_OTLP_HEADERS, percent-decoded");
                    break;
                }
            }
            _ => panic!("the span did not reach the OTLP receiver\n{}", sc.logs()),
        }
    }
}

#[tokio::test]
async fn an_otel_endpoint_without_protocol_exports_nothing_and_baggage_is_checked_as_daprd() {
    let (otlp, mut rx) = otlp_receiver_with_headers().await;
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("config.yaml");
    std::fs::write(&cfg, format!("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  tracing:\n    samplingRate: \"1\"\n    otel:\n      endpointAddress: 127.0.0.1:{otlp}\n      isSecure: false\n")).unwrap();
    let sc = SidecarBuilder::new("otel-noproto").args(&["--config", cfg.to_str().unwrap()]).start().await;
    assert!(sc.logs().contains("has no protocol"), "{}", sc.logs());
    let r = sc.client.get(sc.url("/v1.0/state/nostore/k")).send().await.unwrap();
    assert!(r.headers().get("traceparent").is_some(), "spans still propagate");
    // W3C baggage as daprd's middleware: echoed when valid, refused when not.
    let r = sc.client.get(sc.url("/v1.0/metadata")).header("baggage", "userId=alice,node=DF%2028").send().await.unwrap();
    assert_eq!(r.headers().get("baggage").and_then(|v| v.to_str().ok()), Some("userId=alice,node=DF%2028"));
    let r = sc.client.get(sc.url("/v1.0/metadata")).header("baggage", "no-value").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().starts_with("invalid baggage header"));
    let mut grpc = sc.grpc().await;
    let mut req = tonic::Request::new(rapr_proto::runtime::v1::GetMetadataRequest {});
    req.metadata_mut().insert("baggage", "bad key=v".parse().unwrap());
    assert_eq!(grpc.get_metadata(req).await.expect_err("invalid baggage").code(), tonic::Code::InvalidArgument);
    let mut req = tonic::Request::new(rapr_proto::runtime::v1::GetMetadataRequest {});
    req.metadata_mut().insert("baggage", "k=v".parse().unwrap());
    let ok = grpc.get_metadata(req).await.expect("valid baggage");
    assert_eq!(ok.metadata().get("baggage").and_then(|v| v.to_str().ok()), Some("k=v"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(rx.try_recv().is_err(), "nothing exported");
}

/// An OTLP/gRPC receiver speaking just enough gRPC (HTTP/2 without TLS): each `Export` request's
/// message is decoded and handed over with its metadata, and answered with an empty message.
async fn otlp_grpc_receiver() -> (u16, mpsc::UnboundedReceiver<(axum::http::HeaderMap, ExportTraceServiceRequest)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    type Tx = mpsc::UnboundedSender<(axum::http::HeaderMap, ExportTraceServiceRequest)>;
    async fn export(State(tx): State<Tx>, headers: axum::http::HeaderMap, body: Bytes) -> impl IntoResponse {
        // One gRPC frame: compressed flag, 4-byte length, the message.
        if body.len() >= 5 && body[0] == 0 {
            if let Ok(req) = ExportTraceServiceRequest::decode(&body[5..]) {
                let _ = tx.send((headers, req));
            }
        }
        ([("content-type", "application/grpc"), ("grpc-status", "0")], vec![0u8, 0, 0, 0, 0])
    }
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let app = Router::new().route("/opentelemetry.proto.collector.trace.v1.TraceService/Export", axum::routing::post(export)).with_state(tx);
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (port, rx)
}

#[tokio::test]
async fn otlp_over_grpc_sends_the_configured_headers() {
    let (otlp, mut rx) = otlp_grpc_receiver().await;
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  tracing:\n    samplingRate: \"1\"\n    otel:\n      endpointAddress: 127.0.0.1:{otlp}\n      isSecure: false\n      protocol: grpc\n      timeout: 5s\n      headers:\n      - \"x-tenant=blue\"\n"),
    )
    .unwrap();
    let sc = SidecarBuilder::new("otel-grpc").args(&["--config", cfg.to_str().unwrap()]).start().await;
    let r = sc.client.get(sc.url("/v1.0/state/nostore/k")).send().await.unwrap();
    let trace_id = r.headers().get("traceparent").and_then(|v| v.to_str().ok()).and_then(|t| t.split('-').nth(1)).expect("traceparent on the answer").to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((headers, req))) => {
                if spans(&req).iter().any(|s| s.1 == trace_id && s.0 == "otel-grpc") {
                    assert_eq!(headers.get("x-tenant").and_then(|v| v.to_str().ok()), Some("blue"), "otel.headers as gRPC metadata");
                    assert!(headers.get("grpc-encoding").is_none(), "uncompressed, as daprd's exporter");
                    break;
                }
            }
            _ => panic!("the span did not reach the OTLP/gRPC receiver\n{}", sc.logs()),
        }
    }
}
