//! `HttpSink`: events to an HTTP app, as daprd's HTTP postman posts them: `POST` to the route
//! with the CloudEvent (`application/cloudevents+json`), the broker message's metadata as
//! headers (`pubsubName` among them), the `traceparent` of a delivery span started under the
//! event's trace context (daprd's `pubsub/<topic>` span); a batch as one JSON body with
//! `entries` (`entryId`, `event`, `metadata`, `contentType`), answered with `statuses`.
//!
//! The call goes through the app channel, so `--app-max-concurrency`, `APP_API_TOKEN` and the
//! app-channel metrics apply as to an invocation.

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use http::Method;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::app_sink::{json_bytes, match_bulk_answers, AppBatch, AppEvent, AppSink};
use super::cloudevents::{http_delivery, DEFAULT_BULK_TYPE};
use super::outcome::AppAnswer;
use crate::invoke::app_channel::AppChannel;
use crate::invoke::app_health::AppHealthHandle;
use crate::invoke::message::CallMeta;
use crate::runtime::telemetry::Tracing;

/// Headers of the broker's metadata that never reach the app (daprd drops the original
/// payload's length; the content type is the CloudEvent's).
const SKIPPED: [&str; 2] = ["content-length", "content-type"];

/// An HTTP app.
pub struct HttpSink {
    app: Arc<AppChannel>,
    health: Option<AppHealthHandle>,
    tracer: Option<Tracing>,
}

impl HttpSink {
    /// A sink over the app channel, waiting on `health` while the app is unhealthy.
    pub fn new(app: Arc<AppChannel>, health: Option<AppHealthHandle>) -> Self {
        Self { app, health, tracer: None }
    }

    /// Traces each delivery (a span per event, as daprd's postman).
    pub fn with_tracer(mut self, tracer: Option<Tracing>) -> Self {
        self.tracer = tracer;
        self
    }

    async fn post(&self, path: &str, content_type: &str, headers: Vec<(String, String)>, body: bytes::Bytes) -> Result<(u16, bytes::Bytes), String> {
        let (method, query) = match path.split_once('?') {
            Some((m, q)) => (m, q),
            None => (path, ""),
        };
        let meta = CallMeta { method: method.trim_start_matches('/').to_string(), verb: Method::POST, query: query.to_string(), content_type: Some(content_type.to_string()), headers };
        let resp = self.app.call_http(&meta, Body::from(body)).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, body))
    }
}

/// The headers one event carries to the app: the broker's metadata, and the `traceparent` of
/// the delivery span when there is one (replacing any the metadata had, as daprd's channel sets
/// it over the custom headers).
fn headers_of(ev: &AppEvent, traceparent: Option<&str>) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = ev.metadata().iter().filter(|(k, _)| !SKIPPED.iter().any(|s| k.eq_ignore_ascii_case(s))).map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
    if let Some(p) = traceparent {
        h.retain(|(k, _)| k != "traceparent");
        h.push(("traceparent".into(), p.to_string()));
    }
    h
}

/// The JSON body of a batch, as daprd's bulk envelope.
pub fn bulk_body(batch: &AppBatch) -> Value {
    let entries: Vec<Value> = batch
        .entries
        .iter()
        .map(|e| {
            let ct = e.event.message.content_type.clone().unwrap_or_else(|| "application/cloudevents+json".into());
            json!({ "entryId": e.entry_id, "event": Value::Object((*e.event.event).clone()), "metadata": e.event.metadata(), "contentType": ct })
        })
        .collect();
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "entries": entries,
        "metadata": {},
        "pubsubname": batch.pubsub,
        "topic": batch.topic,
        "type": DEFAULT_BULK_TYPE,
    })
}

/// `{"statuses": [{"entryId", "status"}]}` as (id, status) pairs; anything else is no answers.
fn bulk_statuses(body: &[u8]) -> Option<Vec<(String, Option<String>)>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let list = v.get("statuses")?.as_array()?;
    Some(
        list.iter()
            .filter_map(|s| {
                let id = s.get("entryId")?.as_str()?.to_string();
                Some((id, s.get("status").and_then(Value::as_str).map(str::to_string)))
            })
            .collect(),
    )
}

#[async_trait]
impl AppSink for HttpSink {
    async fn deliver(&self, ev: &AppEvent) -> AppAnswer {
        let d = http_delivery(&ev.event, &ev.message, ev.raw);
        let span = self.tracer.as_ref().zip(ev.trace().0).and_then(|(t, parent)| t.delivery_span(&ev.topic, parent));
        let sent = self.post(&ev.path, d.content_type, headers_of(ev, span.as_ref().map(|s| s.traceparent())), d.body).await;
        if let Some(span) = span {
            span.end_delivery(&ev.topic, Some(sent.as_ref().map_or(500, |(status, _)| *status)), None);
        }
        match sent {
            Err(e) => {
                tracing::warn!(pubsub = %ev.pubsub, topic = %ev.topic, event = %ev.id(), error = %e, "error returned from app channel while sending pub/sub event to app");
                AppAnswer::Retry
            }
            Ok((status, body)) => {
                let answer = AppAnswer::from_http(status, &body);
                match answer {
                    AppAnswer::NotFound => tracing::error!(pubsub = %ev.pubsub, topic = %ev.topic, event = %ev.id(), status, body = %String::from_utf8_lossy(&body), "non-retriable error returned from app while processing pub/sub event"),
                    AppAnswer::Drop => tracing::warn!(pubsub = %ev.pubsub, topic = %ev.topic, event = %ev.id(), "DROP status returned from app while processing pub/sub event"),
                    AppAnswer::Retry if !(200..300).contains(&status) => {
                        tracing::warn!(pubsub = %ev.pubsub, topic = %ev.topic, event = %ev.id(), status, body = %String::from_utf8_lossy(&body), "retriable error returned from app while processing pub/sub event")
                    }
                    _ => {}
                }
                answer
            }
        }
    }

    async fn deliver_bulk(&self, batch: &AppBatch) -> Vec<AppAnswer> {
        let all = |a: AppAnswer| vec![a; batch.entries.len()];
        let body = json_bytes(&bulk_body(batch));
        // As daprd's bulk postman: a span per traced entry; the app gets the last one's context.
        let spans = crate::runtime::telemetry::batch_spans(self.tracer.as_ref(), &batch.topic, batch.entries.iter().map(|e| e.event.trace().0.map(str::to_string)));
        let headers = spans.last().map(|s| vec![("traceparent".to_string(), s.traceparent().to_string())]).unwrap_or_default();
        let sent = self.post(&batch.path, "application/json", headers, body).await;
        let status = sent.as_ref().map_or(500, |(status, _)| *status);
        for span in spans {
            span.end_delivery(&batch.topic, Some(status), None);
        }
        match sent {
            Err(e) => {
                tracing::warn!(pubsub = %batch.pubsub, topic = %batch.topic, error = %e, "error from app channel while sending bulk pub/sub event to app");
                all(AppAnswer::Retry)
            }
            Ok((200..=299, body)) => match bulk_statuses(&body) {
                Some(answers) => match_bulk_answers(batch, &answers),
                None => {
                    tracing::warn!(pubsub = %batch.pubsub, topic = %batch.topic, "failed unmarshalling app response for bulk subscribe");
                    all(AppAnswer::Retry)
                }
            },
            Ok((404, _)) => {
                tracing::error!(pubsub = %batch.pubsub, topic = %batch.topic, "non-retriable error returned from app while processing bulk pub/sub event: status 404");
                all(AppAnswer::NotFound)
            }
            Ok((status, _)) => {
                tracing::warn!(pubsub = %batch.pubsub, topic = %batch.topic, status, "retriable error returned from app while processing bulk pub/sub event");
                all(AppAnswer::Retry)
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
    use crate::components::pubsub::Message;
    use crate::pubsub::app_sink::BatchEntry;
    use crate::pubsub::cloudevents::Event;

    fn event(md: &[(&str, &str)], ev: Value) -> AppEvent {
        let Value::Object(m) = ev else { panic!("test event is an object") };
        let message = Message { metadata: md.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..Default::default() };
        AppEvent { pubsub: "ps".into(), topic: "t".into(), path: "/t".into(), event: Arc::new(m as Event), message: Arc::new(message), raw: false }
    }

    #[test]
    fn broker_metadata_and_trace_context_become_headers() {
        let ev = event(&[("pubsubName", "ps"), ("Content-Length", "9"), ("content-type", "x"), ("traceparent", "old")], json!({"id": "1", "traceparent": "00-new-01"}));
        let mut h = headers_of(&ev, Some("00-span-01"));
        h.sort();
        assert_eq!(h, vec![("pubsubname".to_string(), "ps".to_string()), ("traceparent".into(), "00-span-01".into())], "the delivery span's context, not the event's");
        let mut h = headers_of(&ev, None);
        h.sort();
        assert_eq!(h, vec![("pubsubname".to_string(), "ps".to_string()), ("traceparent".into(), "old".into())], "untraced: the broker's headers as they are");
    }

    #[test]
    fn bulk_body_and_statuses_as_daprd() {
        let batch = AppBatch { pubsub: "ps".into(), topic: "t".into(), path: "/t".into(), entries: vec![BatchEntry { entry_id: "e1".into(), event: event(&[("k", "v")], json!({"id": "1"})) }] };
        let b = bulk_body(&batch);
        assert_eq!(b["entries"][0]["entryId"], "e1");
        assert_eq!(b["entries"][0]["event"]["id"], "1");
        assert_eq!(b["entries"][0]["metadata"]["k"], "v");
        assert_eq!(b["entries"][0]["contentType"], "application/cloudevents+json");
        assert_eq!(b["pubsubname"], "ps");
        assert_eq!(b["type"], DEFAULT_BULK_TYPE);
        assert_eq!(bulk_statuses(br#"{"statuses":[{"entryId":"e1","status":"DROP"},{"entryId":"e2"}]}"#), Some(vec![("e1".into(), Some("DROP".into())), ("e2".into(), None)]));
        assert_eq!(bulk_statuses(b"nope"), None);
    }
}
