//! Resiliency policies on service invocation (`targets.apps`): retries carry a flaky app to
//! success, a timeout ends a hanging call with daprd's error, and a circuit breaker (one per
//! app and method) fails fast; policies on calls to the sidecar's own app; daprd's built-in
//! service retries (only without a user policy, overridable by `DaprBuiltInServiceRetries`);
//! over HTTP invoke and over gRPC proxying (`dapr-app-id`), where `dapr-stream: true` limits the
//! policy to a stream's handshake and an unmarked stream may not be retried.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use futures::{Stream, StreamExt};
use rapr_proto::common::v1::{InvokeRequest, InvokeResponse, StreamPayload};
use rapr_proto::internals::v1 as internals;
use rapr_proto::internals::v1::service_invocation_client::ServiceInvocationClient;
use rapr_proto::internals::v1::service_invocation_server::{ServiceInvocation, ServiceInvocationServer};
use serde_json::Value;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::harness::{eventually, SidecarBuilder};
use crate::telemetry::{metrics_port, sample, scrape};

async fn flaky_app(calls: Arc<AtomicUsize>) -> u16 {
    async fn flaky(State(calls): State<Arc<AtomicUsize>>) -> (StatusCode, String) {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        if n % 3 < 2 {
            (StatusCode::SERVICE_UNAVAILABLE, format!("attempt {n} failed"))
        } else {
            (StatusCode::OK, format!("attempt {n} ok"))
        }
    }
    async fn slow() -> &'static str {
        tokio::time::sleep(Duration::from_secs(30)).await;
        "late"
    }
    async fn broken(State(calls): State<Arc<AtomicUsize>>) -> StatusCode {
        calls.fetch_add(1, Ordering::SeqCst);
        StatusCode::INTERNAL_SERVER_ERROR
    }
    let app = Router::new().route("/flaky", get(flaky)).route("/slow", get(slow)).route("/broken", get(broken)).route("/ok", get(|| async { "fine" })).with_state(calls);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    port
}

const RESILIENCY: &str = "apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: invoke-policies
spec:
  policies:
    timeouts:
      short: 500ms
    retries:
      three:
        policy: constant
        duration: 50ms
        maxRetries: 3
    circuitBreakers:
      cb:
        maxRequests: 1
        timeout: 1s
        trip: consecutiveFailures >= 2
  targets:
    apps:
      res-target:
        retry: three
        timeout: short
      res-cb:
        circuitBreaker: cb
";

#[tokio::test]
async fn policies_act_on_invocation() {
    let home = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let port = flaky_app(calls.clone()).await;
    let _target = SidecarBuilder::new("res-target").home(home.path()).args(&["--app-port", &port.to_string()]).start().await;
    let _cb = SidecarBuilder::new("res-cb").home(home.path()).args(&["--app-port", &port.to_string()]).start().await;
    let _plain = SidecarBuilder::new("res-plain").home(home.path()).args(&["--app-port", &port.to_string()]).start().await;
    let caller = SidecarBuilder::new("res-caller").home(home.path()).file("resiliency.yaml", RESILIENCY).start().await;

    // Retry: two 503s then success, all inside one call.
    let r = caller.client.get(caller.url("/v1.0/invoke/res-target/method/flaky")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "attempt 2 ok");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Without a policy the app's failure passes through as it is.
    let r = caller.client.get(caller.url("/v1.0/invoke/res-plain/method/flaky")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().await.unwrap(), "attempt 3 failed");

    // Timeout: the hanging app is abandoned with daprd's error.
    let r = caller.client.get(caller.url("/v1.0/invoke/res-target/method/slow")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["errorCode"], "ERR_DIRECT_INVOKE");
    assert_eq!(b["message"], "failed to invoke, id: res-target, err: context deadline exceeded");

    // Circuit breaker: two failures trip it; then calls fail fast without reaching the app.
    calls.store(0, Ordering::SeqCst);
    for _ in 0..2 {
        let r = caller.client.get(caller.url("/v1.0/invoke/res-cb/method/broken")).send().await.unwrap();
        assert_eq!(r.status(), 500, "the app's own failure passes through");
    }
    let r = caller.client.get(caller.url("/v1.0/invoke/res-cb/method/broken")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["message"], "failed to invoke, id: res-cb, err: circuit breaker is open");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "an open breaker never reaches the app");
    // After its timeout the breaker lets a probe through.
    let url = caller.url("/v1.0/invoke/res-cb/method/broken");
    eventually(Duration::from_secs(5), "a half-open probe", || async {
        caller.client.get(&url).send().await.ok()?;
        (calls.load(Ordering::SeqCst) == 3).then_some(())
    })
    .await;
}


#[tokio::test]
async fn each_method_has_its_own_breaker_and_own_app_calls_take_the_policy() {
    let home = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let port = flaky_app(calls.clone()).await;
    let _cb = SidecarBuilder::new("res-cb").home(home.path()).args(&["--app-port", &port.to_string()]).start().await;
    // The caller is also `res-target`, with the app: its own app's policy (retry: three) applies.
    let caller = SidecarBuilder::new("res-target").home(home.path()).args(&["--app-port", &port.to_string()]).file("resiliency.yaml", RESILIENCY).start().await;
    for _ in 0..2 {
        let r = caller.client.get(caller.url("/v1.0/invoke/res-cb/method/broken")).send().await.unwrap();
        assert_eq!(r.status(), 500);
    }
    let r = caller.client.get(caller.url("/v1.0/invoke/res-cb/method/broken")).send().await.unwrap();
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["message"], "failed to invoke, id: res-cb, err: circuit breaker is open");
    // Another method of the same app has its own, closed breaker.
    let r = caller.client.get(caller.url("/v1.0/invoke/res-cb/method/ok")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (200, "fine".to_string()), "one failing method does not trip the app");

    // A call to this sidecar's own app id runs under targets.apps.<own id>: retried to success.
    calls.store(0, Ordering::SeqCst);
    let r = caller.client.get(caller.url("/v1.0/invoke/res-target/method/flaky")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (200, "attempt 2 ok".to_string()));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// External services take their endpoint policy as daprd's `onDirectMessage`: an
/// `HTTPEndpoint` under `targets.apps.<name>` (retries carry a flaky service to success; its
/// breaker, keyed `<name>:<baseUrl>`, is one for every method), and no built-in retries.
#[tokio::test]
async fn policies_act_on_http_endpoints() {
    let calls = Arc::new(AtomicUsize::new(0));
    let port = flaky_app(calls.clone()).await;
    let endpoint = |name: &str| format!("apiVersion: dapr.io/v1alpha1\nkind: HTTPEndpoint\nmetadata:\n  name: {name}\nspec:\n  baseUrl: http://127.0.0.1:{port}\n");
    let resiliency = "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: ext\nspec:\n  policies:\n    retries:\n      three:\n        policy: constant\n        duration: 20ms\n        maxRetries: 3\n    circuitBreakers:\n      cb:\n        maxRequests: 1\n        timeout: 30s\n        trip: consecutiveFailures >= 2\n  targets:\n    apps:\n      ext-flaky:\n        retry: three\n      ext-cb:\n        circuitBreaker: cb\n";
    let sc = SidecarBuilder::new("res-ext")
        .file("flaky.yaml", &endpoint("ext-flaky"))
        .file("cb.yaml", &endpoint("ext-cb"))
        .file("plain.yaml", &endpoint("ext-plain"))
        .file("resiliency.yaml", resiliency)
        .start()
        .await;
    // Two failures, then success: the policy's retries reach it.
    let r = sc.client.get(sc.url("/v1.0/invoke/ext-flaky/method/flaky")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // No policy: one attempt, the service's answer passed through.
    let r = sc.client.get(sc.url("/v1.0/invoke/ext-plain/method/flaky")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(calls.load(Ordering::SeqCst), 4, "no built-in retries for an external service");
    // The breaker trips after two failures and then refuses every method of the endpoint.
    for _ in 0..2 {
        let r = sc.client.get(sc.url("/v1.0/invoke/ext-cb/method/broken")).send().await.unwrap();
        assert_eq!(r.status(), 500);
    }
    let before = calls.load(Ordering::SeqCst);
    let r = sc.client.get(sc.url("/v1.0/invoke/ext-cb/method/ok")).send().await.unwrap();
    assert_eq!(r.status(), 500, "open breaker");
    let body: Value = r.json().await.unwrap();
    assert!(body["message"].as_str().unwrap_or_default().contains("circuit breaker is open"), "{body}");
    assert_eq!(calls.load(Ordering::SeqCst), before, "the open breaker sent nothing");
}

/// A sidecar that answers every call UNAVAILABLE, counting them; its address is registered for
/// `app_id` in the name resolution table.
#[derive(Clone)]
struct Refusing(Arc<AtomicUsize>);

#[tonic::async_trait]
impl ServiceInvocation for Refusing {
    async fn call_local(&self, _: Request<internals::InternalInvokeRequest>) -> Result<Response<internals::InternalInvokeResponse>, Status> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(Status::unavailable("target is down"))
    }

    type CallLocalStreamStream = Frames;

    async fn call_local_stream(&self, _: Request<Streaming<internals::InternalInvokeRequestStream>>) -> Result<Response<Frames>, Status> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(Status::unavailable("target is down"))
    }
}

async fn refusing_sidecar(home: &std::path::Path, app_id: &str) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let routes = tonic::service::Routes::new(ServiceInvocationServer::new(Refusing(count.clone())));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(l, routes.into_axum_router()).await.unwrap() });
    let db = rusqlite::Connection::open(home.join("nameresolution.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute_batch("CREATE TABLE IF NOT EXISTS hosts (registration_id TEXT PRIMARY KEY, address TEXT NOT NULL, app_id TEXT NOT NULL, namespace TEXT NOT NULL, last_update INTEGER NOT NULL)").unwrap();
    db.execute("INSERT OR REPLACE INTO hosts VALUES (?1, ?2, ?1, '', unixepoch('now') + 3600)", rusqlite::params![app_id, addr]).unwrap();
    count
}

const BUILT_IN: &str = "apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: builtin
spec:
  policies:
    retries:
      once:
        policy: constant
        duration: 10ms
        maxRetries: 1
  targets:
    apps:
      ghost-targeted:
        retry: once
      ghost-unknown:
        retry: nosuch
";

const BUILT_IN_OVERRIDE: &str = "apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: builtin-override
spec:
  policies:
    retries:
      DaprBuiltInServiceRetries:
        policy: constant
        duration: 50ms
        maxRetries: 5
";

#[tokio::test]
async fn built_in_service_retries_only_without_a_user_policy() {
    let home = tempfile::tempdir().unwrap();
    let plain = refusing_sidecar(home.path(), "ghost-plain").await;
    let targeted = refusing_sidecar(home.path(), "ghost-targeted").await;
    let unknown = refusing_sidecar(home.path(), "ghost-unknown").await;
    let caller = SidecarBuilder::new("res-builtin").home(home.path()).file("resiliency.yaml", BUILT_IN).start().await;

    // No policy: daprd's built-in retries, 3 of them, then its message.
    let r = caller.client.post(caller.url("/v1.0/invoke/ghost-plain/method/m")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 500);
    let b: Value = r.json().await.unwrap();
    let msg = b["message"].as_str().unwrap_or_default();
    assert!(msg.starts_with("failed to invoke, id: ghost-plain, err: failed to invoke target ghost-plain after 3 retries. Error: "), "{msg}");
    assert!(msg.ends_with("target is down"), "{msg}");
    assert_eq!(plain.load(Ordering::SeqCst), 4, "one attempt and three built-in retries");

    // A user policy replaces them: its one retry, no hidden connection retries underneath.
    let r = caller.client.post(caller.url("/v1.0/invoke/ghost-targeted/method/m")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(targeted.load(Ordering::SeqCst), 2, "the policy's attempt and its one retry, nothing stacked");

    // A target naming an unknown policy has no retry at all (and no built-in ones either).
    let r = caller.client.post(caller.url("/v1.0/invoke/ghost-unknown/method/m")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(unknown.load(Ordering::SeqCst), 1);

    // gRPC InvokeService takes the built-in retries too.
    let before = plain.load(Ordering::SeqCst);
    let mut dapr = caller.grpc().await;
    let req = rapr_proto::runtime::v1::InvokeServiceRequest { id: "ghost-plain".into(), message: Some(InvokeRequest { method: "m".into(), ..Default::default() }) };
    #[allow(deprecated)]
    let status = dapr.invoke_service(req).await.unwrap_err();
    assert!(status.message().contains("after 3 retries"), "{status:?}");
    assert_eq!(plain.load(Ordering::SeqCst) - before, 4);
}

#[tokio::test]
async fn dapr_built_in_service_retries_can_be_redefined() {
    let home = tempfile::tempdir().unwrap();
    let ghost = refusing_sidecar(home.path(), "ghost-over").await;
    let caller = SidecarBuilder::new("res-builtin-over").home(home.path()).file("resiliency.yaml", BUILT_IN_OVERRIDE).start().await;
    let r = caller.client.get(caller.url("/v1.0/invoke/ghost-over/method/m")).send().await.unwrap();
    let b: Value = r.json().await.unwrap();
    assert!(b["message"].as_str().unwrap_or_default().contains("after 5 retries"), "{b}");
    assert_eq!(ghost.load(Ordering::SeqCst), 6, "the redefined policy: five retries");
}

/// A stand-in sidecar that answers every call OK (`moved`), counting them.
#[derive(Clone)]
struct Accepting(Arc<AtomicUsize>);

#[tonic::async_trait]
impl ServiceInvocation for Accepting {
    async fn call_local(&self, _: Request<internals::InternalInvokeRequest>) -> Result<Response<internals::InternalInvokeResponse>, Status> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let data = Some(prost_types::Any { type_url: String::new(), value: b"moved".to_vec() });
        let status = Some(internals::Status { code: 200, ..Default::default() });
        Ok(Response::new(internals::InternalInvokeResponse { status, message: Some(InvokeResponse { data, content_type: "text/plain".into() }), ..Default::default() }))
    }

    type CallLocalStreamStream = Frames;

    async fn call_local_stream(&self, _: Request<Streaming<internals::InternalInvokeRequestStream>>) -> Result<Response<Frames>, Status> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let status = Some(internals::Status { code: 200, ..Default::default() });
        let lead = internals::InternalInvokeResponse { status, message: Some(InvokeResponse { data: None, content_type: "text/plain".into() }), ..Default::default() };
        let frame = internals::InternalInvokeResponseStream { response: Some(lead), payload: Some(StreamPayload { data: b"moved".to_vec(), seq: 0 }) };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(frame)]))))
    }
}

/// The built-in retries resolve the app id again on each attempt: a target that comes back on
/// another address between two attempts is reached by the next one. (daprd keeps the address
/// for the whole call, so all four attempts would hit the dead one: a deliberate difference,
/// docs/runtime-semantics.md "Resiliency".) The fault hits: the first attempt reaches the old
/// address and fails there.
#[tokio::test]
async fn built_in_retries_find_a_target_that_moved() {
    let home = tempfile::tempdir().unwrap();
    let old = refusing_sidecar(home.path(), "mover").await;
    let new = Arc::new(AtomicUsize::new(0));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let new_addr = l.local_addr().unwrap().to_string();
    let routes = tonic::service::Routes::new(ServiceInvocationServer::new(Accepting(new.clone())));
    tokio::spawn(async move { axum::serve(l, routes.into_axum_router()).await.unwrap() });
    // Once the old address has refused a call, the app registers again on its new address.
    let (db_path, seen) = (home.path().join("nameresolution.db"), old.clone());
    let mover = tokio::spawn(async move {
        while seen.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let db = rusqlite::Connection::open(db_path).unwrap();
        db.busy_timeout(Duration::from_secs(5)).unwrap();
        db.execute("UPDATE hosts SET address = ?1 WHERE app_id = 'mover'", rusqlite::params![new_addr]).unwrap();
    });
    let caller = SidecarBuilder::new("res-mover").home(home.path()).start().await;
    let r = caller.client.post(caller.url("/v1.0/invoke/mover/method/m")).body("x").send().await.unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    mover.await.unwrap();
    assert_eq!(old.load(Ordering::SeqCst), 1, "the first attempt hit the old address, and only the first");
    assert_eq!((status.as_u16(), body.as_str()), (200, "moved"), "a retry reached the new address");
    assert_eq!(new.load(Ordering::SeqCst), 1);
}

/// A gRPC app (any service serves: `ServiceInvocation` is reused as an arbitrary one). Unary
/// `CallLocal` by method: `flaky` fails UNAVAILABLE twice out of three, `slow` takes 5 s,
/// `broken` is always INTERNAL; `CallLocalStream` echoes each message, after `x-delay-ms`.
#[derive(Clone)]
struct GrpcApp(Arc<AtomicUsize>);

type Frames = Pin<Box<dyn Stream<Item = Result<internals::InternalInvokeResponseStream, Status>> + Send>>;

#[tonic::async_trait]
impl ServiceInvocation for GrpcApp {
    async fn call_local(&self, r: Request<internals::InternalInvokeRequest>) -> Result<Response<internals::InternalInvokeResponse>, Status> {
        let method = r.into_inner().message.unwrap_or_default().method;
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        match method.as_str() {
            "flaky" if n % 3 < 2 => return Err(Status::unavailable(format!("attempt {n} failed"))),
            "slow" => tokio::time::sleep(Duration::from_secs(5)).await,
            "broken" => return Err(Status::internal("broken")),
            _ => {}
        }
        let data = Some(prost_types::Any { type_url: String::new(), value: format!("attempt {n} ok").into_bytes() });
        Ok(Response::new(internals::InternalInvokeResponse { message: Some(InvokeResponse { data, content_type: "text/plain".into() }), ..Default::default() }))
    }

    type CallLocalStreamStream = Frames;

    async fn call_local_stream(&self, r: Request<Streaming<internals::InternalInvokeRequestStream>>) -> Result<Response<Frames>, Status> {
        let delay = r.metadata().get("x-delay-ms").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
        let answers = r.into_inner().then(move |m| async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let data = m?.payload.map(|p| p.data.to_ascii_uppercase()).unwrap_or_default();
            Ok(internals::InternalInvokeResponseStream { response: None, payload: Some(StreamPayload { data, seq: 0 }) })
        });
        Ok(Response::new(Box::pin(answers)))
    }
}

async fn grpc_app(calls: Arc<AtomicUsize>) -> u16 {
    let routes = tonic::service::Routes::new(ServiceInvocationServer::new(GrpcApp(calls)));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, routes.into_axum_router()).await.unwrap() });
    port
}

const PROXY_RESILIENCY: &str = "apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: proxy-policies
spec:
  policies:
    timeouts:
      short: 500ms
    retries:
      unavailable:
        policy: constant
        duration: 50ms
        maxRetries: 3
        matching:
          gRPCStatusCodes: \"14\"
    circuitBreakers:
      cb:
        maxRequests: 1
        timeout: 1s
        trip: consecutiveFailures >= 2
  targets:
    apps:
      pr-target:
        retry: unavailable
        timeout: short
      pr-cb:
        circuitBreaker: cb
";

/// A unary proxied call of `method` to `app`.
async fn call(svc: &mut ServiceInvocationClient<tonic::transport::Channel>, app: &str, method: &str) -> Result<String, Status> {
    let msg = internals::InternalInvokeRequest { message: Some(InvokeRequest { method: method.into(), ..Default::default() }), ..Default::default() };
    let mut req = Request::new(msg);
    req.metadata_mut().insert("dapr-app-id", app.parse().unwrap());
    let resp = svc.call_local(req).await?.into_inner();
    Ok(String::from_utf8(resp.message.unwrap().data.unwrap().value).unwrap())
}

fn chunk(data: &str) -> internals::InternalInvokeRequestStream {
    internals::InternalInvokeRequestStream { request: None, payload: Some(StreamPayload { data: data.as_bytes().to_vec(), seq: 0 }) }
}

#[tokio::test]
async fn policies_act_on_proxied_grpc_calls() {
    let home = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let port = grpc_app(calls.clone()).await;
    let app_args = ["--app-port", &port.to_string(), "--app-protocol", "grpc"];
    let _target = SidecarBuilder::new("pr-target").home(home.path()).args(&app_args).start().await;
    let _cb = SidecarBuilder::new("pr-cb").home(home.path()).args(&app_args).start().await;
    let caller = SidecarBuilder::new("pr-caller").home(home.path()).file("resiliency.yaml", PROXY_RESILIENCY).start().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", caller.grpc)).unwrap().connect().await.unwrap();
    let mut svc = ServiceInvocationClient::new(channel);

    // Retry: two UNAVAILABLE answers, then success, all inside one call; each attempt counts.
    assert_eq!(call(&mut svc, "pr-target", "flaky").await.unwrap(), "attempt 2 ok");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let text = scrape(&caller, metrics_port(&caller).await).await;
    let sent = sample(&text, "dapr_runtime_service_invocation_req_sent_total", &[("dst_app_id", "pr-target"), ("type", "unary")]);
    let recv = |status: &str| sample(&text, "dapr_runtime_service_invocation_res_recv_total", &[("src_app_id", "pr-target"), ("status", status), ("type", "unary")]);
    assert_eq!((sent, recv("14"), recv("0")), (Some(3.0), Some(2.0), Some(1.0)), "{text}");

    // A code the retry's matching leaves out is not retried; the app's status passes through.
    calls.store(0, Ordering::SeqCst);
    let st = call(&mut svc, "pr-target", "broken").await.unwrap_err();
    assert_eq!((st.code(), st.message(), calls.load(Ordering::SeqCst)), (Code::Internal, "broken", 1));

    // Timeout: every attempt is cut at 500 ms and retried; the call ends DEADLINE_EXCEEDED.
    calls.store(0, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let st = call(&mut svc, "pr-target", "slow").await.unwrap_err();
    assert_eq!((st.code(), st.message()), (Code::DeadlineExceeded, "context deadline exceeded"));
    assert_eq!(calls.load(Ordering::SeqCst), 4, "one attempt and three retries");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());

    // Circuit breaker: two failures trip it; then calls fail fast without reaching the app,
    // with gobreaker's error as grpc-go reports a plain error (UNKNOWN).
    calls.store(0, Ordering::SeqCst);
    for _ in 0..2 {
        let st = call(&mut svc, "pr-cb", "broken").await.unwrap_err();
        assert_eq!(st.code(), Code::Internal, "the app's own failure passes through");
    }
    let st = call(&mut svc, "pr-cb", "broken").await.unwrap_err();
    assert_eq!((st.code(), st.message()), (Code::Unknown, "circuit breaker is open"));
    assert_eq!(calls.load(Ordering::SeqCst), 2, "an open breaker never reaches the app");
    eventually(Duration::from_secs(5), "a half-open probe", || async {
        let mut svc = svc.clone();
        let _ = call(&mut svc, "pr-cb", "ok").await;
        (calls.load(Ordering::SeqCst) == 3).then_some(())
    })
    .await;

    // Streams: with retries, a call not marked `dapr-stream` may carry one message only.
    let mut req = Request::new(futures::stream::iter([chunk("a"), chunk("b")]));
    req.metadata_mut().insert("dapr-app-id", "pr-target".parse().unwrap());
    let st = svc.call_local_stream(req).await.unwrap_err();
    assert_eq!((st.code(), st.message()), (Code::FailedPrecondition, "cannot use resiliency policies with retries on streaming RPCs"));
    // Marked, the policy covers the handshake only: answers slower than the timeout still flow.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut req = Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut().insert("dapr-app-id", "pr-target".parse().unwrap());
    req.metadata_mut().insert("dapr-stream", "true".parse().unwrap());
    req.metadata_mut().insert("x-delay-ms", "700".parse().unwrap());
    let mut answers = svc.call_local_stream(req).await.unwrap().into_inner();
    for word in ["alpha", "beta"] {
        tx.send(chunk(word)).await.unwrap();
        let got = answers.message().await.unwrap().expect("an answer per message");
        assert_eq!(got.payload.unwrap().data, word.to_uppercase().into_bytes());
    }
    drop(tx);
    assert!(answers.message().await.unwrap().is_none());
    let text = scrape(&caller, metrics_port(&caller).await).await;
    assert_eq!(sample(&text, "dapr_runtime_service_invocation_req_sent_total", &[("dst_app_id", "pr-target"), ("type", "streaming")]), Some(1.0), "{text}");
}
