//! gRPC adapters of the pub/sub API: PublishEvent, BulkPublishEvent(Alpha1) and the streaming
//! subscription SubscribeTopicEventsAlpha1, over the pub/sub facade.

use std::pin::Pin;

use futures::Stream;
use rapr_proto::runtime::v1 as pb;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use super::DaprService;

/// The server side of a streaming subscription.
pub type TopicEventStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeTopicEventsResponseAlpha1, Status>> + Send + 'static>>;

impl DaprService {
    pub(super) async fn publish_event_impl(&self, _r: GrpcRequest<pb::PublishEventRequest>) -> Result<GrpcResponse<()>, Status> {
        Err(Status::unimplemented("PublishEvent: work in progress (issue 11)"))
    }

    pub(super) async fn bulk_publish_event_impl(&self, _r: GrpcRequest<pb::BulkPublishRequest>) -> Result<GrpcResponse<pb::BulkPublishResponse>, Status> {
        Err(Status::unimplemented("BulkPublishEvent: work in progress (issue 11)"))
    }

    pub(super) async fn subscribe_topic_events_impl(
        &self,
        r: GrpcRequest<tonic::Streaming<pb::SubscribeTopicEventsRequestAlpha1>>,
    ) -> Result<GrpcResponse<TopicEventStream>, Status> {
        self.subscribe_topic_events(r).await
    }
}
