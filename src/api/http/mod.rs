//! The HTTP API (axum): routers assembled from one small function per building block.
//!
//! `router(state)` is public so tests can drive it without a socket (`oneshot`). Handlers call
//! the facades directly; no request waits in a shared mailbox.

pub mod auth;
pub mod extract;
pub mod invoke;
pub mod metadata;
pub mod pubsub;
pub mod secrets;
pub mod state;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;

use crate::api::Facades;
use crate::runtime::shutdown::ShutdownHandle;

/// What HTTP handlers share: the facades and request limits.
#[derive(Clone)]
pub struct HttpState(std::sync::Arc<HttpShared>);

impl HttpState {
    /// Shares `inner` between every request (axum and tonic clone the state per request; one
    /// `Arc` makes that a reference count instead of a copy of every facade).
    pub fn new(inner: HttpShared) -> Self {
        Self(std::sync::Arc::new(inner))
    }
}

impl std::ops::Deref for HttpState {
    type Target = HttpShared;
    fn deref(&self) -> &HttpShared {
        &self.0
    }
}

/// The facades and limits behind [`HttpState`].
pub struct HttpShared {
    /// Every building block's facade (handlers reach them through `Deref`: `s.state`).
    pub facades: Facades,
    /// Shutdown trigger.
    pub shutdown: ShutdownHandle,
    /// App id (error metadata).
    pub app_id: Arc<str>,
    /// Largest accepted body.
    pub max_body: usize,
    /// `DAPR_API_TOKEN`, when set.
    pub api_token: Option<Arc<str>>,
}

impl std::ops::Deref for HttpShared {
    type Target = Facades;
    fn deref(&self) -> &Facades {
        &self.facades
    }
}

/// The public server's router (`--dapr-public-port`): health and metadata only, without the
/// API token check, as daprd's public server (its chi router has no auth middleware).
pub fn public_router(state: HttpState) -> Router {
    Router::new().merge(metadata::public_routes()).with_state(state)
}

/// CORS of the HTTP API (`--allowed-origins`), as daprd's `useCors`: none for the default empty
/// value; `*` allows any origin; else the listed origins, with daprd's methods and any header.
pub fn cors(allowed: &str) -> Option<tower_http::cors::CorsLayer> {
    use http::Method;
    use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
    let allowed = allowed.trim();
    if allowed.is_empty() {
        return None;
    }
    let methods = [Method::HEAD, Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];
    let origin = if allowed == "*" {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(allowed.split(',').map(str::trim).filter(|o| !o.is_empty()).filter_map(|o| http::HeaderValue::from_str(o).ok()))
    };
    Some(CorsLayer::new().allow_origin(origin).allow_methods(methods).allow_headers(AllowHeaders::mirror_request()))
}

/// The full HTTP router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .merge(state::routes())
        .merge(metadata::routes())
        .merge(secrets::routes())
        .merge(pubsub::routes())
        .merge(invoke::routes())
        .fallback(invoke::fallback)
        // Bodies are read under `max_body` by each handler, with daprd's per-route error.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token))
        .with_state(state)
}
