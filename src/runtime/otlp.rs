//! The OTLP trace exporter (`spec.tracing.otel`), built as daprd builds it in
//! `pkg/runtime` `setupTracing`: only with both an `endpointAddress` and a `protocol`
//! (`grpc` or `http`), TLS unless `isSecure: false`, the Configuration's `headers` on every
//! export and its `timeout` as the export timeout.
//!
//! Over HTTP the requests go through rapr's own hyper client (plain or rustls with the system's
//! roots) rather than the exporter's built-in one, which speaks no TLS; over gRPC tonic's rustls
//! with the system's roots is used.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};

use crate::config::configuration::OtelSpec;
use crate::invoke::tls::{self, Alpn, HttpClient};

/// The OTLP exporters' own default export timeout (`OTEL_EXPORTER_OTLP_TIMEOUT` unset).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no OTLP exporter was built.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// An endpoint without a protocol: daprd skips the exporter, rapr says so.
    #[error("otel endpointAddress {0:?} has no protocol (grpc or http): spans are not exported over OTLP, as in daprd")]
    NoProtocol(String),
    /// The exporter refused its settings.
    #[error("otel exporter {endpoint}: {reason}")]
    Build { endpoint: String, reason: String },
}

/// The OTLP endpoint URL from daprd's `endpointAddress` (`host:port`, or a URL).
pub fn url(endpoint: &str, secure: bool, http_path: Option<&str>) -> String {
    let base = if endpoint.contains("://") { endpoint.to_string() } else { format!("{}://{endpoint}", if secure { "https" } else { "http" }) };
    match http_path {
        Some(p) if !base.trim_end_matches('/').ends_with(p) => format!("{}{p}", base.trim_end_matches('/')),
        _ => base,
    }
}

/// The exporter `otel` asks for; `Ok(None)` when it names no endpoint (no OTLP export).
pub fn exporter(otel: &OtelSpec) -> Result<Option<opentelemetry_otlp::SpanExporter>, OtlpError> {
    if otel.endpoint.is_empty() {
        return Ok(None);
    }
    let Some(protocol) = otel.protocol.as_deref() else { return Err(OtlpError::NoProtocol(otel.endpoint.clone())) };
    let timeout = otel.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let fail = |reason: String| OtlpError::Build { endpoint: otel.endpoint.clone(), reason };
    let built = if protocol == "http" {
        let url = url(&otel.endpoint, otel.is_secure, Some("/v1/traces"));
        let client = if url.starts_with("https://") { HttpClient::tls(tls::system_config().map_err(|e| fail(e.to_string()))?, Alpn::Any) } else { HttpClient::plain(false) };
        let headers: HashMap<String, String> = otel.headers.iter().cloned().collect();
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_http_client(OtlpHttpClient { client, timeout })
            .with_endpoint(url)
            .with_headers(headers)
            .with_timeout(timeout)
            .build()
    } else {
        let url = url(&otel.endpoint, otel.is_secure, None);
        let mut metadata = tonic::metadata::MetadataMap::new();
        for (k, v) in &otel.headers {
            let key = tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()).map_err(|e| fail(format!("header {k:?}: {e}")))?;
            metadata.insert(key, v.parse().map_err(|_| fail(format!("header {k:?}: not a valid value")))?);
        }
        let mut b = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(url.clone()).with_metadata(metadata).with_timeout(timeout);
        if url.starts_with("https://") {
            b = b.with_tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots());
        }
        b.build()
    };
    built.map(Some).map_err(|e| fail(e.to_string()))
}

/// OTLP/HTTP requests through rapr's hyper client, bounded by the export timeout.
#[derive(Clone)]
struct OtlpHttpClient {
    client: HttpClient,
    timeout: Duration,
}

impl std::fmt::Debug for OtlpHttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OtlpHttpClient({})", self.client.scheme())
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpHttpClient {
    async fn send_bytes(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let call = async {
            let resp = self.client.request(request.map(axum::body::Body::from)).await.map_err(|e| tls::error_chain(&e))?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok::<_, String>(http::Response::from_parts(parts, body))
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r.map_err(Into::into),
            Err(_) => Err("the OTLP collector did not answer within the export timeout".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(url("127.0.0.1:4318", false, Some("/v1/traces")), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(url("https://c:4318/v1/traces", false, Some("/v1/traces")), "https://c:4318/v1/traces");
        assert_eq!(url("c:4317", true, None), "https://c:4317");
    }

    #[tokio::test]
    async fn builds_only_with_an_endpoint_and_a_protocol() {
        let spec = |protocol: Option<&str>| OtelSpec { endpoint: "127.0.0.1:4317".into(), protocol: protocol.map(str::to_string), ..Default::default() };
        assert!(matches!(exporter(&spec(None)), Err(OtlpError::NoProtocol(_))));
        assert!(matches!(exporter(&OtelSpec::default()), Ok(None)));
        let built = exporter(&spec(Some("grpc")));
        assert!(matches!(built, Ok(Some(_))), "TLS by default over gRPC: {:?}", built.err());
        assert!(matches!(exporter(&spec(Some("http"))), Ok(Some(_))), "TLS by default over HTTP");
        let bad = OtelSpec { headers: vec![("bad key".into(), "v".into())], ..spec(Some("grpc")) };
        assert!(matches!(exporter(&bad), Err(OtlpError::Build { .. })));
    }
}
