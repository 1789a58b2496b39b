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
    Detail::ResourceInfo { resource_type: "state".into(), resource_name: store.into(), description: String::new() }
}

/// The transport an error is rendered for: daprd's HTTP and gRPC handlers build state errors
/// differently (legacy `NewAPIErrorHTTP` bodies on HTTP, `apierrors.Basic` with an ErrorInfo on
/// gRPC; the app id in not-found metadata on HTTP only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport<'a> {
    /// The HTTP API of the app `app_id`.
    Http {
        /// Goes into not-found / not-configured ErrorInfo metadata, as daprd's HTTP handlers do.
        app_id: &'a str,
    },
    /// The gRPC API (daprd's `Universal.GetStateStore` passes no app id).
    Grpc,
}

/// Maps a state error for an HTTP answer; `app_id` goes into ErrorInfo metadata where daprd puts it.
pub fn state_error(e: StateApiError, app_id: &str) -> ApiError {
    map(e, Transport::Http { app_id })
}

/// Maps a state error for a gRPC answer.
pub fn state_error_grpc(e: StateApiError) -> ApiError {
    map(e, Transport::Grpc)
}

fn map(e: StateApiError, transport: Transport<'_>) -> ApiError {
    let msg = e.to_string();
    let grpc = transport == Transport::Grpc;
    let app_md = match transport {
        Transport::Http { app_id } if !app_id.is_empty() => Some(BTreeMap::from([("appID".to_string(), app_id.to_string())])),
        _ => None,
    };
    // daprd's gRPC `apierrors.Basic`: an ErrorInfo whose reason is the error code, no metadata.
    let basic = |e: ApiError| if grpc { e.basic() } else { e };
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
        StateApiError::EmptySaveKey => ApiError::new(StatusCode::BAD_REQUEST, Code::InvalidArgument, ERR_STATE_SAVE, msg).basic(),
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
            basic(ApiError::new(StatusCode::BAD_REQUEST, Code::Unimplemented, ERR_NOT_SUPPORTED_STATE_OPERATION, msg))
        }
        StateApiError::QueryNotSupported { store } => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, ERR_STATE_STORE_NOT_SUPPORTED, msg)
                .with(resource(&store))
                .with_info("DAPR_STATE_QUERYING_NOT_SUPPORTED", None)
        }
        StateApiError::QueryFailed { store, .. } => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, ERR_STATE_QUERY, msg)
            .with(resource(&store))
            .with_info("DAPR_STATE_QUERY_FAILED", None),
        StateApiError::Get { .. } => basic(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, ERR_STATE_GET, msg)),
        StateApiError::Save { source, .. } => basic(etag_aware(source, ERR_STATE_SAVE, msg)),
        StateApiError::Delete { source, .. } => basic(etag_aware(source, ERR_STATE_DELETE, msg)),
        StateApiError::BulkDelete { source, .. } => basic(etag_aware(source, ERR_STATE_BULK_DELETE, msg)),
        // daprd's gRPC GetBulkState returns the store's error as is: a plain Go error, which grpc-go
        // sends as UNKNOWN (DEADLINE_EXCEEDED for a context deadline), without details.
        StateApiError::BulkGet { source } if grpc => {
            let code = if matches!(source, StoreError::Timeout(_)) { Code::DeadlineExceeded } else { Code::Unknown };
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code, ERR_STATE_BULK_GET, msg)
        }
        StateApiError::BulkGet { .. } => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, ERR_STATE_BULK_GET, msg),
        // daprd never maps ETag errors inside a transaction: always 500 / INTERNAL.
        StateApiError::Transaction { .. } => {
            basic(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, ERR_STATE_TRANSACTION, msg))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn info(e: &ApiError) -> Option<(&str, &Option<BTreeMap<String, String>>)> {
        e.details.iter().find_map(|d| match d {
            Detail::ErrorInfo { reason, metadata } => Some((reason.as_str(), metadata)),
            _ => None,
        })
    }

    #[test]
    fn grpc_store_failures_carry_the_code_as_error_info_and_http_none() {
        let failed = || StoreError::Backend("down".into());
        let cases = [
            (StateApiError::Get { store: "s".into(), key: "k".into(), source: failed() }, ERR_STATE_GET),
            (StateApiError::Save { store: "s".into(), source: failed() }, ERR_STATE_SAVE),
            (StateApiError::Delete { key: "k".into(), source: failed() }, ERR_STATE_DELETE),
            (StateApiError::BulkDelete { store: "s".into(), source: failed() }, ERR_STATE_BULK_DELETE),
            (StateApiError::Transaction { source: failed() }, ERR_STATE_TRANSACTION),
            (StateApiError::UnsupportedOperation("merge".into()), ERR_NOT_SUPPORTED_STATE_OPERATION),
        ];
        for (e, code) in cases {
            let g = state_error_grpc(e.clone());
            assert_eq!(g.error_code, code);
            assert_eq!(info(&g), Some((code, &None)), "{e:?}");
            let h = state_error(e.clone(), "app");
            assert!(h.details.is_empty(), "daprd's HTTP state errors are legacy bodies: {e:?}");
        }
    }

    #[test]
    fn not_found_names_the_app_on_http_only() {
        let e = || StateApiError::NotFound { store: "x".into() };
        let md = BTreeMap::from([("appID".to_string(), "app".to_string())]);
        assert_eq!(info(&state_error(e(), "app")), Some(("DAPR_STATE_NOT_FOUND", &Some(md))));
        assert_eq!(info(&state_error_grpc(e())), Some(("DAPR_STATE_NOT_FOUND", &None)));
    }

    #[test]
    fn grpc_bulk_get_failure_is_the_raw_status() {
        let g = state_error_grpc(StateApiError::BulkGet { source: StoreError::Backend("redis is down".into()) });
        assert_eq!((g.code, g.message.as_str()), (Code::Unknown, "redis is down"));
        assert!(g.details.is_empty());
        let t = state_error_grpc(StateApiError::BulkGet { source: StoreError::Timeout(std::time::Duration::from_secs(1)) });
        assert_eq!(t.code, Code::DeadlineExceeded);
    }

    #[test]
    fn empty_save_key_on_grpc_is_daprds_basic_error() {
        let g = state_error_grpc(StateApiError::EmptySaveKey);
        assert_eq!((g.code, g.message.as_str(), g.error_code), (Code::InvalidArgument, "state key cannot be empty", ERR_STATE_SAVE));
        assert_eq!(info(&g), Some((ERR_STATE_SAVE, &None)));
    }
}
