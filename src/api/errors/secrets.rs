//! Wire mapping of `SecretsApiError`, as daprd v1.18 answers (codes and statuses of its
//! predefined secret errors; no rich details).

use http::StatusCode;
use tonic::Code;

use super::codes::*;
use super::ApiError;
use crate::api::secrets::SecretsApiError;

/// Maps a secrets error.
pub fn secrets_error(e: SecretsApiError) -> ApiError {
    let msg = e.to_string();
    match e {
        SecretsApiError::NotConfigured => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::FailedPrecondition, ERR_SECRET_STORES_NOT_CONFIGURED, msg),
        SecretsApiError::NotFound { .. } => ApiError::new(StatusCode::UNAUTHORIZED, Code::InvalidArgument, ERR_SECRET_STORE_NOT_FOUND, msg),
        SecretsApiError::PermissionDenied { .. } => ApiError::new(StatusCode::FORBIDDEN, Code::PermissionDenied, ERR_PERMISSION_DENIED, msg),
        SecretsApiError::Get { .. } | SecretsApiError::BulkGet { .. } => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, ERR_SECRET_GET, msg)
        }
    }
}
