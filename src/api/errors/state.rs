//! Wire mapping of `StateApiError`, as daprd v1.18 answers each case (HTTP status, `errorCode`,
//! gRPC code, ErrorInfo reason and metadata, ResourceInfo).

use std::collections::BTreeMap;

use http::StatusCode;
use tonic::Code;

use super::codes::*;
use super::{ApiError, Detail};
use crate::api::state::StateApiError;
use crate::components::state::StoreError;

const HELP_URL: &str = "https://docs.dapr.io/reference/components-reference/supported-state-stores/";

fn resource(store: &str) -> Detail {
    Detail::ResourceInfo { resource_type: "state".into(), resource_name: store.into() }
}

/// Maps a state error; `app_id` goes into ErrorInfo metadata where daprd puts it.
pub fn state_error(e: StateApiError, app_id: &str) -> ApiError {
    let msg = e.to_string();
    let app_md = (!app_id.is_empty()).then(|| BTreeMap::from([("appID".to_string(), app_id.to_string())]));
    match e {
        StateApiError::NotConfigured { .. } => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::FailedPrecondition, ERR_STATE_STORE_NOT_CONFIGURED, msg)
                .with_info("DAPR_STATE_NOT_CONFIGURED", app_md)
        }
        StateApiError::NotFound { .. } => ApiError::new(StatusCode::BAD_REQUEST, Code::InvalidArgument, ERR_STATE_STORE_NOT_FOUND, msg)
            .with_info("DAPR_STATE_NOT_FOUND", app_md),
        StateApiError::IllegalKey { store, key } => ApiError::malformed(msg.clone())
            .with(Detail::BadRequest { field: key.0, description: msg })
            .with(resource(&store))
            .with_info("DAPR_STATE_ILLEGAL_KEY", None),
        StateApiError::EmptyKey => ApiError::malformed(msg),
        StateApiError::TransactionsNotSupported { store } => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Unimplemented, ERR_STATE_STORE_NOT_SUPPORTED, msg)
                .with(Detail::Help { url: HELP_URL.into(), description: "Check the list of state stores and the features they support".into() })
                .with(resource(&store))
                .with_info("DAPR_STATE_TRANSACTIONS_NOT_SUPPORTED", None)
        }
        StateApiError::TooManyOperations { store, count, max } => {
            ApiError::new(StatusCode::BAD_REQUEST, Code::InvalidArgument, ERR_STATE_STORE_TOO_MANY_TRANSACTIONS, msg)
                .with(resource(&store))
                .with_info(
                    "DAPR_STATE_TOO_MANY_TRANSACTIONS",
                    Some(BTreeMap::from([
                        ("currentOpsTransaction".to_string(), count.to_string()),
                        ("maxOpsPerTransaction".to_string(), max.to_string()),
                    ])),
                )
        }
        StateApiError::UnsupportedOperation(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, Code::Unimplemented, ERR_NOT_SUPPORTED_STATE_OPERATION, msg)
        }
        StateApiError::QueryNotSupported { store } => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, ERR_STATE_STORE_NOT_SUPPORTED, msg)
                .with(resource(&store))
                .with_info("DAPR_STATE_QUERYING_NOT_SUPPORTED", None)
        }
        StateApiError::QueryFailed { store, .. } => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, ERR_STATE_QUERY, msg)
            .with(resource(&store))
            .with_info("DAPR_STATE_QUERY_FAILED", None),
        StateApiError::Get { .. } => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, ERR_STATE_GET, msg),
        StateApiError::Save { source, .. } => etag_aware(source, ERR_STATE_SAVE, msg),
        StateApiError::Delete { source, .. } => etag_aware(source, ERR_STATE_DELETE, msg),
        StateApiError::BulkDelete { source, .. } => etag_aware(source, ERR_STATE_DELETE, msg),
        StateApiError::BulkGet { .. } => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, ERR_STATE_BULK_GET, msg),
        // daprd never maps ETag errors inside a transaction: always 500 / INTERNAL.
        StateApiError::Transaction { .. } => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, ERR_STATE_TRANSACTION, msg)
        }
    }
}

/// Save and delete: an ETag mismatch is 409 / ABORTED, an invalid ETag 400 / INVALID_ARGUMENT.
fn etag_aware(source: StoreError, error_code: &'static str, msg: String) -> ApiError {
    let (status, code) = match source {
        StoreError::ETagMismatch(_) => (StatusCode::CONFLICT, Code::Aborted),
        StoreError::ETagInvalid(_) => (StatusCode::BAD_REQUEST, Code::InvalidArgument),
        StoreError::Timeout(_) => (StatusCode::INTERNAL_SERVER_ERROR, Code::DeadlineExceeded),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, Code::Internal),
    };
    ApiError::new(status, code, error_code, msg)
}
