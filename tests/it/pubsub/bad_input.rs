//! Bad input on the pub/sub paths (issue 11 D.12): a malformed CloudEvent from the broker and a
//! publish over the body limit each get a clear error or log, the sidecar keeps serving, and
//! nothing acknowledged is lost (a malformed event is never acknowledged silently: it is parked
//! at the poison limit, where it stays in the broker).

use serde_json::{json, Value};

use super::app::SubscriberApp;
use super::delivery::{publish, publish_raw, sidecar, unique, warm_up, with_n, Broker};
use crate::harness::{eventually, SidecarBuilder};

const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

#[tokio::test]
async fn a_malformed_cloudevent_is_parked_and_the_next_event_is_delivered() {
    let topic = unique("malformed");
    let app = SubscriberApp::start(json!([])).await;
    let broker = Broker::open().await;
    let sc = sidecar("bad-ce", &app, &broker, &[], &[(&topic, "/in", None)], |b| b).await;
    warm_up(&broker, &app, &topic, "/in").await;
    publish_raw(&broker, &topic, "{not json", "application/cloudevents+json").await;
    publish(&broker, &topic, json!({"n": 1})).await;
    eventually(WAIT, "the good event after the malformed one", || async { (with_n(&app, "/in", 1) == 1).then_some(()) }).await;
    // Never handed to the app, never acknowledged: retried up to the poison limit (3), then parked.
    eventually(WAIT, "the malformed event parked", || async {
        let md: Value = sc.client.get(sc.url("/v1.0/metadata")).send().await.ok()?.json().await.ok()?;
        let state = md["extended"][format!("rapr.subscription.ps/{topic}")].as_str().unwrap_or_default().to_string();
        (state == "active; parked 1").then_some(())
    })
    .await;
    assert!(sc.logs().contains("error deserializing cloud event"), "{}", sc.logs());
    assert!(app.received("/in").iter().all(|r| r.json().is_object()), "the app never got the malformed body");
    let r = sc.client.get(sc.url("/v1.0/healthz")).send().await.expect("healthz");
    assert_eq!(r.status().as_u16(), 204, "the sidecar keeps serving");
}

#[tokio::test]
async fn a_publish_over_the_body_limit_is_refused_and_the_sidecar_keeps_serving() {
    let sc = SidecarBuilder::new("bad-big").memory("state").file("ps.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: ps\nspec:\n  type: pubsub.in-memory\n  version: v1\n").args(&["--max-body-size", "1Ki"]).start().await;
    let big = "x".repeat(4096);
    let r = sc.client.post(sc.url("/v1.0/publish/ps/t")).header("content-type", "text/plain").body(big).send().await.expect("an answer");
    let status = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    assert!(status >= 400, "refused: {status} {body}");
    let r = sc.client.post(sc.url("/v1.0/publish/ps/t")).header("content-type", "text/plain").body("small").send().await.expect("an answer");
    assert_eq!(r.status().as_u16(), 204, "a publish under the limit still works");
}
