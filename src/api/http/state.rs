//! HTTP adapter of the state API: `/v1.0/state/...` and `/v1.0-alpha1/state/{store}/query`.
//! Each handler extracts, converts to the facade's types, calls `StateApi`, and converts back.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::extract::{body_read_error, decode, deserialize_error, query_metadata, read_body, BodyError};
use super::HttpState;
use crate::api::errors::state::state_error;
use crate::api::errors::ApiError;
use crate::api::state::{DeleteItem, SaveItem, StateApiError, TxOperation};
use crate::components::state::{Concurrency, Consistency, Metadata, StateOptions, StoreError};

/// The state routes.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v1.0/state/{store}", post(save).put(save))
        .route("/v1.0/state/{store}/bulk", post(bulk_get).put(bulk_get))
        .route("/v1.0/state/{store}/transaction", post(transaction).put(transaction))
        .route("/v1.0/state/{store}/{key}", get(get_state).delete(delete_state))
        .route("/v1.0-alpha1/state/{store}/query", post(query).put(query))
}

#[derive(Deserialize, Default)]
struct OptionsJson {
    #[serde(default, alias = "Concurrency")]
    concurrency: Option<String>,
    #[serde(default, alias = "Consistency")]
    consistency: Option<String>,
}

#[derive(Deserialize)]
struct ItemJson {
    #[serde(default, alias = "Key")]
    key: String,
    #[serde(default, alias = "Value")]
    value: Option<Box<RawValue>>,
    #[serde(default, alias = "ETag", alias = "Etag", alias = "eTag")]
    etag: Option<String>,
    #[serde(default, alias = "Metadata")]
    metadata: Option<HashMap<String, String>>,
    #[serde(default, alias = "Options")]
    options: Option<OptionsJson>,
}

fn err(s: &HttpState, e: StateApiError) -> Response {
    state_error(e, &s.app_id).into_response()
}

/// Parses Dapr's option strings; unknown ones are a store-side error as in daprd.
fn parse_options(o: Option<&OptionsJson>) -> Result<StateOptions, StoreError> {
    let mut out = StateOptions::default();
    if let Some(o) = o {
        out.concurrency = match o.concurrency.as_deref() {
            None | Some("") | Some("last-write") => Concurrency::LastWrite,
            Some("first-write") => Concurrency::FirstWrite,
            Some(other) => return Err(StoreError::InvalidRequest(format!("unrecognized concurrency model '{other}'"))),
        };
        out.consistency = parse_consistency(o.consistency.as_deref())?;
    }
    Ok(out)
}

fn parse_consistency(c: Option<&str>) -> Result<Consistency, StoreError> {
    match c {
        None | Some("") | Some("eventual") => Ok(Consistency::Eventual),
        Some("strong") => Ok(Consistency::Strong),
        Some(other) => Err(StoreError::InvalidRequest(format!("unrecognized consistency model '{other}'"))),
    }
}

/// Re-encodes a JSON value compactly with sorted keys, as daprd's Go round trip does.
fn encode_value(v: Option<&RawValue>) -> Result<Bytes, String> {
    let Some(raw) = v else { return Ok(Bytes::from_static(b"null")) };
    let value: Value = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
    serde_json::to_vec(&value).map(Bytes::from).map_err(|e| e.to_string())
}

fn save_item(store: &str, item: ItemJson, query_md: &Metadata) -> Result<SaveItem, StateApiError> {
    let options = parse_options(item.options.as_ref()).map_err(|source| StateApiError::Save { store: store.into(), source })?;
    let mut metadata: Metadata = item.metadata.unwrap_or_default();
    metadata.extend(query_md.iter().map(|(k, v)| (k.clone(), v.clone())));
    let value = encode_value(item.value.as_deref())
        .map_err(|e| StateApiError::Save { store: store.into(), source: StoreError::InvalidRequest(e) })?;
    Ok(SaveItem { key: item.key, value, is_json: true, etag: item.etag, metadata, options })
}

async fn save(State(s): State<HttpState>, Path(store): Path<String>, Query(q): Query<HashMap<String, String>>, body: Body) -> Response {
    // daprd looks the store up before reading the body.
    if let Err(e) = s.state.check_store(&store) {
        return err(&s, e);
    }
    let bytes = match read_body(body, s.max_body).await {
        Ok(b) => b,
        Err(e) => return ApiError::malformed(e.to_string()).into_response(),
    };
    let items: Vec<ItemJson> = match decode(&bytes, ApiError::malformed) {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    let query_md = query_metadata(&q);
    let mut reqs = Vec::with_capacity(items.len());
    for item in items {
        if item.key.is_empty() {
            return err(&s, StateApiError::EmptyKey);
        }
        match save_item(&store, item, &query_md) {
            Ok(r) => reqs.push(r),
            Err(e) => return err(&s, e),
        }
    }
    if reqs.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    match s.state.save(&store, reqs).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => err(&s, e),
    }
}

async fn get_state(State(s): State<HttpState>, Path((store, key)): Path<(String, String)>, Query(q): Query<HashMap<String, String>>) -> Response {
    let consistency = parse_consistency(q.get("consistency").map(String::as_str)).unwrap_or_default();
    match s.state.get(&store, &key, consistency, query_metadata(&q)).await {
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Ok(Some(item)) => {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if let Some(etag) = item.etag.as_deref().and_then(|e| HeaderValue::from_str(e).ok()) {
                headers.insert(header::ETAG, etag);
            }
            for (k, v) in &item.metadata {
                if let (Ok(name), Ok(value)) = (header::HeaderName::from_bytes(format!("metadata.{k}").as_bytes()), HeaderValue::from_str(v)) {
                    headers.insert(name, value);
                }
            }
            (StatusCode::OK, headers, item.data).into_response()
        }
        Err(e) => err(&s, e),
    }
}

async fn delete_state(
    State(s): State<HttpState>,
    Path((store, key)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let etag = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::to_string);
    let opts = OptionsJson { concurrency: q.get("concurrency").cloned(), consistency: q.get("consistency").cloned() };
    let options = match parse_options(Some(&opts)) {
        Ok(o) => o,
        Err(source) => return err(&s, StateApiError::Delete { key, source }),
    };
    let item = DeleteItem { key, etag, metadata: query_metadata(&q), options };
    match s.state.delete(&store, item).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => err(&s, e),
    }
}

#[derive(Deserialize)]
struct BulkJson {
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)] // reason: accepted for compatibility; stores read in bulk natively.
    parallelism: Option<i64>,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
}

/// Item data as JSON: embedded when it is JSON, else a JSON string (UTF-8) or base64 (binary).
/// daprd writes an empty body in the latter case; a readable value serves callers better.
pub(crate) fn data_json(data: &[u8]) -> Value {
    match serde_json::from_slice::<Value>(data) {
        Ok(v) => v,
        Err(_) => match std::str::from_utf8(data) {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => {
                use base64::Engine;
                Value::String(base64::engine::general_purpose::STANDARD.encode(data))
            }
        },
    }
}

async fn bulk_get(State(s): State<HttpState>, Path(store): Path<String>, Query(q): Query<HashMap<String, String>>, body: Body) -> Response {
    let bytes = match read_body(body, s.max_body).await {
        Ok(b) => b,
        Err(e) => return deserialize_error(e).into_response(),
    };
    let req: BulkJson = match decode(&bytes, deserialize_error) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let mut metadata: Metadata = req.metadata.unwrap_or_default();
    metadata.extend(query_metadata(&q));
    match s.state.bulk_get(&store, req.keys, metadata).await {
        Ok(items) => {
            let out: Vec<Value> = items
                .into_iter()
                .map(|i| {
                    let mut o = json!({ "key": i.key });
                    if let Some(e) = i.error {
                        o["error"] = Value::String(e);
                    }
                    if let Some(item) = i.item {
                        o["data"] = data_json(&item.data);
                        if let Some(etag) = item.etag {
                            o["etag"] = Value::String(etag);
                        }
                        if !item.metadata.is_empty() {
                            o["metadata"] = json!(item.metadata);
                        }
                    }
                    o
                })
                .collect();
            (StatusCode::OK, axum::Json(out)).into_response()
        }
        Err(e) => err(&s, e),
    }
}

#[derive(Deserialize)]
struct TxJson {
    #[serde(default)]
    operations: Vec<TxOpJson>,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
}

#[derive(Deserialize)]
struct TxOpJson {
    #[serde(default)]
    operation: String,
    request: ItemJson,
}

async fn transaction(State(s): State<HttpState>, Path(store): Path<String>, Query(q): Query<HashMap<String, String>>, body: Body) -> Response {
    if let Err(e) = s.state.check_transactional(&store) {
        return err(&s, e);
    }
    let bytes = match read_body(body, s.max_body).await {
        Ok(b) => b,
        Err(e) => return deserialize_error(e).into_response(),
    };
    let req: TxJson = match decode(&bytes, deserialize_error) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    // As daprd: the query string's metadata goes onto the transaction and onto every operation
    // (overriding the operation's own keys); the body's `metadata` onto the transaction only.
    let query_md = query_metadata(&q);
    let mut metadata: Metadata = req.metadata.unwrap_or_default();
    metadata.extend(query_md.clone());
    let mut ops = Vec::with_capacity(req.operations.len());
    for op in req.operations {
        let item_md = &query_md;
        let converted = match op.operation.as_str() {
            "upsert" => save_item(&store, op.request, item_md).map(TxOperation::Upsert),
            "delete" => parse_options(op.request.options.as_ref())
                .map_err(|source| StateApiError::Transaction { source })
                .map(|options| {
                    let mut md = op.request.metadata.unwrap_or_default();
                    md.extend(item_md.iter().map(|(k, v)| (k.clone(), v.clone())));
                    TxOperation::Delete(DeleteItem { key: op.request.key, etag: op.request.etag, metadata: md, options })
                }),
            other => Err(StateApiError::UnsupportedOperation(other.to_string())),
        };
        match converted {
            Ok(o) => ops.push(o),
            Err(StateApiError::Save { source, .. }) => return err(&s, StateApiError::Transaction { source }),
            Err(e) => return err(&s, e),
        }
    }
    match s.state.transact(&store, ops, metadata).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => err(&s, e),
    }
}

async fn query(State(s): State<HttpState>, Path(store): Path<String>, Query(q): Query<HashMap<String, String>>, body: Body) -> Response {
    let bytes = match read_body(body, s.max_body).await {
        Ok(b) => b,
        Err(e @ (BodyError::TooLarge | BodyError::Read(_))) => return body_read_error(e).into_response(),
    };
    match s.state.query(&store, &bytes, query_metadata(&q)).await {
        Ok(page) if page.results.is_empty() => StatusCode::NO_CONTENT.into_response(),
        Ok(page) => {
            let results: Vec<Value> = page
                .results
                .into_iter()
                .map(|r| {
                    let mut o = json!({ "key": r.key, "data": data_json(&r.data) });
                    if let Some(etag) = r.etag {
                        o["etag"] = Value::String(etag);
                    }
                    o
                })
                .collect();
            let mut out = json!({ "results": results });
            if let Some(t) = page.token {
                out["token"] = Value::String(t);
            }
            (StatusCode::OK, axum::Json(out)).into_response()
        }
        Err(e) => err(&s, e),
    }
}
