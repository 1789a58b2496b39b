//! `GrpcProxy`: daprd's transparent gRPC proxying. A call on the gRPC API port for a method the
//! sidecar does not serve, carrying metadata `dapr-app-id: <id>`, is forwarded as it is (HTTP/2
//! request, frames, trailers; nothing decoded) to the app with that id.
//!
//! ```text
//! client -> API port (unknown method, dapr-app-id: b) -> forward()
//!   id == own id : -> this app's gRPC server (plain or TLS: `--app-protocol grpc|grpcs`)
//!   otherwise    : nameres -> sidecar b's internal port (+ dapr-caller-app-id, dapr-callee-app-id)
//!                  -> deliver() -> app b's gRPC server
//! ```
//! Forwarding the `http::Request` itself over a tonic `Channel` keeps every streaming mode
//! (unary, client, server, bidi) working with no codec: the body is passed through frame by frame
//! in both directions, and the answer's trailers (`grpc-status`) come back untouched.
//!
//! Resiliency (`proxy/policy.rs`): a call for another app runs under that app's `targets.apps`
//! policy for the endpoint `<id>:<grpc path>` (its own circuit breaker), as daprd's proxy
//! handler does; a failed connection is retried once at once, never more, outside a policy. A call for this sidecar's own app never does (daprd's
//! policy lookup gives local targets none), so the callee's sidecar does not apply it again.
//!
//! Metrics, as daprd's proxy handler records them on both sidecars: each attempt counts in
//! `dapr_runtime_service_invocation_req_sent_total` (`type` unary, or streaming with
//! `dapr-stream: true`); a unary call's end, or a stream that could not be opened, counts in
//! `res_recv_total` with the gRPC code as `status`. A call that could not be routed (unknown app,
//! no app channel) counts in neither.

mod buffer;
mod policy;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use http::{HeaderMap, HeaderValue, Request, Response};
use tonic::transport::Channel;
use tower::ServiceExt;

use super::message::{CALLEE, CALLER};
use super::nameres::SqliteNameResolver;
use super::remote::RemoteInvoker;
use super::InvokeError;
use crate::resiliency::Resiliency;
use crate::runtime::metrics::{watch_grpc_status, Metrics};

/// The metadata key naming the target app.
pub const APP_ID: &str = "dapr-app-id";

/// Headers that never cross a hop (HTTP/2 forbids the connection-specific ones anyway).
const HOP_BY_HOP: &[&str] = &["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host"];

/// gRPC UNAVAILABLE: what a call that found no connection reports in metrics and retry matching.
const UNAVAILABLE: i32 = 14;

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
    /// The resiliency policy's timeout ended the call (Go's context error, as daprd reports it).
    #[error("context deadline exceeded")]
    DeadlineExceeded,
    /// The target's circuit breaker refused the call (`circuit breaker is open`, `too many requests`).
    #[error("{0}")]
    Breaker(String),
    /// Retries replay the call's one message: a call sending more must say `dapr-stream: true`.
    #[error("cannot use resiliency policies with retries on streaming RPCs")]
    RetryOnStream,
    /// A message over `--max-body-size` (grpc-go's words; `verb` says which way it went).
    #[error("grpc: {verb} message larger than max ({size} vs. {max})")]
    TooLarge { verb: &'static str, size: usize, max: usize },
}

/// What a `GrpcProxy` is built from.
pub struct ProxySetup {
    /// This sidecar's app id.
    pub app_id: String,
    /// A channel to this sidecar's gRPC app (`AppTransport::grpc_channel`: plain or TLS).
    pub app: Option<Channel>,
    /// Name resolution, to find other sidecars.
    pub resolver: Option<Arc<SqliteNameResolver>>,
    /// Connections to other sidecars.
    pub remote: Arc<RemoteInvoker>,
    /// `APP_API_TOKEN`, sent to the app as `dapr-api-token`.
    pub app_token: Option<String>,
    /// Policies for `targets.apps`.
    pub resiliency: Resiliency,
    /// Where calls are counted.
    pub metrics: Metrics,
    /// `--max-body-size`: the most a policy-governed call buffers per message.
    pub max_message: usize,
}

/// Forwards `dapr-app-id` calls; one per sidecar.
pub struct GrpcProxy {
    app_id: Arc<str>,
    app: Option<Channel>,
    resolver: Option<Arc<SqliteNameResolver>>,
    remote: Arc<RemoteInvoker>,
    app_token: Option<HeaderValue>,
    resiliency: Resiliency,
    metrics: Option<Metrics>,
    max_message: usize,
}

/// Where a call goes once its target is known.
enum Route {
    /// This sidecar's app.
    App(Channel),
    /// Another sidecar's internal port.
    Remote { addr: String, channel: super::peer::PeerConn },
}

/// The app id a request names, if any.
pub fn target_of(headers: &HeaderMap) -> Option<&str> {
    headers.get(APP_ID).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty())
}

impl GrpcProxy {
    /// A proxy for the sidecar of `setup.app_id` (its app channel connects lazily).
    pub fn new(setup: ProxySetup) -> Self {
        let app_token = setup.app_token.filter(|t| !t.is_empty()).and_then(|t| HeaderValue::from_str(&t).ok());
        Self {
            app_id: Arc::from(setup.app_id),
            app: setup.app,
            resolver: setup.resolver,
            remote: setup.remote,
            app_token,
            resiliency: setup.resiliency,
            metrics: Some(setup.metrics).filter(Metrics::enabled),
            max_message: setup.max_message,
        }
    }

    /// API port: forwards a call that names an app in `dapr-app-id` (the caller checks it is
    /// there). The caller's `dapr-api-token` (this sidecar's secret) never travels.
    pub async fn forward(&self, mut req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let id = target_of(req.headers()).unwrap_or_default().to_string();
        let target = app_id_of(&id).map_err(ProxyError::Resolve)?;
        let streaming = policy::is_stream(req.headers());
        let h = req.headers_mut();
        h.remove("dapr-api-token");
        h.remove(CALLER);
        h.remove(CALLEE);
        if target == *self.app_id {
            let route = self.route(&target).await?;
            return self.observed(&id, streaming, &route, req).await;
        }
        let h = req.headers_mut();
        for (k, v) in [(CALLER, &*self.app_id), (CALLEE, target.as_str())] {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(k, v);
            }
        }
        let method = req.uri().path().to_string();
        let policy = self.resiliency.for_endpoint(&id, &format!("{id}:{method}"));
        if policy.is_noop() {
            let route = self.route(&target).await?;
            return self.observed(&id, streaming, &route, req).await;
        }
        if streaming {
            self.stream_under(&policy, &id, &target, req).await
        } else {
            self.unary_under(&policy, &id, &target, req).await
        }
    }

    /// Internal port: delivers a call another sidecar proxied here to this sidecar's app.
    pub async fn deliver(&self, req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let id = target_of(req.headers()).unwrap_or_default().to_string();
        let target = app_id_of(&id).map_err(ProxyError::Resolve)?;
        if target != *self.app_id {
            return Err(ProxyError::WrongTarget(id));
        }
        let route = self.route(&target).await?;
        self.observed(&id, policy::is_stream(req.headers()), &route, req).await
    }

    /// Finds the target: this sidecar's app, or another sidecar (connected).
    async fn route(&self, target: &str) -> Result<Route, ProxyError> {
        if *target == *self.app_id {
            return self.app.clone().map(Route::App).ok_or(ProxyError::NoAppChannel);
        }
        let resolver = self.resolver.as_ref().ok_or_else(|| ProxyError::Resolve(InvokeError::Resolver("name resolution is not available".into())))?;
        let addr = resolver.resolve(target).await.map_err(ProxyError::Resolve)?;
        // One connection attempt and, when it fails, one reconnection, as daprd's proxy handler
        // does; anything more is the resiliency policy's to decide.
        let channel = match self.remote.channel(&addr).await {
            Ok(c) => c,
            Err(_) => self.remote.channel(&addr).await.map_err(|e| ProxyError::Unreachable(e.to_string()))?,
        };
        Ok(Route::Remote { addr, channel })
    }

    /// Sends `req` along `route`: the app gets `APP_API_TOKEN`; a failed sidecar connection is
    /// dropped so the next call reconnects.
    async fn send_via(&self, route: &Route, mut req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        match route {
            Route::App(channel) => {
                if let Some(t) = &self.app_token {
                    req.headers_mut().insert("dapr-api-token", t.clone());
                }
                send(channel.clone(), req).await
            }
            Route::Remote { addr, channel } => send(channel.clone(), req).await.inspect_err(|_| self.remote.evict(addr)),
        }
    }

    /// Sends once, outside any policy, counting the call (see the module header).
    async fn observed(&self, id: &str, streaming: bool, route: &Route, req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let Some(m) = self.metrics.clone() else { return self.send_via(route, req).await };
        let started = Instant::now();
        m.invoke_sent(id, streaming);
        match self.send_via(route, req).await {
            Err(e) => {
                m.proxy_answered(id, streaming, UNAVAILABLE, started);
                Err(e)
            }
            Ok(resp) if streaming => Ok(resp),
            Ok(resp) => {
                let id = id.to_string();
                Ok(watch_grpc_status(resp, move |code| m.proxy_answered(&id, false, code, started)))
            }
        }
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

/// Sends the request as it is over `channel` (which sets scheme and authority: a tonic
/// `Channel` to the app, or a peer sidecar's connection) and streams the answer back.
async fn send<S, B>(channel: S, req: Request<Body>) -> Result<Response<Body>, ProxyError>
where
    S: tower::Service<Request<tonic::body::Body>, Response = Response<B>>,
    S::Error: std::error::Error,
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
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
