//! HTTP adapter of the secrets API: `GET /v1.0/secrets/{store}/{key}` and `/bulk`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::extract::query_metadata;
use super::HttpState;
use crate::api::errors::secrets::secrets_error;

/// The secrets routes.
pub fn routes() -> Router<HttpState> {
    Router::new().route("/v1.0/secrets/{store}/bulk", get(bulk)).route("/v1.0/secrets/{store}/{key}", get(one))
}

async fn one(State(s): State<HttpState>, Path((store, key)): Path<(String, String)>, Query(q): Query<HashMap<String, String>>) -> Response {
    match s.secrets.get(&store, &key, query_metadata(&q)).await {
        Ok(secret) => axum::Json(secret).into_response(),
        Err(e) => secrets_error(e).into_response(),
    }
}

async fn bulk(State(s): State<HttpState>, Path(store): Path<String>, Query(q): Query<HashMap<String, String>>) -> Response {
    match s.secrets.bulk_get(&store, query_metadata(&q)).await {
        Ok(all) => axum::Json(all).into_response(),
        Err(e) => secrets_error(e).into_response(),
    }
}
