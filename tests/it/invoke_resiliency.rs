//! Resiliency policies on service invocation (`targets.apps`): retries carry a flaky app to
//! success, a timeout ends a hanging call with daprd's error, and a circuit breaker fails fast.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde_json::Value;

use crate::harness::{eventually, SidecarBuilder};

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
    let app = Router::new().route("/flaky", get(flaky)).route("/slow", get(slow)).route("/broken", get(broken)).with_state(calls);
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
