//! Distributed tracing: W3C trace context in and out, spans sampled at the Configuration's
//! `spec.tracing.samplingRate` (daprd's parent-based ratio sampler), exported over OTLP (`otel`,
//! gRPC or HTTP protobuf), to Zipkin (`zipkin.endpointAddress`, JSON v2) and/or to the log
//! (`stdout: true`).
//!
//! Every request to the HTTP, gRPC and internal servers (but health probes) runs under a span, a
//! child of the caller's `traceparent` (or a new trace), kinded, named and tagged as daprd's
//! (see `span_attrs`). The middleware rewrites the request's `traceparent`
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
use opentelemetry::trace::{Span as _, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracer, SdkTracerProvider, SpanData};
use tracing::Instrument;

use crate::config::configuration::TracingSpec;
use crate::runtime::metrics::Metrics;
use crate::runtime::span_attrs::{self, SpanDetails};

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

/// The resource's `service.name`: the app id.
fn service_name(app_id: &str) -> String {
    if app_id.is_empty() { "rapr".to_string() } else { app_id.to_string() }
}

impl Tracing {
    /// A tracer for `app_id` configured from `spec`; with no exporter, spans still propagate.
    /// Fails on the first exporter that cannot be configured.
    pub fn new(app_id: &str, spec: &TracingSpec) -> Result<Self, TracingError> {
        let (tracing, mut errors) = Self::with_errors(app_id, spec);
        if errors.is_empty() { Ok(tracing) } else { Err(errors.swap_remove(0)) }
    }

    /// A tracer with every exporter of `spec` that could be configured, and why the others could
    /// not (each exporter stands alone: a bad Zipkin URL leaves OTLP export working).
    pub fn with_errors(app_id: &str, spec: &TracingSpec) -> (Self, Vec<TracingError>) {
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(spec.sampling_rate)));
        let resource = opentelemetry_sdk::Resource::builder().with_service_name(service_name(app_id)).build();
        let mut builder = SdkTracerProvider::builder().with_sampler(sampler).with_resource(resource);
        let mut errors = Vec::new();
        fn batched<E: opentelemetry_sdk::trace::SpanExporter + 'static>(exporter: E) -> impl opentelemetry_sdk::trace::SpanProcessor {
            opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
                .with_batch_config(BatchConfigBuilder::default().with_scheduled_delay(EXPORT_DELAY).build())
                .build()
        }
        if let Some(otel) = &spec.otel {
            use opentelemetry_otlp::{WithExportConfig, WithTonicConfig as _};
            let exporter = if otel.protocol == "http" {
                let url = otlp_url(&otel.endpoint, otel.is_secure, Some("/v1/traces"));
                opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(opentelemetry_otlp::Protocol::HttpBinary).with_endpoint(url).build()
            } else {
                let url = otlp_url(&otel.endpoint, otel.is_secure, None);
                opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(url).with_compression(opentelemetry_otlp::Compression::Gzip).build()
            };
            match exporter {
                Ok(e) => builder = builder.with_span_processor(batched(e)),
                Err(e) => errors.push(TracingError { endpoint: otel.endpoint.clone(), reason: e.to_string() }),
            }
        }
        if let Some(endpoint) = &spec.zipkin {
            match super::zipkin::ZipkinExporter::new(endpoint, &service_name(app_id)) {
                Ok(e) => builder = builder.with_span_processor(batched(e)),
                Err(e) => errors.push(TracingError { endpoint: endpoint.clone(), reason: e.to_string() }),
            }
        }
        if spec.stdout {
            builder = builder.with_span_processor(batched(LogExporter));
        }
        let provider = builder.build();
        let tracer = provider.tracer("rapr");
        (Self { provider, tracer, app_id: std::sync::Arc::from(app_id) }, errors)
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
    let (tracer, errors) = Tracing::with_errors(&flags.app_id, &cfg.tracing);
    for e in errors {
        tracing::error!(error = %e, "trace exporter unavailable; its spans are not exported");
    }
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

/// Middleware of the HTTP, gRPC and internal servers: a span per request (daprd's kind, name
/// and attributes), the request's `traceparent` rewritten to it, a [`SpanDetails`] slot for the
/// handler, and a log span carrying the trace id.
pub async fn server_span(State(t): State<Tracing>, mut req: Request, next: Next) -> Response {
    let grpc = req.headers().get(http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let path = req.uri().path().to_string();
    if !grpc && span_attrs::untraced_http(&path) {
        return next.run(req).await;
    }
    let propagator = TraceContextPropagator::new();
    let parent = propagator.extract(&Headers(req.headers()));
    let callee = req.headers().get("dapr-callee-app-id").or_else(|| req.headers().get("dapr-app-id")).and_then(|v| v.to_str().ok());
    let kind = span_attrs::kind(grpc, &path, callee, &t.app_id);
    let mut span = t.tracer.span_builder(Cow::Owned(span_attrs::initial_name(grpc, &path))).with_kind(kind).start_with_context(&t.tracer, &parent);
    let sc = span.span_context().clone();
    let cx = Context::new().with_remote_span_context(sc.clone());
    propagator.inject_context(&cx, &mut HeadersMut(req.headers_mut()));
    // What the attributes need from the request, kept only when they will be recorded.
    let sampled = sc.is_sampled();
    let details = SpanDetails::default();
    let request_parts = sampled.then(|| (req.method().to_string(), req.uri().path_and_query().map_or_else(|| path.clone(), |p| p.as_str().to_string()), req.headers().clone()));
    if grpc {
        req.extensions_mut().insert(details.clone());
    }
    let log_span = tracing::info_span!("request", trace_id = %sc.trace_id(), span_id = %sc.span_id());
    let resp = next.run(req).instrument(log_span).await;
    if let Some((method, path_and_query, headers)) = request_parts {
        if grpc {
            let (name, attrs) = span_attrs::grpc_attributes(&path, &headers, &details, &t.app_id);
            if let Some(name) = name {
                span.update_name(name);
            }
            span.set_attributes(attrs);
        } else {
            span.set_attributes(span_attrs::http_attributes(&method, &path, &path_and_query, resp.status().as_u16(), &headers));
        }
    }
    if grpc {
        let header = |k: &str| resp.headers().get(k).and_then(|v| v.to_str().ok());
        span.set_status(span_attrs::grpc_status(header("grpc-status"), header("grpc-message")));
    } else {
        span.set_status(span_attrs::http_status(resp.status()));
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
