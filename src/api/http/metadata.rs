//! HTTP adapter of metadata, health and shutdown: `/v1.0/metadata`, `/v1.0/healthz`,
//! `/v1.0/healthz/outbound`, `/v1.0/shutdown`.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use http::StatusCode;
use serde_json::{json, Value};

use super::extract::{body_read_error, read_body};
use super::HttpState;
use crate::api::errors::{codes, ApiError};

/// daprd's public endpoints (`--dapr-public-port`): metadata and health, no shutdown.
pub fn public_routes() -> Router<HttpState> {
    Router::new()
        .route("/v1.0/metadata", get(get_metadata))
        .route("/v1.0/metadata/{key}", put(put_metadata))
        .route("/v1.0/healthz", get(healthz))
        .route("/v1.0/healthz/outbound", get(healthz_outbound))
}

/// The metadata, health and shutdown routes.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v1.0/metadata", get(get_metadata))
        .route("/v1.0/metadata/{key}", put(put_metadata))
        .route("/v1.0/healthz", get(healthz))
        .route("/v1.0/healthz/outbound", get(healthz_outbound))
        .route("/v1.0/shutdown", post(shutdown))
}

/// daprd's `/v1.0/metadata` body: Go's `encoding/json` over its response struct, whose
/// `omitempty` fields (`enabledFeatures`, `actors`, `components`, `httpEndpoints`, a component's
/// `capabilities`, the app's `port`...) are left out when empty or zero. The protocol is reported
/// with or without an app port (`http` by default), as daprd's app connection config holds it.
async fn get_metadata(State(s): State<HttpState>) -> Response {
    (StatusCode::OK, axum::Json(metadata_json(&s.metadata.get()))).into_response()
}

fn metadata_json(m: &crate::api::metadata::MetadataSnapshot) -> Value {
    let components: Vec<Value> = m
        .components
        .iter()
        .map(|c| omit_empty(json!({ "name": c.name, "type": c.type_name, "version": c.version, "capabilities": c.capabilities })))
        .collect();
    let app = &m.app_connection;
    let mut app_json = omit_empty(json!({ "port": app.port, "protocol": app.protocol, "channelAddress": app.channel_address, "maxConcurrency": app.max_concurrency }));
    if let Some(h) = &app.health {
        let health = json!({ "healthCheckPath": h.check_path, "healthProbeInterval": h.probe_interval, "healthProbeTimeout": h.probe_timeout, "healthThreshold": h.threshold });
        app_json["health"] = omit_empty(health);
    }
    omit_empty(json!({
        "id": m.id,
        "runtimeVersion": m.runtime_version,
        "enabledFeatures": m.enabled_features,
        "actors": [],
        "components": components,
        "extended": m.extended,
        "subscriptions": m.subscriptions.iter().map(subscription_json).collect::<Vec<_>>(),
        "httpEndpoints": m.http_endpoints.iter().map(|n| json!({ "name": n })).collect::<Vec<_>>(),
        "appConnectionProperties": app_json,
        "actorRuntime": actor_runtime_json(&m.actor_runtime),
    }))
}

/// daprd's `metadataActorRuntime`: the status as text, `hostReady` always, `placement` when set.
fn actor_runtime_json(a: &crate::api::metadata::ActorRuntimeInfo) -> Value {
    let mut v = json!({ "runtimeStatus": a.status.as_str(), "hostReady": a.host_ready });
    if !a.placement.is_empty() {
        v["placement"] = json!(a.placement);
    }
    v
}

/// daprd's `metadataResponsePubsubSubscription`: `metadata` and `rules` (and a rule's `match`
/// and `path`) are `omitempty`; `deadLetterTopic` and `type` are always written.
fn subscription_json(s: &crate::api::metadata::ListedSubscription) -> Value {
    let mut v = json!({ "pubsubname": s.pubsub, "topic": s.topic, "deadLetterTopic": s.dead_letter_topic, "type": s.kind.as_str() });
    if !s.metadata.is_empty() {
        v["metadata"] = json!(s.metadata);
    }
    if !s.rules.is_empty() {
        v["rules"] = s.rules.iter().map(|(m, p)| omit_empty(json!({ "match": m, "path": p }))).collect();
    }
    v
}

/// Go's `omitempty` on one level of an object: empty strings, arrays and objects, zero numbers,
/// `null` are left out (`false` is kept: only `actorRuntime.hostReady` is a bool, and daprd
/// writes it always).
fn omit_empty(mut v: Value) -> Value {
    if let Value::Object(o) = &mut v {
        o.retain(|_, x| match x {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(m) => !m.is_empty(),
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::Bool(_) => true,
        });
    }
    v
}

async fn put_metadata(State(s): State<HttpState>, Path(key): Path<String>, body: Body) -> Response {
    match read_body(body, s.max_body).await {
        Ok(b) => {
            s.metadata.set(key, String::from_utf8_lossy(&b).into_owned());
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => body_read_error(e).into_response(),
    }
}

/// daprd's order: not ready first (whatever `appid` says), then an `appid` that is not this app.
async fn healthz(State(s): State<HttpState>, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Err(e) = s.metadata.health() {
        return e.into_response();
    }
    if q.get("appid").is_some_and(|id| id != s.metadata.app_id()) {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, tonic::Code::Internal, codes::ERR_HEALTH_APPID_NOT_MATCH, "dapr app-id does not match").into_response();
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Outbound calls (state, later invocation) work as soon as the API serves: the gateway starts
/// only after every component's first init attempt.
async fn healthz_outbound(State(s): State<HttpState>) -> Response {
    if s.shutdown.is_requested() {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, tonic::Code::Internal, codes::ERR_OUTBOUND_HEALTH_NOT_READY, "dapr outbound is not ready")
            .into_response();
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn shutdown(State(s): State<HttpState>) -> Response {
    tracing::info!("shutdown requested through the API");
    s.shutdown.trigger();
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::metadata::{AppConnection, MetadataSnapshot, RegisteredComponent};

    fn snapshot() -> MetadataSnapshot {
        MetadataSnapshot {
            id: "a".into(),
            runtime_version: "1".into(),
            enabled_features: vec![],
            components: vec![],
            extended: [("daprRuntimeVersion".to_string(), "1".to_string())].into(),
            app_connection: AppConnection { port: 0, protocol: "http".into(), channel_address: "127.0.0.1".into(), max_concurrency: -1, health: None },
            http_endpoints: vec![],
            subscriptions: vec![],
            actor_runtime: crate::api::metadata::ActorRuntimeInfo {
                status: crate::api::metadata::ActorRuntimeStatus::Disabled,
                host_ready: false,
                placement: "placement: disconnected".into(),
            },
        }
    }

    #[test]
    fn empty_lists_are_left_out_as_daprd_does() {
        let v = metadata_json(&snapshot());
        for key in ["actors", "components", "httpEndpoints", "enabledFeatures", "subscriptions"] {
            assert!(v.get(key).is_none(), "{key}: {v}");
        }
        assert_eq!(v["appConnectionProperties"], json!({ "protocol": "http", "channelAddress": "127.0.0.1", "maxConcurrency": -1 }), "protocol without an app port");
        assert_eq!(v["actorRuntime"], json!({ "runtimeStatus": "DISABLED", "hostReady": false, "placement": "placement: disconnected" }));
        let mut m = snapshot();
        m.components.push(RegisteredComponent { name: "s".into(), type_name: "state.redis".into(), version: "v1".into(), capabilities: vec![] });
        m.enabled_features.push("F".into());
        let v = metadata_json(&m);
        assert_eq!(v["components"], json!([{ "name": "s", "type": "state.redis", "version": "v1" }]), "no empty capabilities");
        assert_eq!(v["enabledFeatures"], json!(["F"]));
    }

    #[test]
    fn subscriptions_as_daprd_writes_them() {
        use crate::api::metadata::ListedSubscription;
        use crate::pubsub::SubscriptionKind;
        let mut m = snapshot();
        m.subscriptions.push(ListedSubscription {
            pubsub: "ps".into(),
            topic: "t".into(),
            metadata: [("rawPayload".to_string(), "true".to_string())].into(),
            rules: vec![("event.type == 'a'".into(), "/a".into()), (String::new(), "/d".into())],
            dead_letter_topic: String::new(),
            kind: SubscriptionKind::Declarative,
        });
        m.subscriptions.push(ListedSubscription {
            pubsub: "ps".into(),
            topic: "s".into(),
            metadata: Default::default(),
            rules: vec![],
            dead_letter_topic: "dl".into(),
            kind: SubscriptionKind::Streaming,
        });
        let v = metadata_json(&m);
        assert_eq!(
            v["subscriptions"],
            json!([
                { "pubsubname": "ps", "topic": "t", "metadata": { "rawPayload": "true" }, "rules": [{ "match": "event.type == 'a'", "path": "/a" }, { "path": "/d" }], "deadLetterTopic": "", "type": "DECLARATIVE" },
                { "pubsubname": "ps", "topic": "s", "deadLetterTopic": "dl", "type": "STREAMING" },
            ])
        );
    }
}
