//! HTTP adapter of metadata, health and shutdown: `/v1.0/metadata`, `/v1.0/healthz`,
//! `/v1.0/healthz/outbound`, `/v1.0/shutdown`.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use http::StatusCode;
use serde_json::json;

use super::extract::{body_read_error, read_body};
use super::HttpState;
use crate::api::errors::{codes, ApiError};

/// The metadata, health and shutdown routes.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v1.0/metadata", get(get_metadata))
        .route("/v1.0/metadata/{key}", put(put_metadata))
        .route("/v1.0/healthz", get(healthz))
        .route("/v1.0/healthz/outbound", get(healthz_outbound))
        .route("/v1.0/shutdown", post(shutdown))
}

async fn get_metadata(State(s): State<HttpState>) -> Response {
    let m = s.metadata.get();
    let components: Vec<_> = m
        .components
        .iter()
        .map(|c| json!({ "name": c.name, "type": c.type_name, "version": c.version, "capabilities": c.capabilities }))
        .collect();
    let app = &m.app_connection;
    let mut app_json = json!({ "channelAddress": app.channel_address, "maxConcurrency": app.max_concurrency });
    if app.port != 0 {
        app_json["port"] = json!(app.port);
        app_json["protocol"] = json!(app.protocol);
    }
    if let Some(h) = &app.health {
        let mut health = json!({ "healthProbeInterval": h.probe_interval, "healthProbeTimeout": h.probe_timeout, "healthThreshold": h.threshold });
        if let Some(p) = &h.check_path {
            health["healthCheckPath"] = json!(p);
        }
        app_json["health"] = health;
    }
    let body = json!({
        "id": m.id,
        "runtimeVersion": m.runtime_version,
        "enabledFeatures": m.enabled_features,
        "actors": [],
        "components": components,
        "extended": m.extended,
        "httpEndpoints": m.http_endpoints.iter().map(|n| json!({ "name": n })).collect::<Vec<_>>(),
        "appConnectionProperties": app_json,
        "actorRuntime": { "runtimeStatus": "DISABLED", "hostReady": false },
    });
    (StatusCode::OK, axum::Json(body)).into_response()
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

async fn healthz(State(s): State<HttpState>, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Some(id) = q.get("appid") {
        if id != s.metadata.app_id() {
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, tonic::Code::Internal, codes::ERR_HEALTH_APPID_NOT_MATCH, "dapr app-id does not match")
                .into_response();
        }
    }
    match s.metadata.health() {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
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
