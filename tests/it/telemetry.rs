//! Telemetry of real sidecars: Prometheus `/metrics` on `--metrics-port` under daprd's names and
//! labels (no key ever becomes a label), including component calls and gRPC calls (to a gRPC
//! app, and proxied with `dapr-app-id`). OTLP trace export is in `otlp.rs`, Zipkin export and
//! span shapes in `zipkin.rs`, daprd's families checked one by one in `metrics.rs`.

use std::time::Duration;

use axum::extract::Request;
use axum::response::IntoResponse;
use axum::Router;
use serde_json::{json, Value};

use crate::harness::{eventually, Sidecar, SidecarBuilder};

/// An app answering every call with the headers it received.
pub(crate) async fn header_app() -> u16 {
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
        // `metrics="[0.0.0.0:PORT]"`: daprd's default --metrics-listen-address binds all interfaces.
        let inside = &line[line.find("metrics=\"[")? + "metrics=\"[".len()..];
        inside[..inside.find(']')?].rsplit(':').next()?.parse().ok()
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
    // A unary call to the other sidecar (gRPC InvokeService: CallLocal), whose message sizes
    // daprd's unary client interceptor records.
    let http_get = rapr_proto::common::v1::HttpExtension { verb: rapr_proto::common::v1::http_extension::Verb::Get as i32, querystring: String::new() };
    let message = rapr_proto::common::v1::InvokeRequest { method: "orders/5".into(), http_extension: Some(http_get), ..Default::default() };
    #[allow(deprecated)]
    grpc.invoke_service(rapr_proto::runtime::v1::InvokeServiceRequest { id: "tel-target".into(), message: Some(message) }).await.unwrap();
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
    for le in ["1", "13", "650", "100000"] {
        assert!(sample(&text, "dapr_http_server_latency_bucket", &[("method", "GET"), ("le", le)]).is_some(), "daprd's bucket {le}:\n{text}");
    }
    let sent = sample(&text, "dapr_runtime_service_invocation_req_sent_total", &[("dst_app_id", "tel-target"), ("type", "streaming")]);
    assert_eq!(sent, Some(3.0), "{text}");
    // Three HTTP calls (streams) and the one InvokeService (unary).
    assert_eq!(sample(&text, "dapr_runtime_service_invocation_res_recv_total", &[("src_app_id", "tel-target"), ("status", "200")]), Some(4.0));
    let call_local = [("grpc_client_method", "/dapr.proto.internals.v1.ServiceInvocation/CallLocal")];
    let sent_bytes = sample(&text, "dapr_grpc_io_client_sent_bytes_per_rpc_sum", &call_local).unwrap_or_default();
    let received_bytes = sample(&text, "dapr_grpc_io_client_received_bytes_per_rpc_sum", &call_local).unwrap_or_default();
    assert!(sent_bytes > 0.0 && received_bytes > 0.0, "CallLocal's message sizes: sent {sent_bytes} received {received_bytes}\n{text}");
    // Streams record no sizes, as daprd's stream client interceptor.
    assert_eq!(sample(&text, "dapr_grpc_io_client_sent_bytes_per_rpc_count", &[("grpc_client_method", "/dapr.proto.internals.v1.ServiceInvocation/CallLocalStream")]), None, "{text}");
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
    assert!(latencies("_bucket", &[("le", "1")]).is_some(), "daprd's buckets:\n{text}");
    assert!(!text.contains(secret_key), "a key became a label:\n{text}");
    // daprd's default is increased cardinality: the path is a label, its key never is.
    assert!(text.contains("path=\"/v1.0/state/store\""), "{text}");

    // The target counts what it received and its app calls.
    let tport = metrics_port(&target).await;
    let ttext = scrape(&target, tport).await;
    // The three HTTP invocations and the one InvokeService.
    assert_eq!(sample(&ttext, "dapr_runtime_service_invocation_req_recv_total", &[("src_app_id", "tel-caller")]), Some(4.0), "{ttext}");
    assert_eq!(sample(&ttext, "dapr_runtime_service_invocation_res_sent_total", &[("dst_app_id", "tel-caller"), ("status", "200")]), Some(4.0));
    assert_eq!(sample(&ttext, "dapr_http_client_completed_count", &[("method", "GET"), ("status", "200")]), Some(4.0), "{ttext}");
    // As daprd with increased cardinality (its default): the app's method path is the label.
    assert_eq!(sample(&ttext, "dapr_http_client_completed_count", &[("path", "/orders/123")]), Some(3.0), "{ttext}");
    // daprd's stream server interceptor records proxied streams only: CallLocalStream is in no
    // server view, the unary CallLocal is.
    let served = |m: &str| sample(&ttext, "dapr_grpc_io_server_completed_rpcs", &[("grpc_server_method", m)]);
    assert_eq!(served("/dapr.proto.internals.v1.ServiceInvocation/CallLocalStream"), None, "{ttext}");
    assert_eq!(served("/dapr.proto.internals.v1.ServiceInvocation/CallLocal"), Some(1.0), "{ttext}");
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
