//! Component supervision through the real binary: a component that fails to start is reported
//! failed, retried with backoff, and recovers by itself; other components serve throughout.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{eventually, SidecarBuilder};

#[tokio::test]
async fn a_failed_component_is_retried_and_recovers_while_others_serve() {
    let b = SidecarBuilder::new("supapp");
    let missing_dir = b.dir().join("not-yet");
    let yaml = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: late\nspec:\n  type: state.sqlite\n  version: v1\n  metadata:\n  - name: connectionString\n    value: \"{}\"\n",
        missing_dir.join("late.db").display()
    );
    let sc = b.file("late.yaml", &yaml).memory("mem").allow_unhealthy().start().await;

    // Failed: health names it, metadata shows the error, requests get Dapr's not-found error.
    let r = sc.client.get(sc.url("/v1.0/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errorCode"], "ERR_HEALTH_NOT_READY");
    assert!(body["message"].as_str().unwrap().contains("late"), "{body}");
    let m: Value = sc.client.get(sc.url("/v1.0/metadata")).send().await.unwrap().json().await.unwrap();
    let status = m["extended"]["rapr.component.late"].as_str().unwrap();
    assert!(status.starts_with("failed: ") && status.contains("cannot open"), "{status}");
    let r = sc.client.get(sc.url("/v1.0/state/late/k")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // The other component serves throughout.
    let r = sc.client.post(sc.url("/v1.0/state/mem")).body(r#"[{"key":"k","value":1}]"#).send().await.unwrap();
    assert_eq!(r.status(), 204);

    // The backend appears: the supervisor's retry brings the component up without a restart.
    std::fs::create_dir_all(&missing_dir).unwrap();
    let url = sc.url("/v1.0/healthz");
    eventually(Duration::from_secs(20), "the component to recover", || async {
        (sc.client.get(&url).send().await.unwrap().status() == 204).then_some(())
    })
    .await;
    let r = sc.client.post(sc.url("/v1.0/state/late")).body(r#"[{"key":"k","value":"back"}]"#).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = sc.client.get(sc.url("/v1.0/state/late/k")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), r#""back""#);
    let m: Value = sc.client.get(sc.url("/v1.0/metadata")).send().await.unwrap().json().await.unwrap();
    assert!(m["extended"].get("rapr.component.late").is_none());
    assert!(m["components"].as_array().unwrap().iter().any(|c| c["name"] == "late"));
    assert!(sc.logs().contains("retrying component"), "the log shows the retries");
}
