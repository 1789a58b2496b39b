//! gRPC `SubscribeTopicEventsAlpha1`: a subscription that lives as long as its stream.
//!
//! The app opens the stream and sends an `initial_request` (pubsub, topic, metadata, dead-letter
//! topic). As daprd, rapr then starts the subscription (kind Streaming, one default route `/`)
//! and only after it is running answers `initial_response`; a failure to start is the stream's
//! status instead. Events then go out as `event_message`s and the app's `event_processed`
//! answers come back on the same stream (`pubsub::app_stream::AppStream` pairs them). The
//! subscription ends with the stream: the app closing or cancelling it, sending something other
//! than `event_processed`, or the sidecar shutting down. Events the app had not answered stay
//! unacknowledged in the broker and are redelivered.
//!
//! Errors as daprd words them (plain errors, so gRPC UNKNOWN): `initial request is required`,
//! `pubsubName is required`, `topic is required`, `duplicate initial request received`; an
//! unknown pub/sub is ERR_PUBSUB_NOT_FOUND (INVALID_ARGUMENT); a subscription that cannot start
//! (scopes, broker) is `failed to create subscription for <pubsub>: <why>`.

use rapr_proto::runtime::v1 as pb;
use pb::subscribe_topic_events_request_alpha1::SubscribeTopicEventsRequestType as Req;
use pb::subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType as Resp;
use http::StatusCode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status, Streaming};

use super::pubsub::TopicEventStream;
use super::DaprService;
use crate::api::errors::ApiError;
use crate::pubsub::app_stream::{self, Outbound, StreamEnd};
use crate::pubsub::streams::StreamRefused;
use crate::pubsub::{Subscription, SubscriptionKind};

impl DaprService {
    pub(super) async fn subscribe_topic_events(&self, r: GrpcRequest<Streaming<pb::SubscribeTopicEventsRequestAlpha1>>) -> Result<GrpcResponse<TopicEventStream>, Status> {
        let mut inbound = r.into_inner();
        let first = tokio::select! {
            m = inbound.message() => m?,
            _ = self.shutdown.requested() => return Err(Status::unknown("api server closed")),
        };
        let initial = match first.and_then(|m| m.subscribe_topic_events_request_type) {
            Some(Req::InitialRequest(i)) => i,
            _ => return Err(Status::unknown("initial request is required")),
        };
        let sub = subscription_of(initial)?;
        let (sink, task) = app_stream::channel(CancellationToken::new());
        let running = self.pubsub_streams.start(sub.clone(), sink).await.map_err(|e| refused(&sub, e))?;
        tracing::info!(pubsub = %sub.pubsub, topic = %sub.topic, "streaming subscription started");
        let (out, rx) = mpsc::channel::<Outbound>(1);
        let initial_response = pb::SubscribeTopicEventsResponseAlpha1 { subscribe_topic_events_response_type: Some(Resp::InitialResponse(Default::default())) };
        // The receiver is in hand and the channel empty: this write cannot fail.
        let _ = out.try_send(Ok(initial_response));
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let end = app_stream::serve(task, inbound, out.clone(), async move { shutdown.requested().await }).await;
            // Waiting deliveries have failed (their messages stay unacknowledged); now the
            // subscription goes.
            running.stop();
            tracing::info!(pubsub = %sub.pubsub, topic = %sub.topic, end = ?end, "streaming subscription ended");
            let status = match end {
                StreamEnd::AppGone => return,
                StreamEnd::DuplicateInitial => Status::unknown("duplicate initial request received"),
                StreamEnd::Shutdown => Status::unknown("stream closed"),
            };
            let _ = out.send(Err(status)).await;
        });
        Ok(GrpcResponse::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// daprd's answer when a streaming subscription does not start.
fn refused(sub: &Subscription, e: StreamRefused) -> Status {
    match e {
        // daprd's `apierrors.PubSub(name).NotFound()`: no ResourceInfo, an ErrorInfo without metadata.
        StreamRefused::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, tonic::Code::InvalidArgument, "ERR_PUBSUB_NOT_FOUND", e.to_string())
            .with_info("DAPR_PUBSUB_NOT_FOUND", None)
            .grpc_status(),
        StreamRefused::Closed => Status::unknown(e.to_string()),
        StreamRefused::Failed(why) => Status::unknown(format!("failed to create subscription for {}: {why}", sub.pubsub)),
    }
}

/// The subscription an initial request asks for, or daprd's error for a missing field.
fn subscription_of(i: pb::SubscribeTopicEventsRequestInitialAlpha1) -> Result<Subscription, Status> {
    if i.pubsub_name.is_empty() {
        return Err(Status::unknown("pubsubName is required"));
    }
    if i.topic.is_empty() {
        return Err(Status::unknown("topic is required"));
    }
    let mut sub = Subscription::new(SubscriptionKind::Streaming, &i.pubsub_name, &i.topic, "/");
    sub.metadata = i.metadata;
    sub.dead_letter_topic = i.dead_letter_topic.filter(|t| !t.is_empty());
    Ok(sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn initial(pubsub: &str, topic: &str, dlt: Option<&str>) -> pb::SubscribeTopicEventsRequestInitialAlpha1 {
        pb::SubscribeTopicEventsRequestInitialAlpha1 {
            pubsub_name: pubsub.into(),
            topic: topic.into(),
            metadata: [("rawPayload".to_string(), "true".to_string())].into(),
            dead_letter_topic: dlt.map(str::to_string),
        }
    }

    #[test]
    fn missing_fields_are_daprds_errors() {
        let e = subscription_of(initial("", "t", None)).expect_err("no pubsub");
        assert_eq!((e.code(), e.message()), (tonic::Code::Unknown, "pubsubName is required"));
        let e = subscription_of(initial("p", "", None)).expect_err("no topic");
        assert_eq!((e.code(), e.message()), (tonic::Code::Unknown, "topic is required"));
    }

    #[test]
    fn the_subscription_has_one_default_route_and_the_requests_options() {
        let s = subscription_of(initial("p", "orders/eu", Some("dead"))).expect("valid");
        assert_eq!((s.kind, s.pubsub.as_str(), s.topic.as_str()), (SubscriptionKind::Streaming, "p", "orders/eu"));
        assert_eq!(s.rules.len(), 1);
        assert_eq!((s.rules[0].match_expr.as_str(), s.rules[0].path.as_str()), ("", "/"));
        assert_eq!(s.dead_letter_topic.as_deref(), Some("dead"));
        assert!(s.raw_payload());
        assert_eq!(subscription_of(initial("p", "t", Some(""))).expect("valid").dead_letter_topic, None);
    }
}
