//! OTLP trace export of real sidecars, to receivers the tests run (OTLP/HTTP protobuf and a
//! minimal OTLP/gRPC one): W3C trace context carried from the caller through both sidecars to
//! the app, the exporter built as daprd builds it (protocol required, headers, timeout, the
//! `OTEL_EXPORTER_OTLP_*` environment, `OTEL_SERVICE_NAME`), and W3C baggage checked as daprd's
//! middleware checks it.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::harness::SidecarBuilder;
use crate::telemetry::header_app;

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
