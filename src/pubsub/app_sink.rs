//! `AppSink`: where a `Delivery` hands events, whatever carries them to the app: HTTP
//! (`app_http.rs`), gRPC `AppCallback` (`app_grpc.rs`), or a streaming subscription's gRPC
//! connection (`SubscribeTopicEventsAlpha1`, added by the streaming subscription).
//!
//! The trait is small on purpose: one event in, the app's answer ([`AppAnswer`]) out; bulk is one
//! batch in, one answer per entry out. A sink never decides what happens to the broker message;
//! the delivery does (`outcome.rs`). A sink never fails: a call that did not reach the app reads
//! as `RETRY`, as daprd's postmen report it.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::cloudevents::Event;
use super::outcome::AppAnswer;
use crate::components::pubsub::{Message, Metadata};

/// One event for the app.
#[derive(Debug, Clone)]
pub struct AppEvent {
    /// The pub/sub component's name.
    pub pubsub: String,
    /// The topic (as subscribed).
    pub topic: String,
    /// The route chosen for the event (HTTP path, or gRPC `path`).
    pub path: String,
    /// The CloudEvent, decoded.
    pub event: Arc<Event>,
    /// The broker message it came from (its bytes are what an HTTP app is posted, unless raw).
    pub message: Arc<Message>,
    /// The subscription asked for the broker's bytes unwrapped (`rawPayload`).
    pub raw: bool,
}

impl AppEvent {
    /// The broker message's metadata, which daprd passes to the app as headers (HTTP) or
    /// gRPC metadata, with `pubsubName` set to the component.
    pub fn metadata(&self) -> &Metadata {
        &self.message.metadata
    }

    /// The event's `id`, for logs.
    pub fn id(&self) -> &str {
        self.event.get("id").and_then(|v| v.as_str()).unwrap_or_default()
    }

    /// The W3C trace context the event carries (`traceparent`, else `traceid`), and its
    /// `tracestate`.
    pub fn trace(&self) -> (Option<&str>, Option<&str>) {
        let parent = self.event.get("traceparent").or_else(|| self.event.get("traceid")).and_then(|v| v.as_str()).filter(|s| !s.is_empty());
        let state = self.event.get("tracestate").and_then(|v| v.as_str()).filter(|s| !s.is_empty());
        (parent, state)
    }
}

/// A batch for a bulk subscription: events of one topic and route.
#[derive(Debug, Clone)]
pub struct AppBatch {
    /// The pub/sub component's name.
    pub pubsub: String,
    /// The topic.
    pub topic: String,
    /// The route.
    pub path: String,
    /// The entries, each with the id the app answers for.
    pub entries: Vec<BatchEntry>,
}

/// One entry of a batch.
#[derive(Debug, Clone)]
pub struct BatchEntry {
    /// The id the app answers with (`entryId`).
    pub entry_id: String,
    /// The event.
    pub event: AppEvent,
}

/// Carries events to the app.
#[async_trait]
pub trait AppSink: Send + Sync + 'static {
    /// Delivers one event and reads the app's answer.
    async fn deliver(&self, ev: &AppEvent) -> AppAnswer;

    /// Delivers a batch; one answer per entry, in the batch's order (an entry the app did not
    /// answer is `RETRY`).
    async fn deliver_bulk(&self, batch: &AppBatch) -> Vec<AppAnswer>;

    /// Resolves once the app may get events (at once unless `AppHealthMonitor` reports it
    /// unhealthy): the delivery waits here instead of spending retries on a sick app.
    async fn until_healthy(&self) {}
}

/// The body bytes of the bulk answer entries of `batch`, matched by `entryId` (daprd ignores
/// ids it did not send and counts entries without an answer as `RETRY`).
pub fn match_bulk_answers(batch: &AppBatch, answers: &[(String, Option<String>)]) -> Vec<AppAnswer> {
    batch
        .entries
        .iter()
        .map(|e| {
            let status = answers.iter().find(|(id, _)| *id == e.entry_id).map(|(_, s)| s.as_deref());
            match status {
                Some(s) => AppAnswer::from_bulk_status(s),
                None => AppAnswer::Retry,
            }
        })
        .collect()
}

/// Bytes of a JSON value (serializing a `serde_json::Value` cannot fail).
pub(crate) fn json_bytes(v: &serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str) -> AppEvent {
        let mut e = Event::new();
        e.insert("id".into(), id.into());
        AppEvent { pubsub: "ps".into(), topic: "t".into(), path: "/t".into(), event: Arc::new(e), message: Arc::new(Message::default()), raw: false }
    }

    #[test]
    fn bulk_answers_match_by_entry_id_and_missing_ones_retry() {
        let batch = AppBatch {
            pubsub: "ps".into(),
            topic: "t".into(),
            path: "/t".into(),
            entries: ["a", "b", "c", "d"].iter().map(|id| BatchEntry { entry_id: id.to_string(), event: ev(id) }).collect(),
        };
        let answers = vec![("c".to_string(), Some("DROP".to_string())), ("a".into(), Some("SUCCESS".into())), ("zz".into(), Some("SUCCESS".into())), ("d".into(), None)];
        assert_eq!(match_bulk_answers(&batch, &answers), vec![AppAnswer::Success, AppAnswer::Retry, AppAnswer::Drop, AppAnswer::Retry]);
    }

    #[test]
    fn trace_context_prefers_traceparent() {
        let mut e = ev("1");
        let mut m = (*e.event).clone();
        m.insert("traceid".into(), "00-a-b-01".into());
        m.insert("traceparent".into(), "00-c-d-01".into());
        m.insert("tracestate".into(), "k=v".into());
        e.event = Arc::new(m);
        assert_eq!(e.trace(), (Some("00-c-d-01"), Some("k=v")));
        assert_eq!(ev("2").trace(), (None, None));
        assert_eq!(e.id(), "1");
    }
}
