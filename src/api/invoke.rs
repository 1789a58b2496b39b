//! `InvokeApi`: the transport-free service invocation facade shared by the HTTP route, the
//! `dapr-app-id` fallback and gRPC `InvokeService`.
//!
//! A call to this sidecar's own app id goes straight to the local app channel; any other id is
//! resolved to its sidecar's internal address and sent over the internal protocol. Resiliency
//! (endpoint policies, daprd's built-in service retries) is in `resilient.rs`.

mod resilient;

use std::sync::Arc;

use axum::body::Body;
use http::{HeaderMap, Method, Response};
use rapr_proto::common::v1 as common;
use rapr_proto::internals::v1 as internals;

use crate::invoke::app_channel::AppChannel;
use crate::invoke::message::CallMeta;
use crate::invoke::nameres::SqliteNameResolver;
use crate::invoke::remote::RemoteInvoker;
use crate::config::http_endpoint::HttpEndpointSpec;
use crate::invoke::external::ExternalCaller;
use crate::invoke::InvokeError;
use crate::resiliency::Resiliency;

/// A failed invocation, with the target it was for.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeApiError {
    /// Neither the path nor a `dapr-app-id` header names a target.
    #[error("failed getting app id either from the URL path or the header dapr-app-id")]
    NoAppId,
    /// The call failed before the target app answered.
    #[error("failed to invoke, id: {target}, err: {source}")]
    Failed { target: String, source: InvokeError },
}

/// The invocation facade.
#[derive(Clone)]
pub struct InvokeApi {
    app_id: Arc<str>,
    app: Option<Arc<AppChannel>>,
    resolver: Option<Arc<SqliteNameResolver>>,
    remote: Arc<RemoteInvoker>,
    resiliency: Resiliency,
    proxy: Option<Arc<crate::invoke::proxy::GrpcProxy>>,
    endpoints: Arc<Vec<HttpEndpointSpec>>,
    external: Arc<ExternalCaller>,
}

/// The result of a gRPC `InvokeService` as daprd answers it: the app's message or its status as
/// daprd maps it, and the metadata daprd sets on the call either way.
pub struct GrpcOutcome {
    /// The answer, or the target's failure (already a gRPC status, details kept).
    pub result: Result<common::InvokeResponse, tonic::Status>,
    /// Response headers: the app's (an HTTP app's permanent headers prefixed `dapr-`), and
    /// `dapr-http-status` for an HTTP app.
    pub headers: tonic::metadata::MetadataMap,
    /// Response trailers: a gRPC app's own (an HTTP app has none).
    pub trailers: tonic::metadata::MetadataMap,
}

impl InvokeApi {
    /// Builds the facade.
    pub fn new(app_id: &str, app: Option<Arc<AppChannel>>, resolver: Option<Arc<SqliteNameResolver>>, remote: Arc<RemoteInvoker>, resiliency: Resiliency) -> Self {
        Self { app_id: Arc::from(app_id), app, resolver, remote, resiliency, proxy: None, endpoints: Arc::default(), external: Arc::default() }
    }

    /// Adds the `HTTPEndpoint` resources apps may invoke by name.
    pub fn with_http_endpoints(mut self, endpoints: Vec<HttpEndpointSpec>) -> Self {
        self.external = Arc::new(ExternalCaller::new(&endpoints));
        self.endpoints = Arc::new(endpoints);
        self
    }

    /// Names of the loaded `HTTPEndpoint`s (metadata).
    pub fn http_endpoint_names(&self) -> Vec<String> {
        self.endpoints.iter().map(|e| e.name.clone()).collect()
    }

    /// With gRPC proxying of `dapr-app-id` calls for methods the sidecar does not serve.
    pub fn with_proxy(mut self, proxy: Arc<crate::invoke::proxy::GrpcProxy>) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// The gRPC proxy, when set.
    pub fn grpc_proxy(&self) -> Option<&crate::invoke::proxy::GrpcProxy> {
        self.proxy.as_deref()
    }

    fn target(&self, id: &str) -> Result<String, InvokeApiError> {
        let parts: Vec<&str> = id.split('.').collect();
        if parts.len() > 2 || parts[0].is_empty() {
            return Err(InvokeApiError::Failed { target: id.to_string(), source: InvokeError::InvalidAppId(id.to_string()) });
        }
        Ok(parts[0].to_string())
    }

    /// Invokes `method` on app `id` over HTTP semantics; the body streams both ways.
    pub async fn invoke_http(&self, id: &str, method: String, verb: Method, query: Option<&str>, headers: &HeaderMap, body: Body) -> Result<Response<Body>, InvokeApiError> {
        let method = normalized(id, &method)?;
        // External services: a full URL as the id, or an HTTPEndpoint by name.
        let external = if id.starts_with("http://") || id.starts_with("https://") {
            Some((None, id.trim_end_matches('/').to_string(), Vec::new()))
        } else {
            ExternalCaller::find(&self.endpoints, id).map(|e| (Some(e.name.as_str()), e.base_url.clone(), e.headers.clone()))
        };
        if let Some((endpoint, base, extra)) = external {
            // daprd's policy keys: `<name>:<baseUrl>` for an HTTPEndpoint, `<url>/<method>` for a URL.
            let key = match endpoint {
                Some(_) => format!("{id}:{base}"),
                None => format!("{id}/{method}"),
            };
            let policy = self.resiliency.for_endpoint(id, &key);
            let mut meta = CallMeta::from_http(method, verb, query, headers);
            meta.headers.retain(|(k, _)| k != crate::invoke::message::CALLER && k != crate::invoke::message::CALLEE);
            meta.headers.push((crate::invoke::message::CALLER.to_string(), self.app_id.to_string()));
            let dest = resilient::Dest::External { endpoint, base: &base, extra: &extra };
            return self.http_call(policy, dest, meta, body).await.map_err(|source| InvokeApiError::Failed { target: id.to_string(), source });
        }
        let target = self.target(id)?;
        let policy = self.endpoint_policy(id, &method);
        let mut meta = CallMeta::from_http(method, verb, query, headers);
        meta.stamp(&self.app_id, &target);
        self.http_call(policy, resilient::Dest::App(&target), meta, body).await.map_err(|source| InvokeApiError::Failed { target: target.clone(), source })
    }

    /// gRPC `InvokeService`: a whole-message call.
    pub async fn invoke_grpc(&self, id: &str, mut message: common::InvokeRequest, metadata: Vec<(String, String)>) -> Result<GrpcOutcome, InvokeApiError> {
        message.method = normalized(id, &message.method)?;
        let target = self.target(id)?;
        let fail = |source| InvokeApiError::Failed { target: target.clone(), source };
        let ext = message.http_extension.clone().unwrap_or_default();
        let mut meta = CallMeta {
            method: message.method.clone(),
            verb: crate::invoke::message::verb_from_proto(ext.verb).unwrap_or(Method::POST),
            query: ext.querystring.clone(),
            content_type: (!message.content_type.is_empty()).then(|| message.content_type.clone()),
            headers: metadata,
        };
        meta.stamp(&self.app_id, &target);
        let message_method = message.method.clone();
        let mut req = meta.to_internal();
        req.message = Some(message);
        let policy = self.endpoint_policy(id, &message_method);
        let resp = self.unary_call(policy, &target, req).await.map_err(fail)?;
        Ok(outcome(resp))
    }
}

/// The method as daprd's invocation edge normalises it, before anything else is looked at.
fn normalized(id: &str, method: &str) -> Result<String, InvokeApiError> {
    crate::invoke::method::normalize(method).map_err(|e| InvokeApiError::Failed { target: id.to_string(), source: e.into() })
}

/// daprd's reading of the target's answer: a code ≥ 100 is an HTTP status (non-2xx is an error
/// with ErrorInfo), below 100 a gRPC code whose status keeps the app's details.
fn outcome(resp: internals::InternalInvokeResponse) -> GrpcOutcome {
    use crate::invoke::grpc_answer::{internal_to_metadata, status_from_internal};
    let status = resp.status.unwrap_or_default();
    let message = resp.message.unwrap_or_default();
    if status.code >= 100 {
        let mut headers = internal_to_metadata(&resp.headers, true);
        headers.insert("dapr-http-status", status.code.into());
        let http = http::StatusCode::from_u16(u16::try_from(status.code).unwrap_or(500)).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        let code = crate::api::errors::http_to_grpc(http);
        if code == tonic::Code::Ok {
            return GrpcOutcome { result: Ok(message), headers, trailers: Default::default() };
        }
        let body = message.data.map(|d| d.value).unwrap_or_default();
        // ErrorInfo metadata values are limited to 63 bytes (daprd cuts the bytes, not characters).
        let text = String::from_utf8_lossy(&body[..body.len().min(63)]).into_owned();
        let reason = http.canonical_reason().unwrap_or_default().to_string();
        let mut d = tonic_types::ErrorDetails::new();
        d.set_error_info(reason.clone(), crate::api::errors::codes::DOMAIN, [("http.code".to_string(), http.as_u16().to_string()), ("http.error_message".to_string(), text)]);
        use tonic_types::StatusExt;
        return GrpcOutcome { result: Err(tonic::Status::with_error_details(code, reason, d)), headers, trailers: Default::default() };
    }
    let headers = internal_to_metadata(&resp.headers, false);
    let trailers = internal_to_metadata(&resp.trailers, false);
    let result = if status.code == 0 { Ok(message) } else { Err(status_from_internal(&status)) };
    GrpcOutcome { result, headers, trailers }
}

