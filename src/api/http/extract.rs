//! Request pieces every HTTP handler needs: the body read under the size limit, `metadata.*`
//! query parameters, and JSON decoding that reports Dapr's malformed-request error.

use std::collections::HashMap;

use axum::body::Body;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;

use crate::api::errors::{codes, ApiError};
use crate::components::state::Metadata;

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Over the limit: daprd's message is `stream too large`.
    TooLarge,
    /// The connection failed mid-body.
    Read(String),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge => f.write_str("stream too large"),
            BodyError::Read(e) => f.write_str(e),
        }
    }
}

/// Reads the whole body, refusing more than `limit` bytes.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(e) => Err(BodyError::Read(e.to_string())),
    }
}

/// daprd's `ERR_BODY_READ` (query and metadata routes).
pub fn body_read_error(e: BodyError) -> ApiError {
    ApiError::new(http::StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument, codes::ERR_BODY_READ, format!("failed to read request body: {e}"))
}

/// daprd's `ERR_MALFORMED_REQUEST` with the `failed deserializing HTTP body` prefix.
pub fn deserialize_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::malformed(format!("failed deserializing HTTP body: {e}"))
}

/// Decodes JSON, mapping failures with `err`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], err: impl Fn(String) -> ApiError) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| err(e.to_string()))
}

/// The `metadata.<k>=v` query parameters as a map.
pub fn query_metadata(params: &HashMap<String, String>) -> Metadata {
    params.iter().filter_map(|(k, v)| k.strip_prefix("metadata.").map(|k| (k.to_string(), v.clone()))).collect()
}
