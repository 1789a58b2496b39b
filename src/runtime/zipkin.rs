//! The Zipkin trace exporter (`spec.tracing.zipkin.endpointAddress`): finished spans POSTed as a
//! Zipkin v2 JSON array, shaped as daprd's exporter (OpenTelemetry Go's `exporters/zipkin`) shapes
//! them, so a Zipkin UI shows rapr's sidecars exactly as it shows daprd's.
//!
//! Written here rather than taken from the `opentelemetry-zipkin` crate: its 0.33 release (the one
//! matching our OpenTelemetry version) is marked deprecated and sends no `localEndpoint.serviceName`,
//! so every span would appear under an unknown service instead of the app id.
//!
//! The mapping, as Go's: ids as lowercase hex (`parentId` only when there is one); kind `CLIENT`,
//! `SERVER`, `PRODUCER`, `CONSUMER` (none for internal spans); microsecond `timestamp` and
//! `duration`; `localEndpoint.serviceName` = the resource's `service.name` (the app id);
//! `remoteEndpoint` for client and producer spans from the peer attributes; every attribute as a
//! string tag, plus `otel.status_code` and `error` (the description) when the status is set.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use http_body_util::BodyExt as _;
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::SpanData;
use serde::Serialize;

use crate::invoke::tls::{self, Alpn, HttpClient};

/// A collector that does not answer within this is given up on (the batch is dropped).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Attributes naming the other side of a client or producer span, best first (a subset of Go's
/// ranking: the ones rapr's spans carry).
const REMOTE_KEYS: &[&str] = &["peer.service", "server.address", "net.peer.name", "network.peer.address"];

/// Exports spans to one Zipkin collector.
#[derive(Debug)]
pub struct ZipkinExporter {
    url: http::Uri,
    client: ClientDebug,
    service_name: String,
}

/// `HttpClient` has no `Debug`; the exporter trait needs one.
struct ClientDebug(HttpClient);

impl std::fmt::Debug for ClientDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.scheme())
    }
}

/// Why the exporter could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum ZipkinError {
    /// `endpointAddress` has no scheme or host: OpenTelemetry Go's zipkin exporter's words,
    /// which daprd's start fails with.
    #[error("invalid collector URL {0:?}: no scheme or host")]
    Url(String),
    /// A scheme other than http or https (Go's exporter takes it and fails on each export).
    #[error("invalid collector URL {0:?}: rapr exports to http:// or https:// only")]
    Scheme(String),
    /// The TLS client for an `https://` collector.
    #[error("zipkin TLS client: {0}")]
    Tls(#[from] tls::TlsError),
}

impl ZipkinExporter {
    /// An exporter to `endpoint` (daprd takes it as given, e.g.
    /// `http://localhost:9411/api/v2/spans`) whose spans belong to `service_name` until the SDK
    /// hands over its resource.
    pub fn new(endpoint: &str, service_name: &str) -> Result<Self, ZipkinError> {
        let url: http::Uri = endpoint.parse().map_err(|_| ZipkinError::Url(endpoint.to_string()))?;
        let client = match url.scheme_str() {
            Some("http") => HttpClient::plain(false),
            Some("https") => HttpClient::tls(tls::system_config()?, Alpn::Any),
            None => return Err(ZipkinError::Url(endpoint.to_string())),
            Some(_) => return Err(ZipkinError::Scheme(endpoint.to_string())),
        };
        if url.host().is_none() {
            return Err(ZipkinError::Url(endpoint.to_string()));
        }
        Ok(Self { url, client: ClientDebug(client), service_name: service_name.to_string() })
    }

    async fn post(&self, body: Vec<u8>) -> OTelSdkResult {
        let fail = |e: String| OTelSdkError::InternalFailure(format!("zipkin export to {}: {e}", self.url));
        let req = http::Request::post(self.url.clone()).header(http::header::CONTENT_TYPE, "application/json").body(Body::from(body)).map_err(|e| fail(e.to_string()))?;
        let resp = tokio::time::timeout(EXPORT_TIMEOUT, self.client.0.request(req)).await.map_err(|_| fail("timed out".into()))?.map_err(|e| fail(tls::error_chain(&e)))?;
        let status = resp.status();
        // Read the answer to the end so the connection can be reused.
        let _ = tokio::time::timeout(EXPORT_TIMEOUT, resp.into_body().collect()).await;
        if status.is_success() {
            Ok(())
        } else {
            Err(fail(format!("the collector answered {status}")))
        }
    }
}

impl opentelemetry_sdk::trace::SpanExporter for ZipkinExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans: Vec<ZipkinSpan> = batch.iter().map(|s| ZipkinSpan::from_span(s, &self.service_name)).collect();
        let body = serde_json::to_vec(&spans).map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?;
        self.post(body).await
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        if let Some(name) = resource.get(&opentelemetry::Key::from_static_str("service.name")) {
            self.service_name = name.to_string();
        }
    }
}

/// One span of the Zipkin v2 JSON model.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ZipkinSpan {
    trace_id: String,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_id: Option<String>,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    timestamp: u64,
    duration: u64,
    local_endpoint: Endpoint,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    annotations: Vec<Annotation>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tags: BTreeMap<String, String>,
}

/// A Zipkin endpoint: a service name or an address.
#[derive(Debug, Serialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
struct Endpoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    service_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv4: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv6: Option<String>,
}

/// A span event.
#[derive(Debug, Serialize, PartialEq)]
struct Annotation {
    timestamp: u64,
    value: String,
}

fn micros(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_micros()).unwrap_or(u64::MAX)
}

impl ZipkinSpan {
    /// `s` in Zipkin's model, belonging to `service`.
    pub fn from_span(s: &SpanData, service: &str) -> Self {
        let kind = match s.span_kind {
            SpanKind::Client => Some("CLIENT"),
            SpanKind::Server => Some("SERVER"),
            SpanKind::Producer => Some("PRODUCER"),
            SpanKind::Consumer => Some("CONSUMER"),
            SpanKind::Internal => None,
        };
        let mut tags: BTreeMap<String, String> = s.attributes.iter().map(|kv| (kv.key.to_string(), kv.value.to_string())).collect();
        match &s.status {
            Status::Unset => {}
            Status::Ok => {
                tags.insert("otel.status_code".into(), "Ok".into());
            }
            Status::Error { description } => {
                tags.insert("otel.status_code".into(), "Error".into());
                tags.insert("error".into(), description.to_string());
            }
        }
        tags.insert("otel.scope.name".into(), s.instrumentation_scope.name().to_string());
        let remote_endpoint = matches!(s.span_kind, SpanKind::Client | SpanKind::Producer)
            .then(|| REMOTE_KEYS.iter().find_map(|k| tags.get(*k).map(|v| (*k, v))))
            .flatten()
            .and_then(|(key, peer)| match key {
                // Only a peer *address* is read as an IP (OpenTelemetry Go's exporter); any other
                // key is a service name, even `server.address: 127.0.0.1` as daprd sets it.
                "network.peer.address" => match peer.parse::<IpAddr>() {
                    Ok(IpAddr::V4(ip)) => Some(Endpoint { ipv4: Some(ip.to_string()), ..Default::default() }),
                    Ok(IpAddr::V6(ip)) => Some(Endpoint { ipv6: Some(ip.to_string()), ..Default::default() }),
                    Err(_) => None,
                },
                _ => Some(Endpoint { service_name: Some(peer.clone()), ..Default::default() }),
            });
        Self {
            trace_id: s.span_context.trace_id().to_string(),
            id: s.span_context.span_id().to_string(),
            parent_id: (s.parent_span_id != opentelemetry::trace::SpanId::INVALID).then(|| s.parent_span_id.to_string()),
            name: s.name.to_string(),
            kind,
            timestamp: micros(s.start_time),
            duration: u64::try_from(s.end_time.duration_since(s.start_time).unwrap_or_default().as_micros()).unwrap_or(u64::MAX),
            local_endpoint: Endpoint { service_name: Some(service.to_string()), ..Default::default() },
            remote_endpoint,
            annotations: s.events.iter().map(|e| Annotation { timestamp: micros(e.timestamp), value: e.name.to_string() }).collect(),
            tags,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry::KeyValue;

    fn span(kind: SpanKind, parent: SpanId, status: Status, attributes: Vec<KeyValue>) -> SpanData {
        let start = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_000);
        SpanData {
            span_context: SpanContext::new(TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736), SpanId::from(0x00f0_67aa_0ba9_02b7), TraceFlags::SAMPLED, false, TraceState::default()),
            parent_span_id: parent,
            parent_span_is_remote: true,
            span_kind: kind,
            name: "CallLocal/b/m".into(),
            start_time: start,
            end_time: start + Duration::from_micros(1500),
            attributes,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status,
            instrumentation_scope: opentelemetry::InstrumentationScope::builder("rapr").build(),
        }
    }

    #[test]
    fn maps_a_client_span_as_gos_exporter() {
        let s = span(SpanKind::Client, SpanId::from(0x1122_3344_5566_7788), Status::error("Code(500): Internal Server Error"), vec![KeyValue::new("net.peer.name", "b")]);
        let json = serde_json::to_value(ZipkinSpan::from_span(&s, "a")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "id": "00f067aa0ba902b7", "parentId": "1122334455667788",
                "name": "CallLocal/b/m", "kind": "CLIENT", "timestamp": 1_700_000_000_000_000u64, "duration": 1500,
                "localEndpoint": {"serviceName": "a"}, "remoteEndpoint": {"serviceName": "b"},
                "tags": {"net.peer.name": "b", "otel.status_code": "Error", "error": "Code(500): Internal Server Error", "otel.scope.name": "rapr"}
            })
        );
    }

    #[test]
    fn a_root_server_span_has_no_parent_and_no_remote_endpoint() {
        let s = span(SpanKind::Server, SpanId::INVALID, Status::Unset, vec![KeyValue::new("net.peer.name", "b")]);
        let json = serde_json::to_value(ZipkinSpan::from_span(&s, "a")).unwrap();
        assert!(json.get("parentId").is_none() && json.get("remoteEndpoint").is_none(), "{json}");
        assert_eq!(json["kind"], "SERVER");
        let internal = serde_json::to_value(ZipkinSpan::from_span(&span(SpanKind::Internal, SpanId::INVALID, Status::Unset, vec![]), "a")).unwrap();
        assert!(internal.get("kind").is_none());
    }

    #[test]
    fn refuses_endpoints_that_are_not_urls() {
        let e = ZipkinExporter::new("localhost:9411", "a").unwrap_err().to_string();
        assert_eq!(e, "invalid collector URL \"localhost:9411\": no scheme or host", "daprd's words");
        assert!(ZipkinExporter::new("ftp://h/api/v2/spans", "a").is_err());
        assert!(ZipkinExporter::new("http://localhost:9411/api/v2/spans", "a").is_ok());
    }
}
