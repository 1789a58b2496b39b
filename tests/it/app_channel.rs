//! The app channel: app health checks gating invocations (HTTP and gRPC apps), `/v1.0/healthz`
//! waiting for the app's port, `APP_API_TOKEN` reaching the app, `--app-max-concurrency` queueing,
//! and the health settings in `/v1.0/metadata`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::harness::{eventually, free_port, Sidecar, SidecarBuilder};

const HEALTH_FLAGS: [&str; 8] =
    ["--enable-app-health-check", "--app-health-probe-interval", "1", "--app-health-probe-timeout", "500", "--app-health-threshold", "1", "--app-health-check-path"];

async fn serve(app: Router, port: Option<u16>) -> u16 {
    let l = tokio::net::TcpListener::bind(("127.0.0.1", port.unwrap_or(0))).await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    port
}

/// An app whose `/healthz` answers 204 or 503 as `healthy` says; anything else echoes its headers.
async fn switchable_app(healthy: Arc<AtomicBool>) -> u16 {
    async fn health(State(h): State<Arc<AtomicBool>>) -> StatusCode {
        if h.load(Ordering::SeqCst) {
            StatusCode::NO_CONTENT
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
    async fn echo(req: Request) -> impl IntoResponse {
        let headers: serde_json::Map<String, Value> =
            req.headers().iter().map(|(k, v)| (k.as_str().to_string(), Value::String(v.to_str().unwrap_or("").into()))).collect();
        axum::Json(json!({ "path": req.uri().path(), "headers": headers }))
    }
    serve(Router::new().route("/healthz", get(health)).fallback(any(echo)).with_state(healthy), None).await
}

async fn invoke(sc: &Sidecar, target: &str) -> (u16, Value) {
    let r = sc.client.post(sc.url(&format!("/v1.0/invoke/{target}/method/work"))).body("x").send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn healthz(sc: &Sidecar) -> (u16, Value) {
    let r = sc.client.get(sc.url("/v1.0/healthz")).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits until invoking `target` from `sc` answers `want` (200, or the unhealthy error).
async fn until_invoke(sc: &Sidecar, target: &str, healthy: bool) -> Value {
    let what = if healthy { "invocations to succeed" } else { "invocations to fail as unhealthy" };
    eventually(Duration::from_secs(15), what, || async {
        let (status, body) = invoke(sc, target).await;
        let ok = if healthy { status == 200 } else { status == 500 };
        ok.then_some(body)
    })
    .await
}

fn assert_unhealthy_error(body: &Value, target: &str) {
    assert_eq!(body["errorCode"], "ERR_DIRECT_INVOKE", "{body}");
    assert_eq!(body["message"], format!("failed to invoke, id: {target}, err: app is not in a healthy state"), "{body}");
}

#[tokio::test]
async fn unhealthy_app_fails_invocations_until_it_recovers() {
    let home = tempfile::tempdir().unwrap();
    let healthy = Arc::new(AtomicBool::new(false));
    let port = switchable_app(Arc::clone(&healthy)).await;
    let target = SidecarBuilder::new("ach-target")
        .home(home.path())
        .args(&["--app-port", &port.to_string()])
        .args(&HEALTH_FLAGS)
        .args(&["/healthz"])
        .allow_unhealthy()
        .start()
        .await;
    let caller = SidecarBuilder::new("ach-caller").home(home.path()).start().await;

    // Unhealthy from the start (daprd's initial state): not ready, and calls are refused.
    let (status, body) = healthz(&target).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["errorCode"], "ERR_HEALTH_NOT_READY");
    let (status, body) = invoke(&target, "ach-target").await;
    assert_eq!(status, 500);
    assert_unhealthy_error(&body, "ach-target");

    healthy.store(true, Ordering::SeqCst);
    until_invoke(&target, "ach-target", true).await;
    assert_eq!(healthz(&target).await.0, 204, "healthy once: ready");
    assert_eq!(until_invoke(&caller, "ach-target", true).await["path"], "/work", "through another sidecar too");

    healthy.store(false, Ordering::SeqCst);
    let body = until_invoke(&target, "ach-target", false).await;
    assert_unhealthy_error(&body, "ach-target");
    let body = until_invoke(&caller, "ach-target", false).await;
    assert_unhealthy_error(&body, "ach-target");

    healthy.store(true, Ordering::SeqCst);
    until_invoke(&caller, "ach-target", true).await;
    until_invoke(&target, "ach-target", true).await;

    let m: Value = target.client.get(target.url("/v1.0/metadata")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        m["appConnectionProperties"]["health"],
        json!({ "healthCheckPath": "/healthz", "healthProbeInterval": "1s", "healthProbeTimeout": "500ms", "healthThreshold": 1 }),
        "{m}"
    );
    assert_eq!(m["appConnectionProperties"]["port"], port);
}

#[tokio::test]
async fn healthz_waits_for_the_app_port() {
    let port = free_port();
    let sc = SidecarBuilder::new("ach-port").args(&["--app-port", &port.to_string()]).allow_unhealthy().start().await;
    let (status, body) = healthz(&sc).await;
    assert_eq!(status, 500, "no app listening yet: {body}");
    assert_eq!(body["errorCode"], "ERR_HEALTH_NOT_READY");
    // daprd's plain APIError: code and message listing the targets, no ErrorInfo details.
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.starts_with("dapr is not ready: [") && message.contains("app"), "{message}");
    // Not ready wins over a foreign appid (daprd checks readiness first).
    let r = sc.client.get(sc.url("/v1.0/healthz?appid=someone-else")).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["errorCode"], "ERR_HEALTH_NOT_READY");
    // Without health checks there is no health section.
    let m: Value = sc.client.get(sc.url("/v1.0/metadata")).send().await.unwrap().json().await.unwrap();
    assert!(m["appConnectionProperties"].get("health").is_none(), "{m}");

    switchable_app_on(port).await;
    eventually(Duration::from_secs(10), "healthz to turn 204 once the app listens", || async { (healthz(&sc).await.0 == 204).then_some(()) }).await;
    assert_eq!(invoke(&sc, "ach-port").await.0, 200);
    let r = sc.client.get(sc.url("/v1.0/healthz?appid=someone-else")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({ "errorCode": "ERR_HEALTH_APPID_NOT_MATCH", "message": "dapr app-id does not match" }));
    assert_eq!(sc.client.get(sc.url("/v1.0/healthz?appid=ach-port")).send().await.unwrap().status(), 204);
}

#[tokio::test]
async fn metadata_leaves_out_what_daprd_leaves_out() {
    let sc = SidecarBuilder::new("ach-meta").start().await;
    let m: Value = sc.client.get(sc.url("/v1.0/metadata")).send().await.unwrap().json().await.unwrap();
    for key in ["actors", "components", "httpEndpoints"] {
        assert!(m.get(key).is_none(), "daprd omits an empty {key}: {m}");
    }
    // Never empty in daprd v1.18: its default-on features are listed without a Configuration.
    assert_eq!(m["enabledFeatures"], serde_json::json!(["HotReload", "WorkflowsRemoteActivityReminder"]), "{m}");
    let app = &m["appConnectionProperties"];
    assert_eq!(app["protocol"], "http", "reported without an app port too: {m}");
    assert!(app.get("port").is_none(), "{m}");
    let mut grpc = sc.grpc().await;
    let g = grpc.get_metadata(rapr_proto::runtime::v1::GetMetadataRequest::default()).await.unwrap().into_inner();
    assert_eq!(g.app_connection_properties.unwrap().protocol, "http");
}

async fn switchable_app_on(port: u16) {
    serve(Router::new().fallback(any(|| async { axum::Json(json!({ "ok": true })) })), Some(port)).await;
}

#[tokio::test]
async fn app_api_token_reaches_the_app() {
    let port = switchable_app(Arc::new(AtomicBool::new(true))).await;
    let sc = SidecarBuilder::new("ach-token").args(&["--app-port", &port.to_string()]).env("APP_API_TOKEN", "app-secret").start().await;
    let r = sc.client.get(sc.url("/v1.0/invoke/ach-token/method/t")).header("dapr-api-token", "from-caller").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["headers"]["dapr-api-token"], "app-secret", "the sidecar sets APP_API_TOKEN over the caller's: {seen}");
}

/// A slow app that reports when each call starts and ends.
async fn recording_app(events: mpsc::UnboundedSender<String>) -> u16 {
    async fn slow(State(tx): State<mpsc::UnboundedSender<String>>, req: Request) -> StatusCode {
        let id = req.uri().path().trim_start_matches('/').to_string();
        let _ = tx.send(format!("start {id}"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = tx.send(format!("end {id}"));
        StatusCode::OK
    }
    serve(Router::new().fallback(any(slow)).with_state(events), None).await
}

async fn two_concurrent_calls(extra: &[&str]) -> Vec<String> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let port = recording_app(tx).await;
    let sc = SidecarBuilder::new("ach-conc").args(&["--app-port", &port.to_string()]).args(extra).start().await;
    let (a, b) = tokio::join!(
        sc.client.get(sc.url("/v1.0/invoke/ach-conc/method/a")).send(),
        sc.client.get(sc.url("/v1.0/invoke/ach-conc/method/b")).send()
    );
    assert_eq!((a.unwrap().status().as_u16(), b.unwrap().status().as_u16()), (200, 200));
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    events
}

#[tokio::test]
async fn max_concurrency_one_runs_calls_one_after_the_other() {
    let queued = two_concurrent_calls(&["--app-max-concurrency", "1"]).await;
    assert_eq!(queued.len(), 4, "{queued:?}");
    let first = queued[0].trim_start_matches("start ").to_string();
    let second = if first == "a" { "b" } else { "a" };
    assert_eq!(queued, [format!("start {first}"), format!("end {first}"), format!("start {second}"), format!("end {second}")]);
    // Without a limit the same two calls overlap, so the ordering above is the limit's doing.
    let free = two_concurrent_calls(&[]).await;
    assert!(free[0].starts_with("start") && free[1].starts_with("start"), "{free:?}");
}

mod grpc_app {
    use super::*;
    use rapr_proto::app::app_callback_health_check_server::{AppCallbackHealthCheck, AppCallbackHealthCheckServer};
    use rapr_proto::app::app_callback_server::{AppCallback, AppCallbackServer};
    use rapr_proto::app::HealthCheckResponse;
    use rapr_proto::common::v1::{InvokeRequest, InvokeResponse};

    #[derive(Clone)]
    struct App(Arc<AtomicBool>);

    #[tonic::async_trait]
    impl AppCallback for App {
        no_topic_callbacks!();
        async fn on_invoke(&self, r: tonic::Request<InvokeRequest>) -> Result<tonic::Response<InvokeResponse>, tonic::Status> {
            let data = format!("grpc:{}", r.into_inner().method).into_bytes();
            Ok(tonic::Response::new(InvokeResponse { data: Some(prost_types::Any { type_url: String::new(), value: data }), content_type: "text/plain".into() }))
        }
    }

    #[tonic::async_trait]
    impl AppCallbackHealthCheck for App {
        async fn health_check(&self, _r: tonic::Request<()>) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
            if self.0.load(Ordering::SeqCst) {
                Ok(tonic::Response::new(HealthCheckResponse {}))
            } else {
                Err(tonic::Status::unavailable("not now"))
            }
        }
    }

    #[tokio::test]
    async fn grpc_app_health_check_gates_invocations() {
        let healthy = Arc::new(AtomicBool::new(true));
        let app = App(Arc::clone(&healthy));
        let router = tonic::service::Routes::new(AppCallbackServer::new(app.clone())).add_service(AppCallbackHealthCheckServer::new(app)).into_axum_router();
        let port = serve(router, None).await;
        let sc = SidecarBuilder::new("ach-grpc")
            .args(&["--app-port", &port.to_string(), "--app-protocol", "grpc"])
            .args(&HEALTH_FLAGS[..7])
            .start()
            .await;
        let r = sc.client.post(sc.url("/v1.0/invoke/ach-grpc/method/hello")).body("x").send().await.unwrap();
        let (status, text) = (r.status(), r.text().await.unwrap());
        assert_eq!((status.as_u16(), text.as_str()), (200, "grpc:hello"));
        healthy.store(false, Ordering::SeqCst);
        let r = eventually(Duration::from_secs(15), "the gRPC app to turn unhealthy", || async {
            let r = sc.client.post(sc.url("/v1.0/invoke/ach-grpc/method/hello")).body("x").send().await.ok()?;
            (r.status() == 500).then_some(r)
        })
        .await;
        assert_unhealthy_error(&r.json().await.unwrap(), "ach-grpc");
        healthy.store(true, Ordering::SeqCst);
        eventually(Duration::from_secs(15), "the gRPC app to recover", || async {
            let r = sc.client.post(sc.url("/v1.0/invoke/ach-grpc/method/hello")).body("x").send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
        let m: Value = sc.client.get(sc.url("/v1.0/metadata")).send().await.unwrap().json().await.unwrap();
        assert_eq!(m["appConnectionProperties"]["health"], json!({ "healthProbeInterval": "1s", "healthProbeTimeout": "500ms", "healthThreshold": 1 }), "{m}");
    }
}
