//! Distributed tracing: W3C trace context (and gRPC's `grpc-trace-bin`) in and out, spans
//! sampled at the Configuration's `spec.tracing.samplingRate` (daprd's parent-based ratio
//! sampler; a rate of 0 switches the middleware off as daprd's `IsTracingEnabled`), exported
//! over OTLP (`otel`, see `otlp.rs`), to Zipkin (`zipkin.endpointAddress`, JSON v2) and/or to
//! the log (`stdout: true`).
//!
//! Every request to the HTTP, gRPC and internal servers (but health probes) runs under a span, a
//! child of the caller's `traceparent` (or a new trace), kinded, named and tagged as daprd's
//! (see `span_attrs`). The middleware rewrites the request's `traceparent`
//! to that span before the handler sees it, so whatever the handler forwards (invocation
//! headers to the target sidecar, then to the app) carries the same trace id and this hop's span
//! id: propagation needs no other hook. The answer carries this hop's context back as daprd's
//! does: `traceparent` (and `tracestate`) on HTTP answers that have none, `grpc-trace-bin` on
//! gRPC answers but `InvokeService`'s and proxied calls'; a valid `baggage` header is echoed,
//! an invalid one refused (`baggage.rs`). The trace id is a field of the
//! request's log span.
//! Spans leave through a batch processor on its own task: recording never waits on the exporter.

use std::borrow::Cow;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracer, SdkTracerProvider, SpanData};
use tracing::Instrument;

use crate::config::configuration::TracingSpec;
use crate::runtime::metrics::Metrics;
use crate::runtime::span_attrs::{self, SpanDetails};
use crate::runtime::trace_context;

/// How often finished spans are sent.
const EXPORT_DELAY: Duration = Duration::from_secs(1);

/// The sidecar's tracer (cheap to clone).
#[derive(Clone, Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    app_id: std::sync::Arc<str>,
    /// `samplingRate` is not 0: spans are started (else no middleware at all).
    enabled: bool,
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

/// The resource's `service.name`: `OTEL_SERVICE_NAME` when set (as daprd's resource reads the
/// environment), else the app id.
fn service_name(app_id: &str) -> String {
    match std::env::var("OTEL_SERVICE_NAME") {
        Ok(name) if !name.is_empty() => name,
        _ if app_id.is_empty() => "rapr".to_string(),
        _ => app_id.to_string(),
    }
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
            match super::otlp::exporter(otel) {
                Ok(Some(e)) => builder = builder.with_span_processor(batched(e)),
                Ok(None) => {}
                // daprd skips the exporter silently and starts; rapr says why.
                Err(e @ super::otlp::OtlpError::NoProtocol(_)) => tracing::warn!("{e}"),
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
        (Self { provider, tracer, app_id: std::sync::Arc::from(app_id), enabled: spec.enabled() }, errors)
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

/// The sidecar's metrics and tracer from its flags, Configuration and the `OTEL_EXPORTER_OTLP_*`
/// environment. An exporter that cannot be built (a Zipkin address that is not a URL) and
/// environment variables daprd cannot read stop the sidecar, as they stop daprd.
pub fn setup(flags: &crate::config::SidecarArgs, cfg: &crate::config::ConfigurationSpec) -> Result<(Metrics, Tracing), String> {
    let metrics = Metrics::with_options(&flags.app_id, metric_options(flags.enable_metrics, &cfg.metric));
    let mut spec = cfg.tracing.clone();
    crate::config::tracing_spec::tracing_from_env(&mut spec, |k| std::env::var(k).ok()).map_err(|e| format!("error setting tracing spec from env: {e}"))?;
    // As daprd's setupTracing: an exporter that cannot be built stops the start.
    let tracer = Tracing::new(&flags.app_id, &spec).map_err(|e| format!("failed to setup tracing: {}", e.reason))?;
    if !spec.enabled() {
        tracing::info!("tracing disabled (samplingRate 0): no spans, trace headers pass untouched");
    }
    Ok((metrics, tracer))
}

/// The metrics' shape from the Configuration's `spec.metric`. As daprd, a rule whose regex does
/// not compile is logged and no rule applies; `recordErrorCodes` is warned about (rapr does not
/// record `dapr_error_code_total`).
fn metric_options(flag: bool, m: &crate::config::configuration::MetricSpec) -> crate::runtime::metrics::MetricOptions {
    use crate::runtime::metrics::LabelRule;
    let rules = m.rules.iter().map(|r| LabelRule::new(&r.name, &r.label, &r.regex)).collect::<Result<Vec<_>, _>>();
    let rules = rules.unwrap_or_else(|e| {
        tracing::error!(error = %e, "metrics rules not applied");
        Vec::new()
    });
    if m.record_error_codes {
        tracing::warn!("spec.metric.recordErrorCodes is not implemented by rapr: dapr_error_code_total is not recorded");
    }
    crate::runtime::metrics::MetricOptions {
        enabled: flag && m.enabled,
        increased_cardinality: m.increased_cardinality,
        exclude_verbs: m.exclude_verbs,
        path_matching: m.path_matching.clone(),
        latency_buckets: m.latency_buckets.clone(),
        rules,
    }
}

/// Wraps a server's router with tracing (outermost) and metrics middleware.
pub fn instrument(router: axum::Router, grpc: bool, metrics: &Metrics, tracer: &Tracing) -> axum::Router {
    let router = if grpc {
        router.layer(axum::middleware::from_fn_with_state(metrics.clone(), crate::runtime::metrics::grpc_server))
    } else {
        router.layer(axum::middleware::from_fn_with_state(metrics.clone(), crate::runtime::metrics::http_server))
    };
    if !tracer.enabled {
        return router;
    }
    router.layer(axum::middleware::from_fn_with_state(tracer.clone(), server_span))
}

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// Middleware of the HTTP, gRPC and internal servers: a span per request (daprd's kind, name
/// and attributes), the request's `traceparent` rewritten to it, a [`SpanDetails`] slot for the
/// handler, and a log span carrying the trace id.
pub async fn server_span(State(t): State<Tracing>, mut req: Request, next: Next) -> Response {
    let grpc = req.headers().get(http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let path = req.uri().path().to_string();
    if !grpc && span_attrs::untraced_http(&path) {
        return next.run(req).await;
    }
    // W3C baggage as daprd's middleware: refused when invalid, echoed when valid.
    let baggage_values: Vec<&str> = req.headers().get_all(super::baggage::HEADER).iter().filter_map(|v| v.to_str().ok()).collect();
    let baggage = match super::baggage::check(&baggage_values) {
        Ok(b) => b,
        Err(e) if grpc => return tonic::Status::invalid_argument(format!("invalid baggage header: {e}")).into_http::<axum::body::Body>(),
        Err(e) => return (http::StatusCode::BAD_REQUEST, [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("invalid baggage header: {e}\n")).into_response(),
    };
    let propagator = TraceContextPropagator::new();
    // gRPC: daprd reads `grpc-trace-bin` first, `traceparent` only without it.
    let binary = grpc.then(|| req.headers().get(trace_context::GRPC_TRACE_BIN).and_then(|v| binary_header(v.as_bytes()))).flatten();
    let parent = match binary {
        Some(sc) => Context::new().with_remote_span_context(sc),
        None => propagator.extract(&Headers(req.headers())),
    };
    let callee = req.headers().get("dapr-callee-app-id").or_else(|| req.headers().get("dapr-app-id")).and_then(|v| v.to_str().ok());
    let kind = span_attrs::kind(grpc, &path, callee, &t.app_id);
    let mut span = t.tracer.span_builder(Cow::Owned(span_attrs::initial_name(grpc, &path))).with_kind(kind).start_with_context(&t.tracer, &parent);
    let sc = span.span_context().clone();
    // What `TraceContextPropagator::inject_context` writes (traceparent with the sampled flag
    // only, and tracestate, even empty, for a valid context), without its `format!`.
    if sc.is_valid() {
        req.headers_mut().insert(TRACEPARENT, trace_context::traceparent_header(&sc, sc.trace_flags().to_u8() & 1));
        if let Ok(v) = http::HeaderValue::from_str(&sc.trace_state().header()) {
            req.headers_mut().insert(TRACESTATE, v);
        }
    }
    if grpc {
        req.headers_mut().remove(trace_context::GRPC_TRACE_BIN);
    }
    // What the attributes need from the request, kept only when they will be recorded.
    let sampled = sc.is_sampled();
    let details = SpanDetails::default();
    let peer = req.extensions().get::<span_attrs::PeerAddr>().copied();
    let request_parts = sampled.then(|| (req.method().to_string(), req.uri().path_and_query().map_or_else(|| path.clone(), |p| p.as_str().to_string()), req.headers().clone()));
    if grpc {
        req.extensions_mut().insert(details.clone());
    }
    let log_span = tracing::info_span!("request", trace_id = %sc.trace_id(), span_id = %sc.span_id());
    let mut resp = next.run(req).instrument(log_span).await;
    answer_trace_headers(&mut resp, grpc, &path, &sc);
    if let Some(v) = baggage.and_then(|b| http::HeaderValue::from_str(&b).ok()) {
        resp.headers_mut().insert(super::baggage::HEADER, v);
    }
    if let Some((method, path_and_query, headers)) = request_parts {
        if grpc {
            let (name, attrs) = span_attrs::grpc_attributes(&path, &headers, &details, &t.app_id);
            if let Some(name) = name {
                span.update_name(name);
            }
            span.set_attributes(attrs);
        } else {
            span.set_attributes(span_attrs::http_attributes(&method, &path, &path_and_query, resp.status().as_u16(), &headers, peer));
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

/// A span the sidecar starts itself for a call it makes to its app (daprd's
/// `StartInternalCallbackSpan`): CLIENT kind, a child of the context an event carries. The app
/// gets this span's context, not the event's.
pub struct CallbackSpan {
    span: opentelemetry_sdk::trace::Span,
    traceparent: String,
}

impl Tracing {
    /// A pub/sub delivery span `pubsub/<topic>` under `parent` (the event's `traceparent`, else
    /// `traceid`; a value that does not parse starts a new trace, as daprd's). `None` with tracing
    /// switched off (then the app gets no trace context from the sidecar).
    pub fn delivery_span(&self, topic: &str, parent: &str) -> Option<CallbackSpan> {
        if !self.enabled {
            return None;
        }
        let cx = trace_context::parse_traceparent(parent).map_or_else(Context::new, |sc| Context::new().with_remote_span_context(sc));
        let span = self.tracer.span_builder(format!("pubsub/{topic}")).with_kind(opentelemetry::trace::SpanKind::Client).start_with_context(&self.tracer, &cx);
        let traceparent = trace_context::traceparent(span.span_context());
        Some(CallbackSpan { span, traceparent })
    }
}

impl Tracing {
    /// A PRODUCER span `name` under `parent` (the bulk publish request's span), one per entry of a
    /// bulk publish, whose context the entry's CloudEvent carries (daprd's
    /// `StartProducerSpanChildFromParent` / `StartGRPCProducerSpanChildFromParent`). `None` with
    /// tracing off.
    pub fn producer_span(&self, name: &str, parent: &str) -> Option<CallbackSpan> {
        if !self.enabled {
            return None;
        }
        let cx = trace_context::parse_traceparent(parent).map_or_else(Context::new, |sc| Context::new().with_remote_span_context(sc));
        let span = self.tracer.span_builder(name.to_string()).with_kind(opentelemetry::trace::SpanKind::Producer).start_with_context(&self.tracer, &cx);
        let traceparent = trace_context::traceparent(span.span_context());
        Some(CallbackSpan { span, traceparent })
    }
}

/// The delivery spans of a batch: one per entry with a trace context (daprd's bulk postmen).
pub fn batch_spans(tracer: Option<&Tracing>, topic: &str, parents: impl Iterator<Item = Option<String>>) -> Vec<CallbackSpan> {
    let Some(t) = tracer else { return Vec::new() };
    parents.flatten().filter_map(|p| t.delivery_span(topic, &p)).collect()
}

impl CallbackSpan {
    /// The W3C `traceparent` of this span, for the call to the app.
    pub fn traceparent(&self) -> &str {
        &self.traceparent
    }

    /// Ends a delivery span with daprd's subscription attributes and the app's answer: an HTTP
    /// status (`None`: the app was not reached) or a gRPC error.
    pub fn end_delivery(mut self, topic: &str, http_status: Option<u16>, grpc_error: Option<&str>) {
        self.span.set_attributes([opentelemetry::KeyValue::new("messaging.system", "pubsub"), opentelemetry::KeyValue::new("messaging.destination.name", topic.to_string())]);
        if let Some(code) = http_status {
            self.span.set_status(span_attrs::http_status(http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR)));
        }
        if let Some(message) = grpc_error {
            self.span.set_status(opentelemetry::trace::Status::error(message.to_string()));
        }
        self.span.end();
    }

    /// Ends a producer span: an error status when the publish failed (daprd sets every entry's
    /// span from the request's final status).
    pub fn end_producer(mut self, error: Option<&str>) {
        if let Some(message) = error {
            self.span.set_status(opentelemetry::trace::Status::error(message.to_string()));
        }
        self.span.end();
    }
}

/// The binary context of a `grpc-trace-bin` value: raw bytes, or base64 as HTTP/2 carries
/// `-bin` metadata.
fn binary_header(v: &[u8]) -> Option<opentelemetry::trace::SpanContext> {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD_NO_PAD;
    let text = std::str::from_utf8(v).ok()?.trim_end_matches('=');
    engine.decode(text).ok().and_then(|b| trace_context::from_binary(&b))
}

/// This hop's trace context on the answer, as daprd's middleware writes it: an HTTP answer gets
/// `traceparent` (and `tracestate`) unless the handler set one; a gRPC answer gets
/// `grpc-trace-bin`, but not `InvokeService`'s (the target's headers are passed through there)
/// nor a proxied call's.
fn answer_trace_headers(resp: &mut Response, grpc: bool, path: &str, sc: &opentelemetry::trace::SpanContext) {
    if grpc {
        if path == "/dapr.proto.runtime.v1.Dapr/InvokeService" || span_attrs::proxied(path) {
            return;
        }
        if let Some(b) = trace_context::to_binary(sc) {
            use base64::Engine as _;
            if let Ok(v) = http::HeaderValue::from_str(&base64::engine::general_purpose::STANDARD_NO_PAD.encode(b)) {
                resp.headers_mut().insert(trace_context::GRPC_TRACE_BIN, v);
            }
        }
    } else if !resp.headers().contains_key("traceparent") && sc.is_valid() {
        resp.headers_mut().insert(TRACEPARENT, trace_context::traceparent_header(sc, sc.trace_flags().to_u8()));
        let state = sc.trace_state().header();
        if !state.is_empty() && state.len() <= 512 {
            if let Ok(v) = http::HeaderValue::from_str(&state) {
                resp.headers_mut().insert("tracestate", v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
