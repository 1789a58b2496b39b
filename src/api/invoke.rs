//! `InvokeApi`: the transport-free service invocation facade shared by the HTTP route, the
//! `dapr-app-id` fallback and gRPC `InvokeService`.
//!
//! A call to this sidecar's own app id goes straight to the local app channel; any other id is
//! resolved to its sidecar's internal address and sent over the internal protocol.

use std::sync::Arc;

use axum::body::Body;
use http::{HeaderMap, Method, Response};
use rapr_proto::common::v1 as common;
use rapr_proto::internals::v1 as internals;

use crate::invoke::app_channel::AppChannel;
use crate::invoke::internal::InternalService;
use crate::invoke::message::CallMeta;
use crate::invoke::nameres::SqliteNameResolver;
use crate::invoke::remote::RemoteInvoker;
use crate::invoke::InvokeError;

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
}

/// The result of a gRPC `InvokeService`: the answer, or the target's status as daprd maps it.
pub enum GrpcOutcome {
    /// The app answered successfully; `http_status` is set for HTTP apps.
    Ok { response: common::InvokeResponse, http_status: Option<u16> },
    /// The app answered with an error status (already a gRPC status).
    AppError(tonic::Status),
}

impl InvokeApi {
    /// Builds the facade.
    pub fn new(app_id: &str, app: Option<Arc<AppChannel>>, resolver: Option<Arc<SqliteNameResolver>>, remote: Arc<RemoteInvoker>) -> Self {
        Self { app_id: Arc::from(app_id), app, resolver, remote }
    }

    fn target(&self, id: &str) -> Result<String, InvokeApiError> {
        let parts: Vec<&str> = id.split('.').collect();
        if parts.len() > 2 || parts[0].is_empty() {
            return Err(InvokeApiError::Failed { target: id.to_string(), source: InvokeError::InvalidAppId(id.to_string()) });
        }
        Ok(parts[0].to_string())
    }

    async fn address(&self, target: &str) -> Result<String, InvokeApiError> {
        let fail = |source| InvokeApiError::Failed { target: target.to_string(), source };
        let resolver = self.resolver.as_ref().ok_or_else(|| fail(InvokeError::Resolver("name resolution is not available".into())))?;
        resolver.resolve(target).await.map_err(fail)
    }

    /// Invokes `method` on app `id` over HTTP semantics; the body streams both ways.
    pub async fn invoke_http(&self, id: &str, method: String, verb: Method, query: Option<&str>, headers: &HeaderMap, body: Body) -> Result<Response<Body>, InvokeApiError> {
        let target = self.target(id)?;
        let mut meta = CallMeta::from_http(method, verb, query, headers);
        meta.stamp(&self.app_id, &target);
        let fail = |source| InvokeApiError::Failed { target: target.clone(), source };
        if target == *self.app_id {
            let app = self.app.as_ref().ok_or_else(|| fail(InvokeError::NoAppChannel))?;
            return app.call_http(&meta, body).await.map_err(fail);
        }
        let addr = self.address(&target).await?;
        self.remote.call_stream(&addr, meta.to_internal(), body).await.map_err(fail)
    }

    /// gRPC `InvokeService`: a whole-message call.
    pub async fn invoke_grpc(&self, id: &str, message: common::InvokeRequest, metadata: Vec<(String, String)>) -> Result<GrpcOutcome, InvokeApiError> {
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
        let mut req = meta.to_internal();
        req.message = Some(message);
        let resp = if target == *self.app_id {
            let service = InternalService::new(self.app.clone());
            use rapr_proto::internals::v1::service_invocation_server::ServiceInvocation;
            match service.call_local(tonic::Request::new(req)).await {
                Ok(r) => r.into_inner(),
                Err(s) if s.code() == tonic::Code::FailedPrecondition => return Err(fail(InvokeError::NoAppChannel)),
                Err(s) => return Err(fail(InvokeError::App(s.message().to_string()))),
            }
        } else {
            let addr = self.address(&target).await?;
            self.remote.call_unary(&addr, req).await.map_err(fail)?
        };
        Ok(outcome(resp))
    }
}

/// daprd's reading of the target's answer: a code ≥ 100 is an HTTP status (non-2xx is an error
/// with ErrorInfo), below 100 a gRPC code.
fn outcome(resp: internals::InternalInvokeResponse) -> GrpcOutcome {
    let status = resp.status.unwrap_or_default();
    let message = resp.message.unwrap_or_default();
    if status.code >= 100 {
        let http = http::StatusCode::from_u16(u16::try_from(status.code).unwrap_or(500)).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        if http.is_success() {
            return GrpcOutcome::Ok { response: message, http_status: Some(http.as_u16()) };
        }
        let body = message.data.map(|d| d.value).unwrap_or_default();
        let text: String = String::from_utf8_lossy(&body).chars().take(63).collect();
        let reason = http.canonical_reason().unwrap_or("Unknown").to_string();
        let mut d = tonic_types::ErrorDetails::new();
        d.set_error_info(reason.clone(), crate::api::errors::codes::DOMAIN, [("http.code".to_string(), http.as_u16().to_string()), ("http.error_message".to_string(), text)]);
        use tonic_types::StatusExt;
        return GrpcOutcome::AppError(tonic::Status::with_error_details(crate::api::errors::http_to_grpc(http), reason, d));
    }
    if status.code == 0 {
        return GrpcOutcome::Ok { response: message, http_status: None };
    }
    GrpcOutcome::AppError(tonic::Status::new(tonic::Code::from_i32(status.code), status.message))
}
