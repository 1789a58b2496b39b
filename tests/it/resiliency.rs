//! Resiliency policies on state store calls, through the real runtime and HTTP API (in-process
//! sidecar with test-only stores that fail, stall or recover on command): retries to success,
//! per-attempt timeouts, and a circuit breaker that opens, fails fast and closes after a
//! half-open probe. Also: a bad Resiliency resource is reported, never fatal; secret store
//! calls take their outbound policy; a policy timeout longer than `--component-call-timeout`
//! is never cut by it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rapr::cli::default_sidecar_args;
use rapr::components::registry::Registry;
use rapr::components::secretstores::{Metadata, Secret, SecretError, SecretStore};
use rapr::components::state::{DeleteRequest, Feature, GetRequest, SetRequest, StateStore, StoreError, StoredItem};
use rapr::sidecar::Sidecar;
use serde_json::Value;

use crate::harness::{eventually, free_port};

/// What a test store does, shared between the test and the store instance.
#[derive(Default)]
struct Control {
    /// Calls received (get, set, delete).
    calls: AtomicU32,
    /// Fail this many more calls.
    fail_next: AtomicU32,
    /// Fail every call while set.
    failing: AtomicBool,
    /// Never answer while set.
    stalled: AtomicBool,
    /// Answer each call after this many milliseconds.
    delay_ms: AtomicU64,
}

/// Controls by id: the registry takes plain `fn` factories, so a store finds its control through
/// the `control` metadata item of its component.
static CONTROLS: LazyLock<dashmap::DashMap<String, Arc<Control>>> = LazyLock::new(Default::default);

struct Scripted(Arc<Control>);

impl Scripted {
    async fn step(&self) -> Result<(), StoreError> {
        let c = &self.0;
        c.calls.fetch_add(1, Ordering::SeqCst);
        if c.stalled.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let delay = c.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let scripted = c.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if scripted || c.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("backend unreachable".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl StateStore for Scripted {
    fn features(&self) -> &'static [Feature] {
        &[Feature::ETag]
    }
    async fn get(&self, _: GetRequest) -> Result<Option<StoredItem>, StoreError> {
        self.step().await?;
        Ok(Some(StoredItem { data: "\"ok\"".into(), etag: Some("1".into()), ..Default::default() }))
    }
    async fn set(&self, _: SetRequest) -> Result<(), StoreError> {
        self.step().await
    }
    async fn delete(&self, _: DeleteRequest) -> Result<(), StoreError> {
        self.step().await
    }
}

#[async_trait]
impl SecretStore for Scripted {
    fn features(&self) -> &'static [&'static str] {
        &[]
    }
    async fn get(&self, name: &str, _: &Metadata) -> Result<Secret, SecretError> {
        self.step().await.map_err(|e| SecretError::Backend(e.to_string()))?;
        Ok(BTreeMap::from([(name.to_string(), "s3cret".to_string())]))
    }
    async fn bulk_get(&self, _: &Metadata) -> Result<BTreeMap<String, Secret>, SecretError> {
        self.step().await.map_err(|e| SecretError::Backend(e.to_string()))?;
        Ok(BTreeMap::new())
    }
}

const RESILIENCY: &str = r#"apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: statepolicies
spec:
  policies:
    timeouts:
      short: 300ms
    retries:
      quick:
        policy: constant
        duration: 20ms
        maxRetries: 5
    circuitBreakers:
      twoStrikes:
        maxRequests: 1
        timeout: 1s
        trip: consecutiveFailures >= 2
  targets:
    components:
      flaky:
        outbound:
          retry: quick
      stalled:
        outbound:
          timeout: short
      breaker:
        outbound:
          circuitBreaker: twoStrikes
"#;

struct Fixture {
    sc: Option<Sidecar>,
    base: String,
    http: reqwest::Client,
    stores: Vec<(&'static str, Arc<Control>)>,
    /// The resources folder: kept, as hot reload would close the components of a removed one.
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// A sidecar with one scripted store per name and the resources given.
    async fn start(app_id: &str, names: &[&'static str], extra: &[(&str, &str)]) -> Self {
        Self::start_with(app_id, names, extra, |_| {}).await
    }

    /// `start`, with the flags adjusted. A name starting `secret` is a secret store.
    async fn start_with(app_id: &str, names: &[&'static str], extra: &[(&str, &str)], adjust: impl FnOnce(&mut rapr::config::flags::SidecarArgs)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::default();
        reg.add_state(&["state.scripted"], "v1", |_, mut md| {
            let control = md.string(&["control"]).and_then(|id| CONTROLS.get(&id).map(|c| Arc::clone(c.value())));
            Box::pin(async move { Ok(Arc::new(Scripted(control.expect("a registered control"))) as Arc<dyn StateStore>) })
        });
        reg.add_secret(&["secretstores.scripted"], "v1", |_, mut md| {
            let control = md.string(&["control"]).and_then(|id| CONTROLS.get(&id).map(|c| Arc::clone(c.value())));
            Ok(Arc::new(Scripted(control.expect("a registered control"))) as Arc<dyn SecretStore>)
        });
        let mut stores = Vec::new();
        for name in names {
            let control = Arc::new(Control::default());
            let id = format!("{app_id}-{name}");
            CONTROLS.insert(id.clone(), Arc::clone(&control));
            std::fs::write(
                dir.path().join(format!("{name}.yaml")),
                format!(
                    "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {}\n  version: v1\n  metadata:\n  - name: control\n    value: {id}\n",
                    if name.starts_with("secret") { "secretstores.scripted" } else { "state.scripted" }
                ),
            )
            .unwrap();
            stores.push((*name, control));
        }
        for (file, text) in extra {
            std::fs::write(dir.path().join(file), text).unwrap();
        }
        let mut flags = default_sidecar_args();
        flags.app_id = app_id.into();
        flags.dapr_http_port = free_port();
        flags.dapr_grpc_port = free_port();
        flags.dapr_listen_addresses = "127.0.0.1".into();
        flags.resources_path = vec![dir.path().to_path_buf()];
        adjust(&mut flags);
        let sc = Sidecar::start_with_registry(flags.clone(), None, Arc::new(reg)).await.unwrap();
        Self { sc: Some(sc), base: format!("http://127.0.0.1:{}", flags.dapr_http_port), http: reqwest::Client::new(), stores, _dir: dir }
    }

    fn store(&self, name: &str) -> &Control {
        &self.stores.iter().find(|(n, _)| *n == name).expect("a scripted store").1
    }

    async fn get(&self, store: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}/v1.0/state/{store}/k", self.base)).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn save(&self, store: &str) -> (u16, Value) {
        let r = self.http.post(format!("{}/v1.0/state/{store}", self.base)).body(r#"[{"key":"a","value":1},{"key":"b","value":2}]"#).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn stop(mut self) {
        if let Some(sc) = self.sc.take() {
            sc.shutdown.trigger();
            tokio::time::timeout(Duration::from_secs(30), sc.run_until_stopped()).await.expect("sidecar stops");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resiliency_retry_policy_carries_a_flaky_store_to_success() {
    let f = Fixture::start("retryapp", &["flaky", "plain"], &[("resiliency.yaml", RESILIENCY)]).await;
    let flaky = f.store("flaky");
    flaky.fail_next.store(3, Ordering::SeqCst);
    let (status, body) = f.get("flaky").await;
    assert_eq!((status, &body), (200, &Value::from("ok")), "retried to success");
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 4, "three failures, then success");

    // Writes retry only the items that failed: two items, the first attempt's two calls fail.
    flaky.fail_next.store(2, Ordering::SeqCst);
    let before = flaky.calls.load(Ordering::SeqCst);
    assert_eq!(f.save("flaky").await.0, 204);
    assert_eq!(flaky.calls.load(Ordering::SeqCst) - before, 4);

    // More failures than maxRetries allows: the last error, as daprd reports it.
    flaky.fail_next.store(10, Ordering::SeqCst);
    let (status, body) = f.get("flaky").await;
    assert_eq!(status, 500);
    assert_eq!(body["errorCode"], "ERR_STATE_GET");
    assert_eq!(body["message"], "fail to get k from state store flaky: backend unreachable");
    flaky.fail_next.store(0, Ordering::SeqCst);

    // Without a policy the first failure is the answer.
    let plain = f.store("plain");
    plain.fail_next.store(1, Ordering::SeqCst);
    let (status, body) = f.get("plain").await;
    assert_eq!((status, body["errorCode"].as_str()), (500, Some("ERR_STATE_GET")));
    assert_eq!(plain.calls.load(Ordering::SeqCst), 1, "no retry without a policy");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resiliency_timeout_ends_a_stalled_store_call() {
    let f = Fixture::start("timeoutapp", &["stalled"], &[("resiliency.yaml", RESILIENCY)]).await;
    f.store("stalled").stalled.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let (status, body) = f.get("stalled").await;
    assert!(start.elapsed() < Duration::from_secs(3), "the 300ms policy timeout ended the call, not the component deadline");
    assert_eq!(status, 500);
    assert_eq!(body["errorCode"], "ERR_STATE_GET");
    assert_eq!(body["message"], "fail to get k from state store stalled: context deadline exceeded");
    let (status, body) = f.save("stalled").await;
    assert_eq!((status, body["errorCode"].as_str()), (500, Some("ERR_STATE_SAVE")));
    assert_eq!(body["message"], "failed saving state in state store stalled: context deadline exceeded");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resiliency_circuit_breaker_opens_fails_fast_and_closes_after_a_probe() {
    let f = Fixture::start("breakerapp", &["breaker"], &[("resiliency.yaml", RESILIENCY)]).await;
    let store = f.store("breaker");
    store.failing.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        let (status, body) = f.get("breaker").await;
        assert_eq!(status, 500);
        assert_eq!(body["message"], "fail to get k from state store breaker: backend unreachable");
    }
    // Tripped: calls fail fast without reaching the store.
    let (status, body) = f.get("breaker").await;
    assert_eq!((status, body["errorCode"].as_str()), (500, Some("ERR_STATE_GET")));
    assert_eq!(body["message"], "fail to get k from state store breaker: circuit breaker is open");
    let (status, body) = f.save("breaker").await;
    assert_eq!((status, body["errorCode"].as_str()), (500, Some("ERR_STATE_SAVE")));
    assert_eq!(body["message"], "failed saving state in state store breaker: circuit breaker is open");
    assert_eq!(store.calls.load(Ordering::SeqCst), 2, "the open breaker kept calls away from the store");

    // The store recovers; after the 1s open period one probe goes through and closes it.
    store.failing.store(false, Ordering::SeqCst);
    let opened = Instant::now();
    eventually(Duration::from_secs(10), "the half-open probe to close the breaker", || async {
        let (status, _) = f.get("breaker").await;
        (status == 200).then_some(())
    })
    .await;
    assert!(opened.elapsed() >= Duration::from_millis(900), "stayed open for its timeout");
    assert_eq!(store.calls.load(Ordering::SeqCst), 3, "exactly one probe reached the store");
    assert_eq!(f.get("breaker").await.0, 200, "closed again");
    assert_eq!(f.save("breaker").await.0, 204);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resiliency_load_errors_are_reported_and_never_fatal() {
    let bad_trip = "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: badtrip\nspec:\n  policies:\n    circuitBreakers:\n      cb:\n        trip: consecutiveFailures >\n";
    let unknown = "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: unknownref\nspec:\n  targets:\n    components:\n      flaky:\n        outbound:\n          retry: nosuch\n";
    let other_app = "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: elsewhere\nscopes: [someoneelse]\nspec:\n  policies:\n    timeouts:\n      t: broken\n";
    let f = Fixture::start("loadapp", &["flaky"], &[("a.yaml", bad_trip), ("b.yaml", unknown), ("c.yaml", other_app)]).await;
    // The store serves, with no policy (the target names none that exists): one failure is the
    // answer.
    let flaky = f.store("flaky");
    assert_eq!(f.get("flaky").await.0, 200);
    flaky.fail_next.store(1, Ordering::SeqCst);
    assert_eq!(f.get("flaky").await.0, 500);
    let m: Value = f.http.get(format!("{}/v1.0/metadata", f.base)).send().await.unwrap().json().await.unwrap();
    let reports: Vec<String> = m["extended"]
        .as_object()
        .map(|o| o.values().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    assert!(reports.iter().any(|r| r.contains("resiliency badtrip: circuit breaker policy cb: trip: invalid CEL expression")), "{m}");
    assert!(!reports.iter().any(|r| r.contains("unknownref")), "an unknown policy name is a warning, as daprd loads it: {m}");
    assert!(!reports.iter().any(|r| r.contains("elsewhere")), "scoped to another app: not even parsed: {m}");
    f.stop().await;
}

const SECRET_AND_SLOW: &str = r#"apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: secretpolicies
spec:
  policies:
    timeouts:
      long: 5s
    retries:
      twice:
        policy: constant
        duration: 20ms
        maxRetries: 2
    circuitBreakers:
      twoStrikes:
        maxRequests: 1
        timeout: 30s
        trip: consecutiveFailures >= 2
  targets:
    components:
      secretflaky:
        outbound:
          retry: twice
      secretbroken:
        outbound:
          circuitBreaker: twoStrikes
      slowok:
        outbound:
          timeout: long
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resiliency_secret_store_calls_take_their_outbound_policy() {
    let f = Fixture::start("secretapp", &["secretflaky", "secretbroken"], &[("resiliency.yaml", SECRET_AND_SLOW)]).await;
    let get = |store: &'static str| {
        let (http, base) = (f.http.clone(), f.base.clone());
        async move {
            let r = http.get(format!("{base}/v1.0/secrets/{store}/k")).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let flaky = f.store("secretflaky");
    flaky.fail_next.store(2, Ordering::SeqCst);
    let (status, body) = get("secretflaky").await;
    assert_eq!((status, &body["k"]), (200, &Value::from("s3cret")), "retried to success: {body}");
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);

    let broken = f.store("secretbroken");
    broken.failing.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        assert_eq!(get("secretbroken").await.0, 500);
    }
    let (status, body) = get("secretbroken").await;
    assert_eq!((status, body["errorCode"].as_str()), (500, Some("ERR_SECRET_GET")));
    assert!(body["message"].as_str().unwrap_or_default().ends_with("circuit breaker is open"), "{body}");
    assert_eq!(broken.calls.load(Ordering::SeqCst), 2, "the open breaker kept the call from the store");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resiliency_policy_timeout_is_never_cut_by_the_component_call_timeout() {
    let f = Fixture::start_with("deadlineapp", &["slowok", "slowplain"], &[("resiliency.yaml", SECRET_AND_SLOW)], |flags| {
        flags.component_call_timeout = "1s".into();
    })
    .await;
    for name in ["slowok", "slowplain"] {
        f.store(name).delay_ms.store(1500, Ordering::SeqCst);
    }
    // The 5 s policy timeout governs: the 1.5 s call completes.
    let (status, body) = f.get("slowok").await;
    assert_eq!((status, &body), (200, &Value::from("ok")));
    // Without a policy timeout, --component-call-timeout is the default deadline.
    let (status, body) = f.get("slowplain").await;
    assert_eq!((status, body["errorCode"].as_str()), (500, Some("ERR_STATE_GET")), "{body}");
    f.stop().await;
}
