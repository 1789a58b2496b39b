//! `GrpcSink`: events to a gRPC app through `AppCallback.OnTopicEvent` (a batch through
//! `OnBulkTopicEvent`, falling back to `AppCallbackAlpha.OnBulkTopicEventAlpha1` as daprd does
//! when the app lacks it), with the broker message's metadata, the trace context of a delivery
//! span started under the event's (`traceparent` and `grpc-trace-bin`, as daprd's) as gRPC
//! metadata and the app token, under `--app-max-concurrency`.
//!
//! Answers as daprd's gRPC postman reads them: the response status (SUCCESS, RETRY, DROP;
//! unknown retries), `Unimplemented` is acknowledged, any other error retries.

use std::sync::Arc;

use async_trait::async_trait;
use rapr_proto::app::app_callback_alpha_client::AppCallbackAlphaClient;
use rapr_proto::app::app_callback_client::AppCallbackClient;
use rapr_proto::app::{topic_event_bulk_request_entry, TopicEventBulkRequest, TopicEventBulkRequestEntry};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

use super::app_sink::{match_bulk_answers, AppBatch, AppEvent, AppSink};
use super::cloudevents::{grpc_cloud_event, grpc_request, DEFAULT_BULK_TYPE};
use super::outcome::AppAnswer;
use crate::invoke::app_channel::AppChannel;
use crate::invoke::app_health::AppHealthHandle;
use crate::runtime::telemetry::Tracing;
use crate::runtime::trace_context;

/// A gRPC app.
pub struct GrpcSink {
    app: Arc<AppChannel>,
    health: Option<AppHealthHandle>,
    tracer: Option<Tracing>,
}

impl GrpcSink {
    /// A sink over the app channel, waiting on `health` while the app is unhealthy.
    pub fn new(app: Arc<AppChannel>, health: Option<AppHealthHandle>) -> Self {
        Self { app, health, tracer: None }
    }

    /// Traces each delivery (a span per event, as daprd's postman).
    pub fn with_tracer(mut self, tracer: Option<Tracing>) -> Self {
        self.tracer = tracer;
        self
    }
}

/// The gRPC metadata an event carries: the broker's metadata, the delivery span's trace
/// context (`traceparent` and `grpc-trace-bin`), the token.
fn metadata_of(md: &crate::components::pubsub::Metadata, traceparent: Option<&str>, token: Option<&http::HeaderValue>) -> MetadataMap {
    let mut out = MetadataMap::new();
    let mut put = |k: &str, v: &str| {
        if let (Ok(key), Ok(val)) = (MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()), MetadataValue::try_from(v)) {
            out.insert(key, val);
        }
    };
    for (k, v) in md {
        if !k.eq_ignore_ascii_case("content-length") {
            put(k, v);
        }
    }
    if let Some(t) = token.and_then(|t| t.to_str().ok()) {
        put("dapr-api-token", t);
    }
    if let Some(p) = traceparent {
        out.remove("traceparent");
        append_trace(&mut out, p);
    }
    out
}

/// Appends a span's context as daprd's `SpanContextToGRPCMetadata` does: `traceparent` and
/// `grpc-trace-bin`.
fn append_trace(md: &mut MetadataMap, traceparent: &str) {
    if let Ok(v) = MetadataValue::try_from(traceparent) {
        md.append("traceparent", v);
    }
    if let Some(b) = trace_context::parse_traceparent(traceparent).and_then(|sc| trace_context::to_binary(&sc)) {
        md.append_bin(trace_context::GRPC_TRACE_BIN, tonic::metadata::MetadataValue::from_bytes(&b));
    }
}

fn request<T>(msg: T, md: MetadataMap) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    *r.metadata_mut() = md;
    r
}

#[async_trait]
impl AppSink for GrpcSink {
    async fn deliver(&self, ev: &AppEvent) -> AppAnswer {
        let envelope = match grpc_request(&ev.event, &ev.topic, &ev.pubsub, &ev.path) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(pubsub = %ev.pubsub, topic = %ev.topic, event = %ev.id(), error = %e, "error building the gRPC envelope of a pub/sub event");
                return AppAnswer::Retry;
            }
        };
        let Some((channel, token, _permit)) = self.app.grpc_call().await else {
            return AppAnswer::Retry;
        };
        if let Err(e) = self.app.ensure_healthy() {
            tracing::debug!(error = %e, "pub/sub event not sent: app unhealthy");
            return AppAnswer::Retry;
        }
        let span = self.tracer.as_ref().zip(ev.trace().0).and_then(|(t, parent)| t.delivery_span(&ev.topic, parent));
        let md = metadata_of(ev.metadata(), span.as_ref().map(|s| s.traceparent()), token.as_ref());
        let sent = AppCallbackClient::new(channel).on_topic_event(request(envelope, md)).await;
        if let Some(span) = span {
            span.end_delivery(&ev.topic, None, sent.as_ref().err().map(tonic::Status::message));
        }
        match sent {
            Ok(resp) => {
                let answer = AppAnswer::from_grpc_status(resp.into_inner().status);
                if answer == AppAnswer::Drop {
                    tracing::warn!(pubsub = %ev.pubsub, topic = %ev.topic, event = %ev.id(), "DROP status returned from app while processing pub/sub event");
                }
                answer
            }
            Err(status) => {
                let answer = AppAnswer::from_grpc_error(status.code());
                tracing::warn!(pubsub = %ev.pubsub, topic = %ev.topic, event = %ev.id(), code = ?status.code(), error = %status.message(), "error returned from app while processing pub/sub event");
                answer
            }
        }
    }

    async fn deliver_bulk(&self, batch: &AppBatch) -> Vec<AppAnswer> {
        let all = |a: AppAnswer| vec![a; batch.entries.len()];
        let mut entries = Vec::with_capacity(batch.entries.len());
        for e in &batch.entries {
            let event = if e.event.raw {
                topic_event_bulk_request_entry::Event::Bytes(e.event.message.data.to_vec())
            } else {
                match grpc_cloud_event(&e.event.event) {
                    Ok(ce) => topic_event_bulk_request_entry::Event::CloudEvent(ce),
                    // The whole batch retries; the entry's own retry decides its fate.
                    Err(err) => {
                        tracing::warn!(pubsub = %batch.pubsub, topic = %batch.topic, entry = %e.entry_id, error = %err, "error building a bulk gRPC entry");
                        return all(AppAnswer::Retry);
                    }
                }
            };
            entries.push(TopicEventBulkRequestEntry {
                entry_id: e.entry_id.clone(),
                event: Some(event),
                content_type: e.event.message.content_type.clone().unwrap_or_default(),
                metadata: e.event.metadata().clone(),
            });
        }
        let req = TopicEventBulkRequest {
            id: uuid::Uuid::new_v4().to_string(),
            entries,
            metadata: Default::default(),
            topic: batch.topic.clone(),
            pubsub_name: batch.pubsub.clone(),
            r#type: DEFAULT_BULK_TYPE.to_string(),
            path: batch.path.clone(),
        };
        let Some((channel, token, _permit)) = self.app.grpc_call().await else {
            return all(AppAnswer::Retry);
        };
        // As daprd's bulk postman: a span per traced entry, each one's context appended.
        let spans = crate::runtime::telemetry::batch_spans(self.tracer.as_ref(), &batch.topic, batch.entries.iter().map(|e| e.event.trace().0.map(str::to_string)));
        let mut md = metadata_of(&Default::default(), None, token.as_ref());
        for span in &spans {
            append_trace(&mut md, span.traceparent());
        }
        let mut result = AppCallbackClient::new(channel.clone()).on_bulk_topic_event(request(req.clone(), md.clone())).await;
        if matches!(&result, Err(s) if s.code() == tonic::Code::Unimplemented) {
            result = AppCallbackAlphaClient::new(channel).on_bulk_topic_event_alpha1(request(req, md)).await;
        }
        for span in spans {
            span.end_delivery(&batch.topic, None, result.as_ref().err().map(tonic::Status::message));
        }
        match result {
            Ok(resp) => {
                let answers: Vec<(String, Option<String>)> = resp
                    .into_inner()
                    .statuses
                    .into_iter()
                    .map(|s| {
                        let text = match s.status {
                            0 => "SUCCESS",
                            1 => "RETRY",
                            2 => "DROP",
                            _ => "UNKNOWN",
                        };
                        (s.entry_id, Some(text.to_string()))
                    })
                    .collect();
                match_bulk_answers(batch, &answers)
            }
            Err(status) => {
                tracing::warn!(pubsub = %batch.pubsub, topic = %batch.topic, code = ?status.code(), error = %status.message(), "error returned from app while processing bulk pub/sub event");
                all(AppAnswer::from_grpc_error(status.code()))
            }
        }
    }

    async fn until_healthy(&self) {
        if let Some(h) = &self.health {
            h.until_healthy().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_carries_broker_headers_trace_and_token() {
        let md = [("pubsubName".to_string(), "ps".to_string()), ("Content-Length".into(), "3".into()), ("bad key".into(), "x".into())].into_iter().collect();
        let token = http::HeaderValue::from_static("tok");
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let m = metadata_of(&md, Some(tp), Some(&token));
        assert_eq!(m.get("pubsubname").and_then(|v| v.to_str().ok()), Some("ps"));
        assert_eq!(m.get("traceparent").and_then(|v| v.to_str().ok()), Some(tp));
        assert_eq!(m.get("dapr-api-token").and_then(|v| v.to_str().ok()), Some("tok"));
        let bin = m.get_bin(trace_context::GRPC_TRACE_BIN).and_then(|v| v.to_bytes().ok()).expect("grpc-trace-bin as daprd sends it");
        assert_eq!(trace_context::from_binary(&bin).map(|sc| trace_context::traceparent(&sc)).as_deref(), Some(tp));
        assert!(m.get("content-length").is_none());
        assert_eq!(m.len(), 4);
    }
}
