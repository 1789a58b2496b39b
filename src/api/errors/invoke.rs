//! Wire mapping of `InvokeApiError`, as daprd answers: `ERR_DIRECT_INVOKE`, 500 / INTERNAL for a
//! failed call, 404 / NOT_FOUND when no app id was given.

use http::StatusCode;
use tonic::Code;

use super::codes::ERR_DIRECT_INVOKE;
use super::ApiError;
use crate::api::invoke::InvokeApiError;

/// Maps an invocation error.
pub fn invoke_error(e: InvokeApiError) -> ApiError {
    let msg = e.to_string();
    match e {
        InvokeApiError::NoAppId => ApiError::new(StatusCode::NOT_FOUND, Code::NotFound, ERR_DIRECT_INVOKE, msg),
        InvokeApiError::Failed { .. } => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, ERR_DIRECT_INVOKE, msg),
    }
}

/// Maps a gRPC proxying failure as grpc-go reports daprd's proxy errors: a plain error is
/// UNKNOWN with its text (so an unknown app answers `no host found with the given ID`, an open
/// breaker `circuit breaker is open`); a target that cannot be reached is UNAVAILABLE; Go's
/// context deadline is DEADLINE_EXCEEDED; the proxy's own status errors keep their codes.
pub fn proxy_error(e: crate::invoke::proxy::ProxyError) -> tonic::Status {
    use crate::invoke::proxy::ProxyError;
    let code = match e {
        ProxyError::Unreachable(_) => Code::Unavailable,
        ProxyError::DeadlineExceeded => Code::DeadlineExceeded,
        ProxyError::RetryOnStream => Code::FailedPrecondition,
        ProxyError::TooLarge { .. } => Code::ResourceExhausted,
        ProxyError::Resolve(_) | ProxyError::NoAppChannel | ProxyError::WrongTarget(_) | ProxyError::Breaker(_) => Code::Unknown,
    };
    tonic::Status::new(code, e.to_string())
}
