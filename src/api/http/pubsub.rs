//! HTTP adapter of the publish API: `POST|PUT /v1.0/publish/{pubsub}/{topic...}` and bulk on
//! `/v1.0-alpha1/publish/bulk/...` and `/v1.0/publish/bulk/...` (daprd's `onPublish` and
//! `onBulkPublish`). The topic is the rest of the path, `/` included.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::extract::{query_metadata, read_body};
use super::HttpState;
use crate::api::errors::codes::ERR_PUBSUB_PUBLISH_MESSAGE;
use crate::api::errors::pubsub::pubsub_error;
use crate::api::pubsub::{BulkArgs, BulkEntryArgs, PubSubApiError, PublishArgs};
use crate::pubsub::cloudevents::{is_binary_content_type, is_cloud_event_content_type, is_json_content_type, is_string_content_type};

/// The publish routes.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v1.0/publish/{pubsub}/{*topic}", post(publish).put(publish))
        .route("/v1.0/publish/{pubsub}/", post(publish_no_topic).put(publish_no_topic))
        .route("/v1.0-alpha1/publish/bulk/{pubsub}/{*topic}", post(bulk).put(bulk))
        .route("/v1.0-alpha1/publish/bulk/{pubsub}/", post(bulk_no_topic).put(bulk_no_topic))
        .route("/v1.0/publish/bulk/{pubsub}/{*topic}", post(bulk).put(bulk))
        .route("/v1.0/publish/bulk/{pubsub}/", post(bulk_no_topic).put(bulk_no_topic))
}

fn trace(headers: &HeaderMap) -> (String, String) {
    let get = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    (get("traceparent"), get("tracestate"))
}

fn fail(e: PubSubApiError) -> Response {
    tracing::debug!(error = %e, "publish refused");
    pubsub_error(e).into_response()
}

async fn publish_no_topic(s: State<HttpState>, Path(pubsub): Path<String>, q: Query<HashMap<String, String>>, h: HeaderMap, body: Body) -> Response {
    publish(s, Path((pubsub, String::new())), q, h, body).await
}

async fn publish(State(s): State<HttpState>, Path((pubsub, topic)): Path<(String, String)>, Query(q): Query<HashMap<String, String>>, headers: HeaderMap, body: Body) -> Response {
    let metadata = query_metadata(&q);
    let client = match s.pubsub.component(&pubsub, &topic, &metadata, false) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let data = match read_body(body, s.max_body).await {
        Ok(b) => b,
        Err(e) => return fail(PubSubApiError::Publish { pubsub, topic, detail: e.to_string() }),
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let (trace_parent, trace_state) = trace(&headers);
    let args = PublishArgs { pubsub, topic, data, content_type, metadata, trace_parent, trace_state };
    match s.pubsub.publish(&client, args, false).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => fail(e),
    }
}

/// One entry of daprd's HTTP bulk body.
#[derive(Deserialize)]
struct EntryJson {
    #[serde(default, rename = "entryId")]
    entry_id: String,
    #[serde(default)]
    event: Value,
    #[serde(default, rename = "contentType")]
    content_type: String,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
}

#[derive(Serialize)]
struct FailedEntryJson {
    #[serde(rename = "entryId")]
    entry_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
}

#[derive(Serialize)]
struct BulkResponseJson {
    #[serde(rename = "failedEntries")]
    failed_entries: Vec<FailedEntryJson>,
    #[serde(rename = "errorCode")]
    error_code: &'static str,
}

/// daprd's `ConvertEventToBytes`: base64 text for binary types, text for string types, JSON for
/// JSON and CloudEvents types; any other pairing is a mismatch.
fn event_bytes(event: &Value, content_type: &str) -> Result<Bytes, String> {
    const MISMATCH: &str = "error: mismatch between contentType and event";
    if is_binary_content_type(content_type) {
        let Value::String(s) = event else { return Err(MISMATCH.into()) };
        return base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(Bytes::from)
            .map_err(|e| format!("error: unable to decode base64 application/octect-stream data: {e}"));
    }
    if is_string_content_type(content_type) {
        let Value::String(s) = event else { return Err(MISMATCH.into()) };
        return Ok(Bytes::from(s.clone()));
    }
    if is_json_content_type(content_type) || is_cloud_event_content_type(content_type) {
        return serde_json::to_vec(event).map(Bytes::from).map_err(|e| format!("{MISMATCH}: {e}"));
    }
    Err(MISMATCH.into())
}

async fn bulk_no_topic(s: State<HttpState>, Path(pubsub): Path<String>, q: Query<HashMap<String, String>>, uri: axum::http::Uri, h: HeaderMap, body: Body) -> Response {
    bulk(s, Path((pubsub, String::new())), q, uri, h, body).await
}

async fn bulk(State(s): State<HttpState>, Path((pubsub, topic)): Path<(String, String)>, Query(q): Query<HashMap<String, String>>, uri: axum::http::Uri, headers: HeaderMap, body: Body) -> Response {
    let metadata = query_metadata(&q);
    let client = match s.pubsub.component(&pubsub, &topic, &metadata, false) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Err(e) = crate::api::pubsub::PubSubApi::raw_payload(&pubsub, &metadata) {
        return fail(e);
    }
    let app_id = s.app_id.to_string();
    let unmarshal = |detail: String| PubSubApiError::UnmarshalEvents { pubsub: pubsub.clone(), topic: topic.clone(), app_id: app_id.clone(), detail };
    let bytes = match read_body(body, s.max_body).await {
        Ok(b) => b,
        Err(e) => return fail(unmarshal(e.to_string())),
    };
    let incoming: Vec<EntryJson> = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return fail(unmarshal(e.to_string())),
    };
    let mut entries = Vec::with_capacity(incoming.len());
    let mut seen = std::collections::HashSet::new();
    for e in incoming {
        let event = match event_bytes(&e.event, &e.content_type) {
            Ok(b) => b,
            Err(detail) => return fail(PubSubApiError::MarshalEnvelope { pubsub, topic, app_id, detail }),
        };
        // daprd checks the id after converting the event, entry by entry.
        if e.entry_id.is_empty() || !seen.insert(e.entry_id.clone()) {
            let detail = "entryId is duplicated or not present for entry".to_string();
            return fail(PubSubApiError::MarshalEvents { pubsub, topic, app_id, detail });
        }
        entries.push(BulkEntryArgs { entry_id: e.entry_id, event, content_type: e.content_type, metadata: e.metadata });
    }
    let (trace_parent, trace_state) = trace(&headers);
    let args = BulkArgs { pubsub, topic, entries, metadata, trace_parent, trace_state, span_name: uri.path().to_string() };
    match s.pubsub.bulk_publish(&client, args).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e @ PubSubApiError::BulkPartial { .. }) => bulk_failed(e),
        Err(e) => fail(e),
    }
}

/// daprd's answer to a bulk publish that failed in part: 500 with the failed entries and
/// `errorCode` as the JSON body, and the same JSON again in a `metadata.responseData` header
/// beside `metadata.error` (the error's `api error: code = Internal desc = ...` text), as
/// `onBulkPublish` sets them with `setResponseMetadataHeaders`.
fn bulk_failed(e: PubSubApiError) -> Response {
    let message = e.to_string();
    let PubSubApiError::BulkPartial { failed, detail, pubsub, topic } = e else { return fail(e) };
    tracing::debug!(pubsub = %pubsub, topic = %topic, error = %detail, failed = failed.len(), "bulk publish partly failed");
    let body = BulkResponseJson {
        failed_entries: failed.into_iter().map(|f| FailedEntryJson { entry_id: f.entry_id, error: f.error }).collect(),
        error_code: ERR_PUBSUB_PUBLISH_MESSAGE,
    };
    let json = serde_json::to_string(&body).unwrap_or_default();
    let mut resp = (StatusCode::INTERNAL_SERVER_ERROR, [(http::header::CONTENT_TYPE, "application/json")], json.clone()).into_response();
    // A header value cannot hold control characters (a newline in a broker's error text): such
    // a header is left out rather than failing the answer.
    for (name, value) in [("metadata.responsedata", json), ("metadata.error", format!("api error: code = Internal desc = {message}"))] {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}
