//! `AppStream`: the app sink of a streaming subscription (gRPC `SubscribeTopicEventsAlpha1`).
//!
//! A streaming subscription has no app port: the app opened a bidirectional stream, events go
//! back on it as `event_message`s, and the app answers each with an `event_processed` carrying
//! the event's id and a status. One task per stream ([`serve`]) owns the stream and the table of
//! events waiting for an answer; deliveries reach it through [`AppStream`] (a message per event,
//! the answer back on a oneshot). The task never blocks on one side: it reads answers while
//! events wait for the app to read, and writes events while no answer comes.
//!
//! Answers are queued per id rather than one per id (daprd keeps the last): a publisher may
//! reuse a CloudEvent id, and a redelivery may reach the app while an earlier copy is still in
//! its hands; each copy then gets one answer, in the order they were sent. When the stream ends,
//! every waiting delivery fails with [`StreamError::Closed`], which a delivery treats as "not
//! handled": the message stays in the broker and is redelivered (as daprd for a closed stream).

use std::collections::{HashMap, VecDeque};

use async_trait::async_trait;
use futures::{Stream, StreamExt};
use rapr_proto::runtime::v1 as pb;
use pb::subscribe_topic_events_request_alpha1::SubscribeTopicEventsRequestType as Req;
use pb::subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType as Resp;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::app_sink::{AppBatch, AppEvent, AppSink};
use super::cloudevents::grpc_request;
use super::outcome::AppAnswer;

/// What the server writes on the stream.
pub type Outbound = Result<pb::SubscribeTopicEventsResponseAlpha1, Status>;

/// Events taken from deliveries but not yet read by the app: small, so a slow app holds its
/// deliveries back (they wait in [`AppStream::deliver`]) rather than the sidecar buffering for it.
const UNSENT_MAX: usize = 16;

/// How many deliveries between sweeps of answers nobody waits for any more.
const SWEEP_EVERY: u64 = 1024;

/// How the app answered one event (`TopicEventResponse.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamAnswer {
    /// SUCCESS, or no status at all (protobuf's zero value, as daprd reads it).
    Success,
    /// RETRY.
    Retry,
    /// DROP.
    Drop,
    /// A status number the protocol does not define; daprd retries it.
    Unknown(i32),
}

impl StreamAnswer {
    /// Reads the app's `event_processed` status.
    pub fn from_status(status: Option<&pb::TopicEventResponse>) -> Self {
        use pb::topic_event_response::TopicEventResponseStatus as S;
        let raw = status.map_or(0, |s| s.status);
        match S::try_from(raw) {
            Ok(S::Success) => StreamAnswer::Success,
            Ok(S::Retry) => StreamAnswer::Retry,
            Ok(S::Drop) => StreamAnswer::Drop,
            Err(_) => StreamAnswer::Unknown(raw),
        }
    }
}

/// Why an event got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The stream ended (the app disconnected, sent something invalid, or the sidecar is
    /// shutting down) before the app answered.
    #[error("subscription stream closed")]
    Closed,
}

/// How a stream ended.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The app closed or cancelled its side, or stopped reading.
    AppGone,
    /// The app sent a second `initial_request` (daprd ends the stream with that error).
    DuplicateInitial,
    /// The sidecar is shutting down.
    Shutdown,
}

/// One event for the stream task, with where its answer goes.
struct Deliver {
    event: pb::TopicEventRequest,
    reply: oneshot::Sender<StreamAnswer>,
}

/// Front door of one stream's task: what a delivery hands events to.
#[derive(Clone)]
pub struct AppStream {
    tx: mpsc::Sender<Deliver>,
    closed: CancellationToken,
}

impl AppStream {
    /// Sends `event` to the app and waits for its answer. A delivery that stops waiting (its
    /// future dropped) is forgotten; a late answer for it is logged and ignored.
    pub async fn send_event(&self, event: pb::TopicEventRequest) -> Result<StreamAnswer, StreamError> {
        let (reply, rx) = oneshot::channel();
        tokio::select! {
            sent = self.tx.send(Deliver { event, reply }) => sent.map_err(|_| StreamError::Closed)?,
            _ = self.closed.cancelled() => return Err(StreamError::Closed),
        }
        rx.await.map_err(|_| StreamError::Closed)
    }

    /// Fires once the stream has ended.
    pub fn closed(&self) -> &CancellationToken {
        &self.closed
    }
}

/// The streaming postman (daprd's `streaming.Deliver`): the event goes out as daprd's gRPC
/// envelope, the app's status is its answer; a stream that ended reads as `RETRY`, which the
/// delivery leaves in the broker (its drain token is this stream's `closed`).
#[async_trait]
impl AppSink for AppStream {
    async fn deliver(&self, ev: &AppEvent) -> AppAnswer {
        let envelope = match grpc_request(&ev.event, &ev.topic, &ev.pubsub, &ev.path) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(pubsub = %ev.pubsub, topic = %ev.topic, event = %ev.id(), error = %e, "error building the envelope of a pub/sub event for a subscription stream");
                return AppAnswer::Retry;
            }
        };
        match self.send_event(envelope).await {
            Ok(StreamAnswer::Success) => AppAnswer::Success,
            Ok(StreamAnswer::Drop) => {
                tracing::warn!(pubsub = %ev.pubsub, topic = %ev.topic, event = %ev.id(), "DROP status returned from app while processing pub/sub event");
                AppAnswer::Drop
            }
            Ok(StreamAnswer::Retry) => AppAnswer::Retry,
            Ok(StreamAnswer::Unknown(status)) => {
                tracing::warn!(pubsub = %ev.pubsub, topic = %ev.topic, event = %ev.id(), status, "unknown status returned from app while processing pub/sub event; retrying");
                AppAnswer::Retry
            }
            Err(StreamError::Closed) => AppAnswer::Retry,
        }
    }

    /// daprd's streaming postman has no bulk form; a streaming subscription never asks for
    /// batches (its initial request has no `bulkSubscribe`), and were one handed over, each
    /// entry goes out as its own event, answered in the batch's order.
    async fn deliver_bulk(&self, batch: &AppBatch) -> Vec<AppAnswer> {
        futures::future::join_all(batch.entries.iter().map(|e| self.deliver(&e.event))).await
    }
}

/// A stream's task before it runs: [`AppStream`] handles can be given out first (the
/// subscription starts before the app gets `initial_response`).
pub struct StreamTask {
    rx: mpsc::Receiver<Deliver>,
    closed: CancellationToken,
}

/// A new stream: the front door and the task to [`serve`] it with. `closed` is the stream's
/// life: [`serve`] fires it when the stream ends, and ends the stream when something else fires
/// it (a child of the deliveries' drain token, so a draining sidecar ends its streams). The
/// subscription's delivery reads the same token as its own drain: an event that failed because
/// the stream ended is never retried nor dead-lettered, it stays in the broker.
pub fn channel(closed: CancellationToken) -> (AppStream, StreamTask) {
    let (tx, rx) = mpsc::channel(UNSENT_MAX);
    (AppStream { tx, closed: closed.clone() }, StreamTask { rx, closed })
}

/// Runs one stream until it ends: writes events to `out`, pairs the app's answers read from
/// `inbound` with them. On return the stream's `closed` token has fired (before any waiting
/// delivery hears of it), every waiting delivery has failed with `Closed`, and new ones fail at
/// once.
pub async fn serve<S, F>(task: StreamTask, mut inbound: S, out: mpsc::Sender<Outbound>, shutdown: F) -> StreamEnd
where
    S: Stream<Item = Result<pb::SubscribeTopicEventsRequestAlpha1, Status>> + Unpin,
    F: std::future::Future<Output = ()>,
{
    tokio::pin!(shutdown);
    let StreamTask { mut rx, closed } = task;
    let mut waiting: HashMap<String, VecDeque<oneshot::Sender<StreamAnswer>>> = HashMap::new();
    let mut unsent: VecDeque<pb::TopicEventRequest> = VecDeque::new();
    let mut taken: u64 = 0;
    let mut deliveries_open = true;
    let end = loop {
        tokio::select! {
            _ = &mut shutdown => break StreamEnd::Shutdown,
            _ = closed.cancelled() => break StreamEnd::Shutdown,
            _ = out.closed() => break StreamEnd::AppGone,
            m = inbound.next() => match m {
                Some(Ok(pb::SubscribeTopicEventsRequestAlpha1 { subscribe_topic_events_request_type: Some(Req::EventProcessed(p)) })) => answer(&mut waiting, p),
                Some(Ok(_)) => break StreamEnd::DuplicateInitial,
                Some(Err(e)) => {
                    if e.code() != tonic::Code::Cancelled {
                        tracing::warn!(error = %e, "error receiving from a subscription stream");
                    }
                    break StreamEnd::AppGone;
                }
                None => break StreamEnd::AppGone,
            },
            permit = out.reserve(), if !unsent.is_empty() => match (permit, unsent.pop_front()) {
                (Ok(p), Some(event)) => p.send(Ok(pb::SubscribeTopicEventsResponseAlpha1 { subscribe_topic_events_response_type: Some(Resp::EventMessage(event)) })),
                (Err(_), _) => break StreamEnd::AppGone,
                (Ok(_), None) => {}
            },
            d = rx.recv(), if deliveries_open && unsent.len() < UNSENT_MAX => match d {
                Some(Deliver { event, reply }) => {
                    let q = waiting.entry(event.id.clone()).or_default();
                    q.retain(|r| !r.is_closed());
                    q.push_back(reply);
                    unsent.push_back(event);
                    taken += 1;
                    if taken.is_multiple_of(SWEEP_EVERY) {
                        waiting.retain(|_, q| {
                            q.retain(|r| !r.is_closed());
                            !q.is_empty()
                        });
                    }
                }
                // Every front door is gone (the subscription stopped): keep serving the app.
                None => deliveries_open = false,
            },
        }
    };
    // First the token (a delivery that hears `Closed` finds its drain token fired), then
    // dropping `waiting` and `rx` fails every delivery still waiting or queued.
    closed.cancel();
    drop(waiting);
    drop(rx);
    end
}

/// Hands the app's answer to the oldest delivery waiting for that id.
fn answer(waiting: &mut HashMap<String, VecDeque<oneshot::Sender<StreamAnswer>>>, p: pb::SubscribeTopicEventsRequestProcessedAlpha1) {
    let status = StreamAnswer::from_status(p.status.as_ref());
    let reply = waiting.get_mut(&p.id).and_then(VecDeque::pop_front);
    if waiting.get(&p.id).is_some_and(VecDeque::is_empty) {
        waiting.remove(&p.id);
    }
    match reply {
        // The delivery may have stopped waiting meanwhile; its answer then goes nowhere.
        Some(r) => drop(r.send(status)),
        None => tracing::warn!(id = %p.id, "event_processed for an event this stream is not waiting for; ignored"),
    }
}

#[cfg(test)]
#[path = "app_stream_tests.rs"]
mod tests;
