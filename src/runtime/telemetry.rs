//! Distributed tracing: W3C trace context in and out, spans sampled at the Configuration's
//! `spec.tracing.samplingRate`, exported over OTLP (`otel`, gRPC or HTTP protobuf) and/or to the
//! log (`stdout: true`).
//!
//! Every request to the HTTP, gRPC and internal servers runs under a server span, a child of the
//! caller's `traceparent` (or a new trace). The middleware rewrites the request's `traceparent`
//! to that span before the handler sees it, so whatever the handler forwards (invocation
//! headers to the target sidecar, then to the app) carries the same trace id and this hop's span
//! id: propagation needs no other hook. The trace id is a field of the request's log span.
//! Spans leave through a batch processor on its own task: recording never waits on the exporter.

use std::borrow::Cow;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracer, SdkTracerProvider, SpanData};
use tracing::Instrument;

use crate::config::configuration::TracingSpec;
use crate::runtime::metrics::Metrics;

/// How often finished spans are sent.
const EXPORT_DELAY: Duration = Duration::from_secs(1);

/// The sidecar's tracer (cheap to clone).
#[derive(Clone, Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    app_id: std::sync::Arc<str>,
}

/// Errors configuring an exporter.
#[derive(Debug, thiserror::Error)]
#[error("tracing exporter {endpoint}: {reason}")]
pub struct TracingError {
    endpoint: String,
    reason: String,
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut http::HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value)) {
            self.0.insert(k, v);
        }
    }
}

/// The OTLP endpoint URL from daprd's `endpointAddress` (`host:port`, or a URL).
fn otlp_url(endpoint: &str, secure: bool, http_path: Option<&str>) -> String {
    let base = if endpoint.contains("://") { endpoint.to_string() } else { format!("{}://{endpoint}", if secure { "https" } else { "http" }) };
    match http_path {
        Some(p) if !base.trim_end_matches('/').ends_with(p) => format!("{}{p}", base.trim_end_matches('/')),
        _ => base,
    }
}

/// Logs sampled spans (`stdout: true`).
#[derive(Debug)]
struct LogExporter;

impl opentelemetry_sdk::trace::SpanExporter for LogExporter {
    async fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        for s in batch {
            let took = s.end_time.duration_since(s.start_time).unwrap_or_default();
            tracing::info!(target: "rapr::trace", name = %s.name, trace_id = %s.span_context.trace_id(), span_id = %s.span_context.span_id(), parent_id = %s.parent_span_id, took = ?took, "span");
        }
        Ok(())
    }
}

impl Tracing {
    /// A tracer for `app_id` configured from `spec`; with no exporter, spans still propagate.
    pub fn new(app_id: &str, spec: &TracingSpec) -> Result<Self, TracingError> {
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(spec.sampling_rate)));
        let resource = opentelemetry_sdk::Resource::builder().with_service_name(if app_id.is_empty() { "rapr".to_string() } else { app_id.to_string() }).build();
        let mut builder = SdkTracerProvider::builder().with_sampler(sampler).with_resource(resource);
        let batch = || BatchConfigBuilder::default().with_scheduled_delay(EXPORT_DELAY).build();
        if let Some(otel) = &spec.otel {
            use opentelemetry_otlp::{WithExportConfig, WithTonicConfig as _};
            let fail = |e: &dyn std::fmt::Display| TracingError { endpoint: otel.endpoint.clone(), reason: e.to_string() };
            let exporter = if otel.protocol == "http" {
                let url = otlp_url(&otel.endpoint, otel.is_secure, Some("/v1/traces"));
                opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(opentelemetry_otlp::Protocol::HttpBinary).with_endpoint(url).build()
            } else {
                let url = otlp_url(&otel.endpoint, otel.is_secure, None);
                opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(url).with_compression(opentelemetry_otlp::Compression::Gzip).build()
            }
            .map_err(|e| fail(&e))?;
            let processor = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
                .with_batch_config(batch())
                .build();
            builder = builder.with_span_processor(processor);
        }
        if spec.stdout {
            let processor = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(LogExporter, opentelemetry_sdk::runtime::Tokio)
                .with_batch_config(batch())
                .build();
            builder = builder.with_span_processor(processor);
        }
        let provider = builder.build();
        let tracer = provider.tracer("rapr");
        Ok(Self { provider, tracer, app_id: std::sync::Arc::from(app_id) })
    }

    /// Sends what is buffered and stops the exporters (bounded: a dead collector never holds
    /// the shutdown).
    pub async fn shutdown(&self) {
        let provider = self.provider.clone();
        let flush = tokio::task::spawn_blocking(move || {
            let _ = provider.force_flush();
            let _ = provider.shutdown_with_timeout(Duration::from_secs(3));
        });
        let _ = tokio::time::timeout(Duration::from_secs(5), flush).await;
    }
}

/// The sidecar's metrics and tracer from its flags and Configuration. An exporter that cannot be
/// built is logged and left out: tracing never stops a sidecar.
pub fn setup(flags: &crate::config::SidecarArgs, cfg: &crate::config::ConfigurationSpec) -> (Metrics, Tracing) {
    let metrics = Metrics::new(&flags.app_id, flags.enable_metrics && cfg.metric.enabled, cfg.metric.increased_cardinality);
    if let Some(z) = &cfg.tracing.zipkin {
        tracing::warn!(endpoint = %z, "the zipkin trace exporter is not implemented by rapr yet; use otel");
    }
    let tracer = Tracing::new(&flags.app_id, &cfg.tracing).unwrap_or_else(|e| {
        tracing::error!(error = %e, "trace exporter unavailable; spans are only propagated");
        let spec = TracingSpec { sampling_rate: cfg.tracing.sampling_rate, ..Default::default() };
        // reason: without an exporter nothing can fail.
        #[allow(clippy::expect_used)]
        Tracing::new(&flags.app_id, &spec).expect("a tracer without exporters")
    });
    (metrics, tracer)
}

/// Wraps a server's router with tracing (outermost) and metrics middleware.
pub fn instrument(router: axum::Router, grpc: bool, metrics: &Metrics, tracer: &Tracing) -> axum::Router {
    let router = if grpc {
        router.layer(axum::middleware::from_fn_with_state(metrics.clone(), crate::runtime::metrics::grpc_server))
    } else {
        router.layer(axum::middleware::from_fn_with_state(metrics.clone(), crate::runtime::metrics::http_server))
    };
    router.layer(axum::middleware::from_fn_with_state(tracer.clone(), server_span))
}

/// Middleware of the HTTP, gRPC and internal servers: a server span per request, the request's
/// `traceparent` rewritten to it, and a log span carrying the trace id.
pub async fn server_span(State(t): State<Tracing>, mut req: Request, next: Next) -> Response {
    let propagator = TraceContextPropagator::new();
    let parent = propagator.extract(&Headers(req.headers()));
    let grpc = req.headers().get(http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let path = req.uri().path().to_string();
    let name: Cow<'static, str> = if grpc { Cow::Owned(path.clone()) } else { Cow::Owned(format!("{} {path}", req.method())) };
    let mut span = t
        .tracer
        .span_builder(name)
        .with_kind(SpanKind::Server)
        .with_attributes([KeyValue::new("dapr.app_id", t.app_id.to_string()), KeyValue::new(if grpc { "rpc.method" } else { "http.target" }, path)])
        .start_with_context(&t.tracer, &parent);
    let sc = span.span_context().clone();
    let cx = Context::new().with_remote_span_context(sc.clone());
    propagator.inject_context(&cx, &mut HeadersMut(req.headers_mut()));
    let log_span = tracing::info_span!("request", trace_id = %sc.trace_id(), span_id = %sc.span_id());
    let resp = next.run(req).instrument(log_span).await;
    if grpc {
        if let Some(code) = resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()) {
            span.set_attribute(KeyValue::new("rpc.grpc.status_code", code.to_string()));
        }
    } else {
        span.set_attribute(KeyValue::new("http.status_code", i64::from(resp.status().as_u16())));
    }
    span.end();
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(otlp_url("127.0.0.1:4318", false, Some("/v1/traces")), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(otlp_url("https://c:4318/v1/traces", false, Some("/v1/traces")), "https://c:4318/v1/traces");
        assert_eq!(otlp_url("c:4317", true, None), "https://c:4317");
    }

    #[tokio::test]
    async fn rewrites_traceparent_keeping_the_trace_id() {
        let t = Tracing::new("a", &TracingSpec { sampling_rate: 1.0, ..Default::default() }).unwrap();
        let app = axum::Router::new()
            .route("/x", axum::routing::get(|h: http::HeaderMap| async move { h.get("traceparent").unwrap().to_str().unwrap().to_string() }))
            .layer(axum::middleware::from_fn_with_state(t, server_span));
        let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let req = http::Request::builder().uri("/x").header("traceparent", incoming).body(axum::body::Body::empty()).unwrap();
        let resp = tower::ServiceExt::oneshot(app, req).await.unwrap();
        let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
        let seen = String::from_utf8(body.to_vec()).unwrap();
        assert!(seen.starts_with("00-0af7651916cd43dd8448eb211c80319c-"), "{seen}");
        assert_ne!(seen, incoming, "a new span id");
        assert!(seen.ends_with("-01"));
    }
}
