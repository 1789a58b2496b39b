//! Pub/sub through the real binary (issue 11): one module per part; broker conformance runs at the
//! trait level in `src/components/pubsub/conformance.rs`.

pub mod app;
mod bad_input;
mod delivery;
mod delivery_grpc;
mod host_restart;
mod proofs;
mod publish;
mod redis;
mod sqlite;
mod streaming;
mod subscriptions;

use std::time::Duration;

use crate::harness::{eventually, Sidecar};

/// Waits until `/v1.0/metadata` shows the subscription of `topic` on `pubsub` active (its
/// delivery subscribed to the broker): a competing-consumers test publishes only after every
/// sidecar of the group is taking messages.
pub async fn wait_active(sc: &Sidecar, pubsub: &str, topic: &str) {
    let key = format!("rapr.subscription.{pubsub}/{topic}");
    eventually(Duration::from_secs(30), &format!("{key} to be active"), || async {
        let md: serde_json::Value = sc.client.get(sc.url("/v1.0/metadata")).send().await.ok()?.json().await.ok()?;
        md["extended"][&key].as_str().filter(|s| s.starts_with("active")).map(|_| ())
    })
    .await;
}

/// A pub/sub `Component` document named `name` of `type_name`, with `spec_extra` (whole spec
/// lines such as `  initTimeout: 2s\n`) and metadata pairs.
pub fn component_yaml(name: &str, type_name: &str, spec_extra: &str, metadata: &[(&str, &str)]) -> String {
    let mut y = format!("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {type_name}\n  version: v1\n{spec_extra}  metadata:\n");
    for (k, v) in metadata {
        y.push_str(&format!("  - name: {k}\n    value: \"{v}\"\n"));
    }
    y
}

/// `GET /v1.0/metadata` as JSON.
pub async fn metadata(sc: &Sidecar) -> serde_json::Value {
    sc.client.get(sc.url("/v1.0/metadata")).send().await.unwrap().json().await.unwrap()
}

/// A component's `rapr.component.<name>` line in extended metadata (`None` while ready).
pub async fn component_status(sc: &Sidecar, name: &str) -> Option<String> {
    metadata(sc).await["extended"][format!("rapr.component.{name}")].as_str().map(str::to_string)
}
