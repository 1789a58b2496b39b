//! The HTTP API (axum): routers assembled from one small function per building block.
//!
//! `router(state)` is public so tests can drive it without a socket (`oneshot`). Handlers call
//! the facades directly; no request waits in a shared mailbox.

pub mod auth;
pub mod extract;
pub mod metadata;
pub mod secrets;
pub mod state;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::Router;
use http::StatusCode;

use crate::api::errors::{codes, ApiError};
use crate::api::metadata::MetadataApi;
use crate::api::secrets::SecretsApi;
use crate::api::state::StateApi;
use crate::runtime::shutdown::ShutdownHandle;

/// What HTTP handlers share: the facades and request limits.
#[derive(Clone)]
pub struct HttpState {
    /// State facade.
    pub state: StateApi,
    /// Metadata and health facade.
    pub metadata: MetadataApi,
    /// Secrets facade.
    pub secrets: SecretsApi,
    /// Shutdown trigger.
    pub shutdown: ShutdownHandle,
    /// App id (error metadata).
    pub app_id: Arc<str>,
    /// Largest accepted body.
    pub max_body: usize,
    /// `DAPR_API_TOKEN`, when set.
    pub api_token: Option<Arc<str>>,
}

/// The full HTTP router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .merge(state::routes())
        .merge(metadata::routes())
        .merge(secrets::routes())
        .fallback(not_found)
        // Bodies are read under `max_body` by each handler, with daprd's per-route error.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token))
        .with_state(state)
}

async fn not_found(uri: http::Uri) -> axum::response::Response {
    ApiError::new(StatusCode::NOT_FOUND, tonic::Code::NotFound, codes::ERR_DIRECT_INVOKE, format!("method {:?} is not found", uri.path()))
        .into_response()
}
