//! `ApiError`: one error value both transports render, and the only place that knows the wire.
//!
//! HTTP gets a status and `{"errorCode","message","details"}` (details with Dapr's `@type`
//! objects, keys sorted as daprd's Go maps print them); gRPC gets a status code and the same
//! details as rich error details (`grpc-status-details-bin`). Per-subsystem mappings live beside
//! this file (`state.rs`).

pub mod codes;
pub mod invoke;
pub mod pubsub;
pub mod secrets;
pub mod state;

use std::collections::BTreeMap;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{json, Value};
use tonic_types::{ErrorDetails, StatusExt};

/// A rich error detail, as Dapr attaches them.
#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    /// `google.rpc.ErrorInfo` (domain `dapr.io`).
    ErrorInfo {
        /// Dapr reason, e.g. `DAPR_STATE_NOT_FOUND`.
        reason: String,
        /// Extra facts; `None` prints `null` as daprd does.
        metadata: Option<BTreeMap<String, String>>,
    },
    /// `google.rpc.ResourceInfo`.
    ResourceInfo {
        /// e.g. `state`.
        resource_type: String,
        /// The component name.
        resource_name: String,
        /// What daprd writes there (empty for state, the message for pub/sub).
        description: String,
    },
    /// `google.rpc.BadRequest` with one field violation.
    BadRequest {
        /// The offending field.
        field: String,
        /// Why.
        description: String,
    },
    /// `google.rpc.Help` with one link.
    Help {
        /// Link.
        url: String,
        /// What it explains.
        description: String,
    },
}

/// An error on its way to the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// gRPC code.
    pub code: tonic::Code,
    /// Dapr's `ERR_*` code.
    pub error_code: &'static str,
    /// Human message.
    pub message: String,
    /// Rich details (empty for daprd's legacy errors).
    pub details: Vec<Detail>,
}

impl ApiError {
    /// A legacy-style error: code and message, no details.
    pub fn new(status: StatusCode, code: tonic::Code, error_code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, error_code, message: message.into(), details: Vec::new() }
    }

    /// Adds a detail.
    pub fn with(mut self, d: Detail) -> Self {
        self.details.push(d);
        self
    }

    /// Adds an ErrorInfo with Dapr's domain.
    pub fn with_info(self, reason: &str, metadata: Option<BTreeMap<String, String>>) -> Self {
        self.with(Detail::ErrorInfo { reason: reason.to_string(), metadata })
    }

    /// Adds the ErrorInfo daprd's `apierrors.Basic` attaches: the error code as reason, no
    /// metadata.
    pub fn basic(self) -> Self {
        let reason = self.error_code;
        self.with_info(reason, None)
    }

    /// A malformed-request error (HTTP 400, gRPC INVALID_ARGUMENT).
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument, codes::ERR_MALFORMED_REQUEST, message)
    }

    /// The HTTP JSON body.
    pub fn http_body(&self) -> Value {
        let mut body = json!({ "errorCode": self.error_code, "message": self.message });
        if !self.details.is_empty() {
            body["details"] = Value::Array(self.details.iter().map(detail_json).collect());
        }
        body
    }

    /// The gRPC status with rich details.
    pub fn grpc_status(&self) -> tonic::Status {
        if self.details.is_empty() {
            return tonic::Status::new(self.code, self.message.clone());
        }
        let mut d = ErrorDetails::new();
        for detail in &self.details {
            match detail {
                Detail::ErrorInfo { reason, metadata } => {
                    let md: std::collections::HashMap<String, String> = metadata.clone().unwrap_or_default().into_iter().collect();
                    d.set_error_info(reason.clone(), codes::DOMAIN, md);
                }
                Detail::ResourceInfo { resource_type, resource_name, description } => {
                    d.set_resource_info(resource_type.clone(), resource_name.clone(), "", description.clone());
                }
                Detail::BadRequest { field, description } => {
                    d.add_bad_request_violation(field.clone(), description.clone());
                }
                Detail::Help { url, description } => {
                    d.add_help_link(description.clone(), url.clone());
                }
            }
        }
        tonic::Status::with_error_details(self.code, self.message.clone(), d)
    }
}

fn detail_json(d: &Detail) -> Value {
    match d {
        Detail::ErrorInfo { reason, metadata } => json!({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "domain": codes::DOMAIN,
            "metadata": metadata,
            "reason": reason,
        }),
        Detail::ResourceInfo { resource_type, resource_name, description } => json!({
            "@type": "type.googleapis.com/google.rpc.ResourceInfo",
            "description": description,
            "owner": "",
            "resource_name": resource_name,
            "resource_type": resource_type,
        }),
        Detail::BadRequest { field, description } => json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "field_violations": [{ "field": field, "description": description }],
        }),
        Detail::Help { url, description } => json!({
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [{ "description": description, "url": url }],
        }),
    }
}

/// The HTTP status daprd gives a gRPC code (grpc-gateway's mapping).
pub fn grpc_to_http(code: tonic::Code) -> StatusCode {
    use tonic::Code::*;
    match code {
        Ok => StatusCode::OK,
        Cancelled => StatusCode::REQUEST_TIMEOUT,
        InvalidArgument | FailedPrecondition | OutOfRange => StatusCode::BAD_REQUEST,
        DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        NotFound => StatusCode::NOT_FOUND,
        AlreadyExists | Aborted => StatusCode::CONFLICT,
        PermissionDenied => StatusCode::FORBIDDEN,
        Unauthenticated => StatusCode::UNAUTHORIZED,
        ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Unknown | Internal | DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The gRPC code daprd gives an app's HTTP status (its `CodeFromHTTPStatus`).
pub fn http_to_grpc(status: StatusCode) -> tonic::Code {
    match status.as_u16() {
        200..=299 => tonic::Code::Ok,
        408 => tonic::Code::Cancelled,
        400 => tonic::Code::Internal,
        504 => tonic::Code::DeadlineExceeded,
        404 => tonic::Code::NotFound,
        409 => tonic::Code::AlreadyExists,
        403 => tonic::Code::PermissionDenied,
        401 => tonic::Code::Unauthenticated,
        429 => tonic::Code::ResourceExhausted,
        501 => tonic::Code::Unimplemented,
        503 => tonic::Code::Unavailable,
        _ => tonic::Code::Unknown,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.http_body())).into_response()
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        e.grpc_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_grpc_render_the_same_error() {
        let e = ApiError::new(StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument, codes::ERR_STATE_STORE_NOT_FOUND, "state store x is not found")
            .with_info("DAPR_STATE_NOT_FOUND", Some(BTreeMap::from([("appID".into(), "a".into())])));
        let body = e.http_body();
        assert_eq!(body["errorCode"], "ERR_STATE_STORE_NOT_FOUND");
        assert_eq!(body["details"][0]["reason"], "DAPR_STATE_NOT_FOUND");
        assert_eq!(body["details"][0]["metadata"]["appID"], "a");
        let s = e.grpc_status();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        let info = s.get_details_error_info().unwrap();
        assert_eq!(info.reason, "DAPR_STATE_NOT_FOUND");
        assert_eq!(info.domain, "dapr.io");
    }
}
