//! A gRPC app's answer to `AppCallback.OnInvoke`, kept whole as daprd's gRPC app channel keeps
//! it: the message (its `data` Any with its type_url, and its content type), the app's status
//! with its details, and the app's response headers and trailers.
//!
//! From here the answer travels the internal protocol (`into_internal`), and is turned back into
//! what the caller asked for: a gRPC `InvokeService` answer (`api/invoke.rs`) or, for an HTTP
//! caller, daprd's HTTP rendering (`into_http`: the raw value with `application/x-protobuf` when
//! the Any is typed; on failure the protojson of the app's status).


use axum::body::Body;
use base64::Engine;
use http::{HeaderValue, Response, StatusCode};
use prost::Message;
use rapr_proto::common::v1 as common;
use rapr_proto::internals::v1 as internals;
use serde_json::{json, Map, Value};
use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};

use super::message::Metadata;

/// daprd's content type of data whose Any carries a type_url.
pub const PROTOBUF_CONTENT_TYPE: &str = "application/x-protobuf";

/// Metadata keys that belong to the gRPC transport, never the app's own headers or trailers.
const TRANSPORT: &[&str] =
    &["content-type", "grpc-status", "grpc-message", "grpc-status-details-bin", "grpc-encoding", "grpc-accept-encoding", "te", "user-agent", "date", "content-length"];

/// What a gRPC app answered.
#[derive(Debug)]
pub struct GrpcAnswer {
    /// The message, or the app's status (with its details).
    pub result: Result<common::InvokeResponse, tonic::Status>,
    /// The app's response headers.
    pub headers: MetadataMap,
    /// The app's trailers.
    pub trailers: MetadataMap,
}

impl GrpcAnswer {
    /// The internal protocol's response: status code, message and details; headers and trailers
    /// as daprd's `MetadataToInternalMetadata` writes them (binary values base64).
    pub fn into_internal(self) -> internals::InternalInvokeResponse {
        let (status, message) = match self.result {
            Ok(m) => (internals::Status { code: 0, message: String::new(), details: vec![] }, Some(m)),
            Err(s) => (internals::Status { code: s.code() as i32, message: s.message().to_string(), details: status_details(&s) }, None),
        };
        internals::InternalInvokeResponse { status: Some(status), headers: metadata_to_internal(&self.headers), trailers: metadata_to_internal(&self.trailers), message }
    }

    /// daprd's HTTP rendering for an HTTP caller.
    pub fn into_http(self) -> Response<Body> {
        let headers = metadata_to_internal(&self.headers);
        let mut resp = match self.result {
            Ok(m) => {
                let data = m.data.unwrap_or_default();
                let content_type = if data.type_url.is_empty() { m.content_type } else { PROTOBUF_CONTENT_TYPE.to_string() };
                let mut resp = Response::new(Body::from(data.value));
                if let Ok(ct) = HeaderValue::from_str(&content_type) {
                    if !content_type.is_empty() {
                        resp.headers_mut().insert(http::header::CONTENT_TYPE, ct);
                    }
                }
                resp
            }
            Err(s) => status_as_http(&internals::Status { code: s.code() as i32, message: s.message().to_string(), details: status_details(&s) }),
        };
        for (name, value) in internal_to_http_headers(&headers) {
            resp.headers_mut().append(name, value);
        }
        resp
    }
}

/// An app's failed gRPC status as daprd answers an HTTP caller: `HTTPStatusFromCode` and the
/// protojson of the status (`code` the gRPC code; `message` and `details` only when present).
/// daprd sets no content type here (Go sniffs the JSON as text), nor does this.
pub fn status_as_http(status: &internals::Status) -> Response<Body> {
    let http = crate::api::errors::grpc_to_http(tonic::Code::from_i32(status.code));
    let (http, body) = match status_json(status) {
        Ok(v) => (http, v.to_string()),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "errorCode": "ERR_MALFORMED_RESPONSE", "message": e }).to_string(),
        ),
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = http;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// The details of `s` (the Anys of its `grpc-status-details-bin`).
pub fn status_details(s: &tonic::Status) -> Vec<prost_types::Any> {
    if s.details().is_empty() {
        return vec![];
    }
    tonic_types::pb::Status::decode(s.details()).map(|p| p.details).unwrap_or_default()
}

/// A gRPC status from the internal protocol's, details included.
pub fn status_from_internal(status: &internals::Status) -> tonic::Status {
    let code = tonic::Code::from_i32(status.code);
    if status.details.is_empty() {
        return tonic::Status::new(code, status.message.clone());
    }
    let pb = tonic_types::pb::Status { code: status.code, message: status.message.clone(), details: status.details.clone() };
    tonic::Status::with_details(code, status.message.clone(), pb.encode_to_vec().into())
}

/// The app's metadata as the internal protocol's map, without the transport's own keys.
pub fn metadata_to_internal(md: &MetadataMap) -> Metadata {
    let mut out = Metadata::new();
    for kv in md.iter() {
        let (key, value) = match kv {
            KeyAndValueRef::Ascii(k, v) => (k.as_str(), v.to_str().map(str::to_string).ok()),
            KeyAndValueRef::Binary(k, v) => (k.as_str(), v.to_bytes().ok().map(|b| base64::engine::general_purpose::STANDARD.encode(b))),
        };
        if TRANSPORT.contains(&key) {
            continue;
        }
        if let Some(v) = value {
            out.entry(key.to_string()).or_default().values.push(v);
        }
    }
    out
}

/// daprd's `InternalMetadataToGrpcMetadata`: the trace context and `destination-app-id` stay
/// behind; with `http_conversion` (an HTTP app's headers) IANA's permanent headers get `dapr-`;
/// binary values are base64-decoded.
pub fn internal_to_metadata(map: &Metadata, http_conversion: bool) -> MetadataMap {
    let mut md = MetadataMap::new();
    for (k, list) in map {
        let mut key = k.to_ascii_lowercase();
        if matches!(key.as_str(), "traceparent" | "tracestate" | "grpc-trace-bin" | "destination-app-id") || TRANSPORT.contains(&key.as_str()) && !http_conversion {
            continue;
        }
        if http_conversion && is_permanent_http_header(&key) {
            key = format!("dapr-{key}");
        }
        if key.ends_with("-bin") {
            let Ok(name) = MetadataKey::from_bytes(key.as_bytes()) else { continue };
            for v in &list.values {
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(v) {
                    md.append_bin(name.clone(), MetadataValue::from_bytes(&bytes));
                }
            }
        } else {
            let Ok(name) = MetadataKey::from_bytes(key.as_bytes()) else { continue };
            for v in &list.values {
                if let Ok(value) = MetadataValue::try_from(v.as_str()) {
                    md.append(name.clone(), value);
                }
            }
        }
    }
    md
}

/// daprd's `InternalMetadataToHTTPHeader` for the response to an HTTP caller: binary values,
/// content type and length, hop-by-hop and trace headers stay behind; `grpc-*` gets `dapr-`.
pub fn internal_to_http_headers(map: &Metadata) -> Vec<(http::HeaderName, HeaderValue)> {
    const SKIP: &[&str] = &[
        "traceparent", "tracestate", "grpc-trace-bin", "destination-app-id", "content-type", "content-length", "connection", "keep-alive", "proxy-connection",
        "transfer-encoding", "upgrade", "http2-settings", "te", "trailer", "proxy-authorization", "proxy-authenticate",
    ];
    let mut out = Vec::new();
    for (k, list) in map {
        let key = k.to_ascii_lowercase();
        if key.ends_with("-bin") || SKIP.contains(&key.as_str()) {
            continue;
        }
        let key = if key.starts_with("grpc-") { format!("dapr-{key}") } else { key };
        let Ok(name) = http::HeaderName::from_bytes(key.as_bytes()) else { continue };
        for v in &list.values {
            if let Ok(value) = HeaderValue::from_str(v) {
                out.push((name.clone(), value));
            }
        }
    }
    out
}

/// IANA's permanent request headers as daprd lists them (`isPermanentHTTPHeader`), lowercase.
pub fn is_permanent_http_header(name: &str) -> bool {
    matches!(
        name,
        "accept" | "accept-charset" | "accept-language" | "accept-ranges" | "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
            | "cache-control" | "content-type" | "content-length" | "cookie" | "date" | "expect" | "from" | "host" | "if-match" | "if-modified-since"
            | "if-none-match" | "if-schedule-tag-match" | "if-unmodified-since" | "max-forwards" | "origin" | "pragma" | "referer" | "via" | "warning"
    )
}

/// protojson of an internal status, as Go's `protojson.Marshal` writes it (unpopulated fields
/// left out; the details resolved by type). `Err` for a detail type daprd could not resolve.
pub fn status_json(status: &internals::Status) -> Result<Value, String> {
    let mut out = Map::new();
    if status.code != 0 {
        out.insert("code".into(), json!(status.code));
    }
    if !status.message.is_empty() {
        out.insert("message".into(), json!(status.message));
    }
    if !status.details.is_empty() {
        let details = status.details.iter().map(detail_json).collect::<Result<Vec<_>, _>>()?;
        out.insert("details".into(), Value::Array(details));
    }
    Ok(Value::Object(out))
}

/// Inserts `v` under `k` unless it is protojson's unpopulated value.
fn put(m: &mut Map<String, Value>, k: &str, v: Value) {
    let empty = match &v {
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Null => true,
        _ => false,
    };
    if !empty {
        m.insert(k.into(), v);
    }
}

/// One `google.rpc` detail as protojson (`@type` first).
fn detail_json(any: &prost_types::Any) -> Result<Value, String> {
    use tonic_types::pb;
    fn de<M: Message + Default>(any: &prost_types::Any) -> Result<M, String> {
        M::decode(any.value.as_slice()).map_err(|e| format!("proto: {e}"))
    }
    let mut m = Map::new();
    m.insert("@type".into(), json!(any.type_url));
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    match name {
        "google.rpc.ErrorInfo" => {
            let d: pb::ErrorInfo = de(any)?;
            put(&mut m, "reason", json!(d.reason));
            put(&mut m, "domain", json!(d.domain));
            put(&mut m, "metadata", json!(d.metadata));
        }
        "google.rpc.ResourceInfo" => {
            let d: pb::ResourceInfo = de(any)?;
            put(&mut m, "resourceType", json!(d.resource_type));
            put(&mut m, "resourceName", json!(d.resource_name));
            put(&mut m, "owner", json!(d.owner));
            put(&mut m, "description", json!(d.description));
        }
        "google.rpc.BadRequest" => {
            let d: pb::BadRequest = de(any)?;
            let v: Vec<Value> = d
                .field_violations
                .iter()
                .map(|f| {
                    let mut o = Map::new();
                    put(&mut o, "field", json!(f.field));
                    put(&mut o, "description", json!(f.description));
                    put(&mut o, "reason", json!(f.reason));
                    Value::Object(o)
                })
                .collect();
            put(&mut m, "fieldViolations", Value::Array(v));
        }
        "google.rpc.RetryInfo" => {
            let d: pb::RetryInfo = de(any)?;
            if let Some(delay) = d.retry_delay {
                put(&mut m, "retryDelay", json!(duration_json(&delay)));
            }
        }
        "google.rpc.DebugInfo" => {
            let d: pb::DebugInfo = de(any)?;
            put(&mut m, "stackEntries", json!(d.stack_entries));
            put(&mut m, "detail", json!(d.detail));
        }
        "google.rpc.RequestInfo" => {
            let d: pb::RequestInfo = de(any)?;
            put(&mut m, "requestId", json!(d.request_id));
            put(&mut m, "servingData", json!(d.serving_data));
        }
        "google.rpc.LocalizedMessage" => {
            let d: pb::LocalizedMessage = de(any)?;
            put(&mut m, "locale", json!(d.locale));
            put(&mut m, "message", json!(d.message));
        }
        "google.rpc.Help" => {
            let d: pb::Help = de(any)?;
            let links: Vec<Value> = d.links.iter().map(|l| {
                let mut o = Map::new();
                put(&mut o, "description", json!(l.description));
                put(&mut o, "url", json!(l.url));
                Value::Object(o)
            }).collect();
            put(&mut m, "links", Value::Array(links));
        }
        "google.rpc.PreconditionFailure" => {
            let d: pb::PreconditionFailure = de(any)?;
            let v: Vec<Value> = d.violations.iter().map(|x| {
                let mut o = Map::new();
                put(&mut o, "type", json!(x.r#type));
                put(&mut o, "subject", json!(x.subject));
                put(&mut o, "description", json!(x.description));
                Value::Object(o)
            }).collect();
            put(&mut m, "violations", Value::Array(v));
        }
        "google.rpc.QuotaFailure" => {
            let d: pb::QuotaFailure = de(any)?;
            let v: Vec<Value> = d.violations.iter().map(|x| {
                let mut o = Map::new();
                put(&mut o, "subject", json!(x.subject));
                put(&mut o, "description", json!(x.description));
                Value::Object(o)
            }).collect();
            put(&mut m, "violations", Value::Array(v));
        }
        _ => return Err(format!("proto: unable to resolve {:?}: not found", any.type_url)),
    }
    Ok(Value::Object(m))
}

/// protojson's Duration: seconds with up to nine fractional digits and an `s`.
fn duration_json(d: &prost_types::Duration) -> String {
    if d.nanos == 0 {
        return format!("{}s", d.seconds);
    }
    let frac = format!("{:09}", d.nanos.unsigned_abs());
    let frac = frac.trim_end_matches('0');
    let sign = if d.seconds < 0 || d.nanos < 0 { "-" } else { "" };
    format!("{sign}{}.{frac}s", d.seconds.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_protojson_leaves_out_what_is_unset() {
        let plain = internals::Status { code: 2, message: "boom".into(), details: vec![] };
        assert_eq!(status_json(&plain).unwrap(), json!({"code": 2, "message": "boom"}));
        let mut d = tonic_types::ErrorDetails::new();
        d.set_error_info("R", "dom", [("k".to_string(), "v".to_string())]);
        use tonic_types::StatusExt;
        let st = tonic::Status::with_error_details(tonic::Code::NotFound, "gone", d);
        let internal = internals::Status { code: 5, message: "gone".into(), details: status_details(&st) };
        assert_eq!(
            status_json(&internal).unwrap(),
            json!({"code": 5, "message": "gone", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "R", "domain": "dom", "metadata": {"k": "v"}}]})
        );
        let back = status_from_internal(&internal);
        assert_eq!(status_details(&back), internal.details, "details survive the internal protocol");
        let unknown = internals::Status { code: 2, message: String::new(), details: vec![prost_types::Any { type_url: "type.googleapis.com/x.Y".into(), value: vec![] }] };
        assert!(status_json(&unknown).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration_json(&prost_types::Duration { seconds: 1, nanos: 500_000_000 }), "1.5s");
        assert_eq!(duration_json(&prost_types::Duration { seconds: 3, nanos: 0 }), "3s");
    }

    #[test]
    fn metadata_round_trips_with_binary_values() {
        let mut md = MetadataMap::new();
        md.append("x-a", "1".parse().unwrap());
        md.append("x-a", "2".parse().unwrap());
        md.append_bin("x-b-bin", MetadataValue::from_bytes(b"\x00\x01"));
        md.insert("content-type", "application/grpc".parse().unwrap());
        let internal = metadata_to_internal(&md);
        assert_eq!(internal["x-a"].values, ["1", "2"]);
        assert!(!internal.contains_key("content-type"));
        let back = internal_to_metadata(&internal, false);
        assert_eq!(back.get_all("x-a").iter().count(), 2);
        assert_eq!(back.get_bin("x-b-bin").unwrap().to_bytes().unwrap().as_ref(), b"\x00\x01");
        let mut http = Metadata::new();
        http.insert("content-type".to_string(), internals::ListStringValue { values: vec!["text/plain".into()] });
        http.insert("x-app".to_string(), internals::ListStringValue { values: vec!["a".into()] });
        let md = internal_to_metadata(&http, true);
        assert_eq!(md.get("dapr-content-type").unwrap(), "text/plain", "an HTTP app's permanent headers get dapr-");
        assert_eq!(md.get("x-app").unwrap(), "a");
    }
}
