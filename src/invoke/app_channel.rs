//! `AppChannel`: how the sidecar reaches its own app: HTTP/1.1, h2c, or gRPC (`AppCallback`),
//! the HTTP/1.1 and gRPC ones optionally over TLS (`https`, `grpcs`; the app's certificate is not
//! checked, as daprd does not: see `tls.rs`).
//!
//! Honours `--app-max-concurrency` by queueing (as daprd; never a 429) and sends `APP_API_TOKEN`
//! as `dapr-api-token`. Bodies stream through: the app reads the caller's bytes as they arrive.
//! With `--enable-app-health-check`, calls fail with daprd's "app is not in a healthy state"
//! while `AppHealthMonitor` reports the app unhealthy.

use std::sync::Arc;

use axum::body::Body;
use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt;
use rapr_proto::common::v1 as common;
use tokio::sync::Semaphore;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};

use super::app_health::{AppHealthHandle, APP_UNHEALTHY};
use super::grpc_answer::GrpcAnswer;
use super::message::{verb_to_proto, CallMeta};
use super::tls::{Alpn, HttpClient};
use super::InvokeError;

/// The `AppCallback` method every gRPC invocation of the app goes through (its metrics label).
const ON_INVOKE: &str = "/dapr.proto.runtime.v1.AppCallback/OnInvoke";

/// How the app speaks, whatever carries it (see [`AppTransport`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppProtocol {
    /// HTTP/1.1.
    Http,
    /// HTTP/2 without TLS.
    H2c,
    /// gRPC (`AppCallback`).
    Grpc,
}

/// `--app-protocol`: the protocol, and whether it runs over TLS. Kept apart so that code which
/// only cares how to talk to the app (gRPC or HTTP) never has to know about TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppTransport {
    /// What the app speaks.
    pub protocol: AppProtocol,
    /// `https` or `grpcs`.
    pub tls: bool,
}

impl AppTransport {
    /// Parses `--app-protocol`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (protocol, tls) = match s.to_ascii_lowercase().as_str() {
            "" | "http" => (AppProtocol::Http, false),
            "https" => (AppProtocol::Http, true),
            "h2c" => (AppProtocol::H2c, false),
            "grpc" => (AppProtocol::Grpc, false),
            "grpcs" => (AppProtocol::Grpc, true),
            other => return Err(format!("invalid --app-protocol {other:?}: use http, grpc, https, grpcs or h2c")),
        };
        Ok(Self { protocol, tls })
    }

    /// An HTTP client for the app: plain, or TLS accepting the app's certificate.
    pub fn http_client(self) -> Result<HttpClient, super::tls::TlsError> {
        Ok(if self.tls { HttpClient::tls(super::tls::app_config()?, Alpn::Http1) } else { HttpClient::plain(self.protocol == AppProtocol::H2c) })
    }

    /// A lazily connecting gRPC channel to the app at `authority`.
    pub fn grpc_channel(self, authority: &str) -> Result<Channel, String> {
        if !self.tls {
            return Ok(Channel::from_shared(format!("http://{authority}")).map_err(|e| e.to_string())?.connect_lazy());
        }
        let tls = super::tls::connector(super::tls::app_config().map_err(|e| e.to_string())?, Alpn::H2);
        // tonic refuses an `https://` endpoint it does not secure itself (its own TLS feature is
        // on, for the OTLP exporter), so the endpoint says `http://` and this connector, which
        // does the TLS, hands the `https` scheme its inner connector requires.
        let connector = tower::service_fn(move |uri: http::Uri| {
            let mut tls = tls.clone();
            async move {
                let mut parts = uri.into_parts();
                parts.scheme = Some(http::uri::Scheme::HTTPS);
                let uri = http::Uri::from_parts(parts).map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
                tower::Service::call(&mut tls, uri).await
            }
        });
        Ok(Endpoint::from_shared(format!("http://{authority}")).map_err(|e| e.to_string())?.connect_with_connector_lazy(connector))
    }
}

/// The channel to the local app.
pub struct AppChannel {
    protocol: AppProtocol,
    /// `scheme://host:port`, the prefix of every HTTP call's URL.
    base: String,
    http: HttpClient,
    /// A plain `http` app's own keep-alive connections; `None` for `https` and `h2c`, which go
    /// through `http`.
    http1: Option<super::app_conns::AppConnections>,
    grpc: Option<Channel>,
    /// A plain gRPC app's own HTTP/2 connection for invocations (no `tower::Buffer` task hop per
    /// call, as `peer.rs` explains); `None` for `grpcs`, which goes through `grpc`.
    grpc_direct: Option<super::peer::LazyPeer>,
    token: Option<HeaderValue>,
    limit: Option<Arc<Semaphore>>,
    health: Option<AppHealthHandle>,
    metrics: Option<crate::runtime::metrics::Metrics>,
}

impl AppChannel {
    /// A channel to `address:port` (connections are made lazily).
    pub fn new(transport: AppTransport, address: &str, port: u16, max_concurrency: i32, token: Option<String>) -> Result<Self, InvokeError> {
        let protocol = transport.protocol;
        let authority = format!("{address}:{port}");
        let http = transport.http_client().map_err(|e| InvokeError::InvalidRequest(format!("app channel: {e}")))?;
        let base = format!("{}://{authority}", http.scheme());
        let grpc = if protocol == AppProtocol::Grpc {
            Some(transport.grpc_channel(&authority).map_err(InvokeError::InvalidRequest)?)
        } else {
            None
        };
        let grpc_direct = (protocol == AppProtocol::Grpc && !transport.tls).then(|| super::peer::LazyPeer::new(authority.clone()));
        let http1 = (protocol == AppProtocol::Http && !transport.tls).then(|| super::app_conns::AppConnections::new(authority.clone()));
        let limit = (max_concurrency > 0).then(|| Arc::new(Semaphore::new(max_concurrency as usize)));
        let token = token.filter(|t| !t.is_empty()).and_then(|t| HeaderValue::from_str(&t).ok());
        Ok(Self { protocol, base, http, http1, grpc, grpc_direct, token, limit, health: None, metrics: None })
    }

    /// Counts calls to the app in `metrics` (`dapr_http_client_*`; `dapr_grpc_io_client_*` for a
    /// gRPC app, as daprd's app channel client does).
    pub fn with_metrics(mut self, metrics: crate::runtime::metrics::Metrics) -> Self {
        self.metrics = Some(metrics).filter(crate::runtime::metrics::Metrics::enabled);
        self
    }

    /// Gates calls on the app's health as `AppHealthMonitor` publishes it.
    pub fn with_health(mut self, health: AppHealthHandle) -> Self {
        self.health = Some(health);
        self
    }

    /// `Err` (daprd's text) while the app is known to be unhealthy.
    pub fn ensure_healthy(&self) -> Result<(), InvokeError> {
        match &self.health {
            Some(h) if !h.is_healthy() => Err(InvokeError::App(APP_UNHEALTHY.into())),
            _ => Ok(()),
        }
    }

    /// The app's protocol (`Grpc` for `grpcs` too: TLS is this channel's business only).
    pub fn protocol(&self) -> AppProtocol {
        self.protocol
    }

    /// What another `AppCallback` method (pub/sub's `OnTopicEvent`) needs to call a gRPC app as
    /// invocations do: the channel, the app token, and a permit of `--app-max-concurrency`
    /// (held until the call ends). `None` for an HTTP app.
    pub async fn grpc_call(&self) -> Option<(Channel, Option<HeaderValue>, Option<tokio::sync::OwnedSemaphorePermit>)> {
        let channel = self.grpc.clone()?;
        Some((channel, self.token.clone(), self.permit().await))
    }

    async fn permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        match &self.limit {
            Some(s) => Arc::clone(s).acquire_owned().await.ok(),
            None => None,
        }
    }

    /// Calls an HTTP app; the response body streams back. For a gRPC app, the body is collected
    /// and sent as `AppCallback.OnInvoke`, and the answer converted to HTTP.
    pub async fn call_http(&self, meta: &CallMeta, body: Body) -> Result<Response<Body>, InvokeError> {
        self.ensure_healthy()?;
        if self.protocol == AppProtocol::Grpc {
            return self.call_grpc_as_http(meta, body).await;
        }
        let permit = self.permit().await;
        let path = meta.path_and_query();
        // The own connections take the origin-form URI hyper writes; the pooled client wants it
        // absolute (it picks a connection by scheme and authority).
        let uri = if self.http1.is_some() { path } else { format!("{}{path}", self.base) };
        let mut req = Request::builder().method(meta.verb.clone()).uri(uri).body(body).map_err(|e| InvokeError::InvalidRequest(e.to_string()))?;
        *req.headers_mut() = meta.app_headers();
        if let Some(t) = &self.token {
            req.headers_mut().insert("dapr-api-token", t.clone());
        }
        let sent = content_length(req.headers()).unwrap_or(0);
        let started = std::time::Instant::now();
        let resp = match &self.http1 {
            Some(conns) => conns.send(req, permit).await.map_err(|e| e.to_string()),
            None => match self.http.request(req).await {
                Ok(resp) => {
                    let (parts, incoming) = resp.into_parts();
                    // The permit lives until the app's body is fully read; the body's known
                    // length stays known (a small answer then rides in the internal reply's
                    // lead frame).
                    Ok(Response::from_parts(parts, Body::new(HoldPermit { inner: incoming.map_err(axum::Error::new), _permit: permit })))
                }
                Err(e) => Err(super::tls::error_chain(&e)),
            },
        };
        if let Some(m) = &self.metrics {
            let (status, received) = resp.as_ref().ok().map_or((None, None), |r| (Some(r.status().as_u16()), content_length(r.headers())));
            m.app_http_call(meta.verb.as_str(), &format!("/{}", meta.method.trim_start_matches('/')), status, (sent, received), started);
        }
        resp.map_err(|e| InvokeError::App(format!("error invoking app channel: {e}")))
    }

    async fn call_grpc_as_http(&self, meta: &CallMeta, body: Body) -> Result<Response<Body>, InvokeError> {
        let data = body.collect().await.map_err(|e| InvokeError::InvalidRequest(e.to_string()))?.to_bytes();
        let req = common::InvokeRequest {
            method: meta.method.clone(),
            data: Some(prost_types::Any { type_url: String::new(), value: data.to_vec() }),
            content_type: meta.content_type.clone().unwrap_or_default(),
            http_extension: Some(common::HttpExtension { verb: verb_to_proto(&meta.verb) as i32, querystring: meta.query.clone() }),
        };
        Ok(self.call_grpc(req, meta).await.into_http())
    }

    /// Calls `AppCallback.OnInvoke` on a gRPC app with the call's headers as metadata. The answer
    /// keeps the app's headers and trailers apart (as grpc-go's `Header`/`Trailer` options do), so
    /// the call is made as a one-message stream: tonic's unary helper merges the two.
    pub async fn call_grpc(&self, req: common::InvokeRequest, meta: &CallMeta) -> GrpcAnswer {
        let failed = |s: tonic::Status| GrpcAnswer { result: Err(s), headers: MetadataMap::new(), trailers: MetadataMap::new() };
        let Some(channel) = &self.grpc else {
            return failed(tonic::Status::internal("the app does not speak gRPC"));
        };
        if let Err(e) = self.ensure_healthy() {
            return failed(tonic::Status::internal(e.to_string()));
        }
        let _permit = self.permit().await;
        let sent = prost::Message::encoded_len(&req) as u64;
        let mut request = tonic::Request::new(futures::stream::once(std::future::ready(req)));
        for (k, v) in &meta.headers {
            if let (Ok(key), Ok(val)) = (tonic::metadata::MetadataKey::from_bytes(super::message::grpc_metadata_key(k).as_bytes()), v.parse()) {
                request.metadata_mut().append(key, val);
            }
        }
        // daprd sends the trace context to a gRPC app twice: `traceparent` and `grpc-trace-bin`.
        let binary = meta.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("traceparent")).and_then(|(_, v)| crate::runtime::trace_context::parse_traceparent(v)).and_then(|sc| crate::runtime::trace_context::to_binary(&sc));
        if let Some(b) = binary {
            request.metadata_mut().insert_bin(crate::runtime::trace_context::GRPC_TRACE_BIN, tonic::metadata::MetadataValue::from_bytes(&b));
        }
        if let Some(t) = self.token.as_ref().and_then(|t| t.to_str().ok()).and_then(|t| t.parse().ok()) {
            request.metadata_mut().insert("dapr-api-token", t);
        }
        let started = std::time::Instant::now();
        let answer = match &self.grpc_direct {
            Some(direct) => match direct.get().await {
                Ok(conn) => on_invoke(conn, request).await,
                Err(e) => failed(tonic::Status::unavailable(format!("error connecting to the app: {e}"))),
            },
            None => on_invoke(channel.clone(), request).await,
        };
        if let Some(m) = &self.metrics {
            let received = answer.result.as_ref().map_or(0, |r| prost::Message::encoded_len(r) as u64);
            m.app_grpc_call(ON_INVOKE, answer.result.as_ref().err().map_or(tonic::Code::Ok, tonic::Status::code), started, Some((sent, received)));
        }
        answer
    }
}

/// The app's response body holding an `--app-max-concurrency` permit until it is dropped. Unlike
/// `map_frame` (whose size hint is always unknown), it passes the body's size hint and end
/// through: the internal reply sends a small answer of known length in its lead frame, and the
/// caller's sidecar then needs no task to drain the stream.
struct HoldPermit<B> {
    inner: B,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for HoldPermit<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A `Content-Length` header's value (for the metrics' byte counts).
fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// One `OnInvoke` call: headers, the one message, then the trailers.
async fn on_invoke<T>(channel: T, request: tonic::Request<impl futures::Stream<Item = common::InvokeRequest> + Send + 'static>) -> GrpcAnswer
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display,
    T::ResponseBody: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(usize::MAX).max_encoding_message_size(usize::MAX);
    let failed = |s: tonic::Status| {
        // A trailers-only answer: its metadata are the app's trailers.
        let trailers = s.metadata().clone();
        GrpcAnswer { result: Err(s), headers: MetadataMap::new(), trailers }
    };
    if let Err(e) = grpc.ready().await {
        return failed(tonic::Status::unavailable(format!("error connecting to the app: {e}")));
    }
    let codec = tonic_prost::ProstCodec::<common::InvokeRequest, common::InvokeResponse>::default();
    let resp = match grpc.streaming(request, http::uri::PathAndQuery::from_static(ON_INVOKE), codec).await {
        Ok(r) => r,
        Err(s) => return failed(s),
    };
    let headers = resp.metadata().clone();
    let mut stream = resp.into_inner();
    let result = match stream.message().await {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(tonic::Status::internal("the app answered no message")),
        Err(s) => {
            let trailers = s.metadata().clone();
            return GrpcAnswer { result: Err(s), headers, trailers };
        }
    };
    let trailers = match stream.trailers().await {
        Ok(t) => t.unwrap_or_default(),
        Err(s) => return GrpcAnswer { result: Err(s), headers, trailers: MetadataMap::new() },
    };
    GrpcAnswer { result, headers, trailers }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_permit_is_held_and_the_known_length_kept() {
        use hyper::body::Body as _;
        let sem = Arc::new(Semaphore::new(1));
        let permit = Arc::clone(&sem).try_acquire_owned().ok();
        let inner = http_body_util::Full::new(bytes::Bytes::from_static(b"12345")).map_err(axum::Error::new);
        let body = HoldPermit { inner, _permit: permit };
        assert_eq!(body.size_hint().exact(), Some(5), "map_frame would have made it unknown");
        assert_eq!(sem.available_permits(), 0);
        drop(body);
        assert_eq!(sem.available_permits(), 1, "released with the body");
    }

    #[test]
    fn app_protocol_flag_splits_protocol_and_tls() {
        let t = |protocol, tls| Ok(AppTransport { protocol, tls });
        assert_eq!(AppTransport::parse(""), t(AppProtocol::Http, false));
        assert_eq!(AppTransport::parse("HTTPS"), t(AppProtocol::Http, true));
        assert_eq!(AppTransport::parse("grpcs"), t(AppProtocol::Grpc, true));
        assert_eq!(AppTransport::parse("grpc"), t(AppProtocol::Grpc, false));
        assert_eq!(AppTransport::parse("h2c"), t(AppProtocol::H2c, false));
        assert!(AppTransport::parse("spdy").is_err());
    }
}
