//! A stalled store never holds up another store, and calls into it give up at the component call
//! deadline with Dapr's error (in-process runtime with a test-only stalling store).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rapr::cli::default_sidecar_args;
use rapr::components::registry::Registry;
use rapr::components::state::{DeleteRequest, Feature, GetRequest, SetRequest, StateStore, StoreError, StoredItem};
use rapr::sidecar::Sidecar;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::harness::free_port;

/// A store whose every call stalls forever.
struct Stalled;

#[async_trait]
impl StateStore for Stalled {
    fn features(&self) -> &'static [Feature] {
        &[]
    }
    async fn get(&self, _: GetRequest) -> Result<Option<StoredItem>, StoreError> {
        std::future::pending().await
    }
    async fn set(&self, _: SetRequest) -> Result<(), StoreError> {
        std::future::pending().await
    }
    async fn delete(&self, _: DeleteRequest) -> Result<(), StoreError> {
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_store_times_out_and_never_blocks_another() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("slow.yaml"), "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: slow\nspec:\n  type: state.stalled\n  version: v1\n").unwrap();
    std::fs::write(dir.path().join("fast.yaml"), "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: fast\nspec:\n  type: state.in-memory\n  version: v1\n").unwrap();
    let mut reg = Registry::default();
    reg.add_state(&["state.stalled"], "v1", |_, _| Box::pin(async { Ok(Arc::new(Stalled) as Arc<dyn StateStore>) }));
    let mut flags = default_sidecar_args();
    flags.app_id = "slowapp".into();
    flags.dapr_http_port = free_port();
    flags.dapr_grpc_port = free_port();
    flags.dapr_listen_addresses = "127.0.0.1".into();
    flags.resources_path = vec![dir.path().to_path_buf()];
    flags.component_call_timeout = "2s".into();
    let sc = Sidecar::start_with_registry(flags.clone(), None, Arc::new(reg)).await.unwrap();
    let base = format!("http://127.0.0.1:{}", flags.dapr_http_port);
    let http = reqwest::Client::new();

    // Each finished request reports which store it used, in completion order.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(&'static str, u16, Value)>();
    for i in 0..20 {
        let (http, base, done) = (http.clone(), base.clone(), done_tx.clone());
        tokio::spawn(async move {
            let r = http.get(format!("{base}/v1.0/state/slow/k{i}")).send().await.unwrap();
            let status = r.status().as_u16();
            let _ = done.send(("slow", status, r.json().await.unwrap_or(Value::Null)));
        });
    }
    for i in 0..100 {
        let r = http.post(format!("{base}/v1.0/state/fast")).body(format!(r#"[{{"key":"k{i}","value":{i}}}]"#)).send().await.unwrap();
        assert_eq!(r.status(), 204);
        let r = http.get(format!("{base}/v1.0/state/fast/k{i}")).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), i.to_string());
        let _ = done_tx.send(("fast", 200, Value::Null));
    }
    drop(done_tx);
    let mut order = Vec::new();
    while let Some(d) = done_rx.recv().await {
        order.push(d);
    }
    // All 100 round trips on the fast store finished while the stalled calls were still waiting.
    let first_slow = order.iter().position(|(s, _, _)| *s == "slow").expect("slow calls finish");
    assert_eq!(order[..first_slow].iter().filter(|(s, _, _)| *s == "fast").count(), 100, "a fast request waited behind a stalled one");
    // The stalled calls end at the deadline with Dapr's get error.
    for (_, status, body) in order.iter().filter(|(s, _, _)| *s == "slow") {
        assert_eq!(*status, 500);
        assert_eq!(body["errorCode"], "ERR_STATE_GET");
        assert!(body["message"].as_str().unwrap().contains("did not answer within 2s"), "{body}");
    }
    assert_eq!(order.iter().filter(|(s, _, _)| *s == "slow").count(), 20);
    tokio::time::timeout(Duration::from_secs(30), async {
        sc.shutdown.trigger();
        sc.run_until_stopped().await;
    })
    .await
    .expect("a stalled store does not block shutdown forever");
}
