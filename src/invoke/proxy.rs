//! `GrpcProxy`: daprd's transparent gRPC proxying. A call on the gRPC API port for a method the
//! sidecar does not serve, carrying metadata `dapr-app-id: <id>`, is forwarded as it is (HTTP/2
//! request, frames, trailers; nothing decoded) to the app with that id.
//!
//! ```text
//! client -> API port (unknown method, dapr-app-id: b) -> forward()
//!   id == own id : -> this app's gRPC server
//!   otherwise    : nameres -> sidecar b's internal port (+ dapr-caller-app-id, dapr-callee-app-id)
//!                  -> deliver() -> app b's gRPC server
//! ```
//! Forwarding the `http::Request` itself over a tonic `Channel` keeps every streaming mode
//! (unary, client, server, bidi) working with no codec: the body is passed through frame by frame
//! in both directions, and the answer's trailers (`grpc-status`) come back untouched.

use std::sync::Arc;

use axum::body::Body;
use http::{HeaderMap, HeaderValue, Request, Response};
use tonic::transport::Channel;
use tower::ServiceExt;

use super::message::{CALLEE, CALLER};
use super::nameres::SqliteNameResolver;
use super::remote::RemoteInvoker;
use super::InvokeError;

/// The metadata key naming the target app.
pub const APP_ID: &str = "dapr-app-id";

/// Headers that never cross a hop (HTTP/2 forbids the connection-specific ones anyway).
const HOP_BY_HOP: &[&str] = &["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host"];

/// Why a call could not be proxied (the target's own statuses travel in its answer instead).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    /// The target could not be resolved (unknown or malformed id, resolver failure).
    #[error("{0}")]
    Resolve(InvokeError),
    /// The target is this app, but it has no gRPC channel (`--app-protocol grpc` with `--app-port`).
    #[error("cannot invoke local endpoint: app channel not initialized")]
    NoAppChannel,
    /// The app or the target sidecar could not be reached.
    #[error("{0}")]
    Unreachable(String),
    /// The internal port received a call for an app this sidecar does not serve.
    #[error("failed to proxy request: app {0} is not served by this sidecar")]
    WrongTarget(String),
}

/// Forwards `dapr-app-id` calls; one per sidecar.
pub struct GrpcProxy {
    app_id: Arc<str>,
    app: Option<Channel>,
    resolver: Option<Arc<SqliteNameResolver>>,
    remote: Arc<RemoteInvoker>,
    app_token: Option<HeaderValue>,
}

/// The app id a request names, if any.
pub fn target_of(headers: &HeaderMap) -> Option<&str> {
    headers.get(APP_ID).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty())
}

impl GrpcProxy {
    /// A proxy for the sidecar of `app_id`; `app_grpc` is `host:port` of a gRPC app (connected
    /// lazily), `app_token` the `APP_API_TOKEN` sent to it.
    pub fn new(app_id: &str, app_grpc: Option<String>, resolver: Option<Arc<SqliteNameResolver>>, remote: Arc<RemoteInvoker>, app_token: Option<String>) -> Self {
        let app = app_grpc.and_then(|a| Channel::from_shared(format!("http://{a}")).ok()).map(|e| e.tcp_nodelay(true).connect_lazy());
        let app_token = app_token.filter(|t| !t.is_empty()).and_then(|t| HeaderValue::from_str(&t).ok());
        Self { app_id: Arc::from(app_id), app, resolver, remote, app_token }
    }

    /// API port: forwards a call that names an app in `dapr-app-id` (the caller checks it is
    /// there). The caller's `dapr-api-token` (this sidecar's secret) never travels.
    pub async fn forward(&self, mut req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let id = target_of(req.headers()).unwrap_or_default().to_string();
        let target = app_id_of(&id).map_err(ProxyError::Resolve)?;
        let h = req.headers_mut();
        h.remove("dapr-api-token");
        h.remove(CALLER);
        h.remove(CALLEE);
        if target == *self.app_id {
            return self.to_app(req).await;
        }
        let resolver = self.resolver.as_ref().ok_or_else(|| ProxyError::Resolve(InvokeError::Resolver("name resolution is not available".into())))?;
        let addr = resolver.resolve(&target).await.map_err(ProxyError::Resolve)?;
        let channel = self.remote.channel(&addr).await.map_err(|e| ProxyError::Unreachable(e.to_string()))?;
        let h = req.headers_mut();
        for (k, v) in [(CALLER, &*self.app_id), (CALLEE, target.as_str())] {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(k, v);
            }
        }
        send(channel, req).await.inspect_err(|_| self.remote.evict(&addr))
    }

    /// Internal port: delivers a call another sidecar proxied here to this sidecar's app.
    pub async fn deliver(&self, req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let id = target_of(req.headers()).unwrap_or_default();
        let target = app_id_of(id).map_err(ProxyError::Resolve)?;
        if target != *self.app_id {
            return Err(ProxyError::WrongTarget(id.to_string()));
        }
        self.to_app(req).await
    }

    async fn to_app(&self, mut req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let channel = self.app.clone().ok_or(ProxyError::NoAppChannel)?;
        if let Some(t) = &self.app_token {
            req.headers_mut().insert("dapr-api-token", t.clone());
        }
        send(channel, req).await
    }
}

/// `id` or `id.namespace` to the id (namespaces are not modelled yet, as in `InvokeApi`).
fn app_id_of(id: &str) -> Result<String, InvokeError> {
    let parts: Vec<&str> = id.split('.').collect();
    if parts.len() > 2 || parts[0].is_empty() {
        return Err(InvokeError::InvalidAppId(id.to_string()));
    }
    Ok(parts[0].to_string())
}

/// Sends the request as it is over `channel` (which sets scheme and authority) and streams the
/// answer back.
async fn send(channel: Channel, req: Request<Body>) -> Result<Response<Body>, ProxyError> {
    let (mut parts, body) = req.into_parts();
    for h in HOP_BY_HOP {
        parts.headers.remove(*h);
    }
    let req = Request::from_parts(parts, tonic::body::Body::new(body));
    let resp = channel.oneshot(req).await.map_err(|e| {
        let cause = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
        ProxyError::Unreachable(format!("connection error: {e}{cause}"))
    })?;
    Ok(resp.map(Body::new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(app_id_of("a").unwrap(), "a");
        assert_eq!(app_id_of("a.ns").unwrap(), "a");
        assert!(app_id_of("a.b.c").is_err());
        assert!(app_id_of("").is_err());
        let mut h = HeaderMap::new();
        assert_eq!(target_of(&h), None);
        h.insert(APP_ID, HeaderValue::from_static("b"));
        assert_eq!(target_of(&h), Some("b"));
    }
}
