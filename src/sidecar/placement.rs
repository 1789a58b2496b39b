//! The sidecar's placement wiring (issue 14 B.7): with `--placement-host-address`, start the
//! `PlacementClient` for this host (`host:internal-port`, as daprd names it), then tell it the
//! app's actor types from `GET /dapr/config` once the app's port is open. As daprd v1.18, a host
//! without an actor state store hosts no actor types (it reports none, and still gets the tables
//! to call other hosts' actors). As daprd's, the types are reported while the app is healthy and
//! withdrawn while its health checks fail. A gRPC app declares its types on the actor stream,
//! which comes with the actor runtime (issue 15).

use axum::body::Body;
use http::{Method, StatusCode};
use http_body_util::BodyExt;

use crate::config::component::ComponentSpec;
use crate::config::SidecarArgs;
use crate::invoke::app_channel::{AppChannel, AppProtocol};
use crate::invoke::app_health::AppHealthHandle;
use crate::invoke::message::CallMeta;
use crate::placement::client::PlacementHandle;
use crate::runtime::metrics::Metrics;

/// The placement addresses of `--placement-host-address` (comma separated, blanks dropped).
pub fn addresses(flags: &SidecarArgs) -> Vec<String> {
    flags.placement_host_address.as_deref().unwrap_or("").split(',').map(str::trim).filter(|a| !a.is_empty()).map(String::from).collect()
}

/// Whether a state component is marked `actorStateStore` (dapr/kit's truthy values).
pub fn has_actor_state_store(components: &[ComponentSpec]) -> bool {
    components.iter().filter(|c| c.type_name.starts_with("state.")).any(|c| {
        c.metadata.iter().any(|m| {
            m.name.eq_ignore_ascii_case("actorStateStore")
                && m.value.as_deref().is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "y" | "on"))
        })
    })
}

/// The actor types of the app's `/dapr/config` answer (`entities`); none when the app does not
/// answer 200 with JSON (daprd takes a non-200 as an empty configuration).
pub fn entities_of(status: StatusCode, body: &[u8]) -> Result<Vec<String>, String> {
    if status != StatusCode::OK {
        return Ok(Vec::new());
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("the app's /dapr/config is not JSON: {e}"))?;
    Ok(v.get("entities").and_then(|e| e.as_array()).map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect()).unwrap_or_default())
}

/// The app's actor types, asked on its channel.
async fn app_entities(channel: &AppChannel, app_id: &str) -> Result<Vec<String>, String> {
    if channel.protocol() == AppProtocol::Grpc {
        return Ok(Vec::new());
    }
    let headers = if app_id.is_empty() { Vec::new() } else { vec![("dapr-app-id".to_string(), app_id.to_string())] };
    let meta = CallMeta { method: "dapr/config".into(), verb: Method::GET, query: String::new(), content_type: Some("application/json".into()), headers };
    let resp = channel.call_http(&meta, Body::empty()).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(|e| format!("error reading the app's /dapr/config: {e}"))?.to_bytes();
    entities_of(status, &body)
}

/// What `start` needs.
pub struct PlacementSetup<'a> {
    pub flags: &'a SidecarArgs,
    /// This sidecar's internal address as others reach it.
    pub host_name: String,
    /// Whether a state component is the actor state store (`has_actor_state_store`).
    pub hosting: bool,
    pub app: Option<std::sync::Arc<AppChannel>>,
    pub health: Option<AppHealthHandle>,
    pub metrics: Metrics,
}

/// Starts the client when placement is configured; `None` otherwise.
pub async fn start(setup: PlacementSetup<'_>, supervisor: ractor::ActorCell) -> Result<Option<PlacementHandle>, ractor::SpawnErr> {
    let addresses = addresses(setup.flags);
    if addresses.is_empty() {
        return Ok(None);
    }
    let namespace = std::env::var("NAMESPACE").ok().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into());
    let app_id = setup.flags.app_id.clone();
    let handle = PlacementHandle::start(addresses, setup.host_name, app_id.clone(), namespace, Some(supervisor)).await?;
    export_status(&handle, setup.metrics.clone());
    let hosting = setup.hosting;
    if !hosting {
        tracing::info!("actors: state store is not configured - actor state and workflow operations will be unavailable until an actor state store component is loaded");
    }
    let config_disabled = setup.flags.daprd.init_endpoints_disabled().unwrap_or_default().iter().any(|e| e == crate::config::flags_daprd::INIT_CONFIG);
    let h = handle.clone();
    let (app, health) = (setup.app, setup.health);
    tokio::spawn(async move {
        let types = match app {
            Some(app) if !config_disabled => {
                if let Some(health) = &health {
                    health.until_port_open().await;
                }
                match app_entities(&app, &app_id).await {
                    Ok(t) => {
                        tracing::info!(types = ?t, "Application configuration loaded");
                        t
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not load the app's configuration (/dapr/config); it hosts no actors");
                        Vec::new()
                    }
                }
            }
            Some(_) => {
                tracing::warn!("Skipping programmatic dapr configuration loading (see 'disable-init-endpoints' flag/annotation)");
                Vec::new()
            }
            None => Vec::new(),
        };
        let types = if hosting { types } else { Vec::new() };
        match health.filter(|_| !types.is_empty()) {
            Some(health) => follow_app_health(&h, &health, types).await,
            None => h.set_types(types),
        }
    });
    Ok(Some(handle))
}

/// As daprd's `appHealthChanged`: the app's types are reported while the app is healthy (at once
/// without app health checks) and withdrawn while it is not, so no actor is placed on a host whose
/// app cannot take calls. Returns only when the health monitor is gone.
async fn follow_app_health(h: &PlacementHandle, health: &AppHealthHandle, types: Vec<String>) {
    loop {
        health.until_healthy().await;
        h.set_types(types.clone());
        if !health.is_healthy() {
            return; // the monitor is gone (shutting down): nothing will change any more
        }
        // Never resolves without health checks (or once the monitor is gone).
        health.until_unhealthy().await;
        tracing::warn!(types = ?types, "the app is unhealthy: its actor types leave placement until it is healthy again");
        h.set_types(Vec::new());
    }
}

/// Keeps the placement metrics in step with the client's status, until the client stops.
fn export_status(handle: &PlacementHandle, metrics: Metrics) {
    let mut watch = handle.watch();
    tokio::spawn(async move {
        let mut counted = 0;
        loop {
            let (fenced, version, fences) = {
                let s = watch.borrow_and_update();
                (s.fenced, s.version, s.fences)
            };
            for _ in counted..fences {
                metrics.placement_fenced();
            }
            counted = fences;
            metrics.placement_status(fenced, version);
            if watch.changed().await.is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_come_from_a_200_json_answer_only() {
        assert_eq!(entities_of(StatusCode::OK, br#"{"entities":["A","B"],"actorIdleTimeout":"1h"}"#).unwrap(), ["A", "B"]);
        assert!(entities_of(StatusCode::NOT_FOUND, b"nope").unwrap().is_empty());
        assert!(entities_of(StatusCode::OK, b"").unwrap().is_empty());
        assert!(entities_of(StatusCode::OK, b"{}").unwrap().is_empty());
        assert!(entities_of(StatusCode::OK, b"<html>").is_err());
    }
}
