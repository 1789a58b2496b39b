//! gRPC adapters of the pub/sub API: PublishEvent, BulkPublishEvent(Alpha1) and the streaming
//! subscription SubscribeTopicEventsAlpha1, over the pub/sub facade.

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use rapr_proto::runtime::v1 as pb;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use super::DaprService;
use crate::api::errors::pubsub::pubsub_error;
use crate::api::pubsub::{BulkArgs, BulkEntryArgs, PubSubApi, PubSubApiError, PublishArgs};
use crate::components::pubsub::Metadata;

fn trace(md: &tonic::metadata::MetadataMap) -> (String, String) {
    let get = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    (get("traceparent"), get("tracestate"))
}

fn fail(e: PubSubApiError) -> Status {
    tracing::debug!(error = %e, "publish refused");
    pubsub_error(e).grpc_status()
}

/// The server side of a streaming subscription.
pub type TopicEventStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeTopicEventsResponseAlpha1, Status>> + Send + 'static>>;

impl DaprService {
    pub(super) async fn publish_event_impl(&self, r: GrpcRequest<pb::PublishEventRequest>) -> Result<GrpcResponse<()>, Status> {
        let (trace_parent, trace_state) = trace(r.metadata());
        let req = r.into_inner();
        let metadata: Metadata = req.metadata.into_iter().collect();
        let client = self.pubsub.component(&req.pubsub_name, &req.topic, &metadata, true).map_err(fail)?;
        PubSubApi::raw_payload(&req.pubsub_name, &metadata).map_err(fail)?;
        let args = PublishArgs {
            pubsub: req.pubsub_name,
            topic: req.topic,
            data: Bytes::from(req.data),
            content_type: req.data_content_type,
            metadata,
            trace_parent,
            trace_state,
        };
        self.pubsub.publish(&client, args, true).await.map_err(fail)?;
        Ok(GrpcResponse::new(()))
    }

    /// BulkPublishEvent and BulkPublishEventAlpha1: as daprd, a partial failure is an error
    /// status (the failed entries are not returned over gRPC).
    /// `span_name` names each entry's producer span as daprd does (`/dapr.proto.runtime.v1.Dapr/BulkPublishEvent/`).
    pub(super) async fn bulk_publish_event_impl(&self, r: GrpcRequest<pb::BulkPublishRequest>, span_name: &str) -> Result<GrpcResponse<pb::BulkPublishResponse>, Status> {
        let (trace_parent, trace_state) = trace(r.metadata());
        let req = r.into_inner();
        let metadata: Metadata = req.metadata.into_iter().collect();
        let client = self.pubsub.component(&req.pubsub_name, &req.topic, &metadata, true).map_err(fail)?;
        PubSubApi::raw_payload(&req.pubsub_name, &metadata).map_err(fail)?;
        let entries = req
            .entries
            .into_iter()
            .map(|e| BulkEntryArgs {
                entry_id: e.entry_id,
                event: Bytes::from(e.event),
                content_type: e.content_type,
                // A protobuf map arrives empty rather than absent: empty means none, as in daprd.
                metadata: (!e.metadata.is_empty()).then(|| e.metadata.into_iter().collect()),
            })
            .collect();
        let args = BulkArgs { pubsub: req.pubsub_name, topic: req.topic, entries, metadata, trace_parent, trace_state, span_name: span_name.to_string() };
        self.pubsub.bulk_publish(&client, args).await.map_err(fail)?;
        Ok(GrpcResponse::new(pb::BulkPublishResponse { failed_entries: Vec::new() }))
    }

    pub(super) async fn subscribe_topic_events_impl(
        &self,
        r: GrpcRequest<tonic::Streaming<pb::SubscribeTopicEventsRequestAlpha1>>,
    ) -> Result<GrpcResponse<TopicEventStream>, Status> {
        self.subscribe_topic_events(r).await
    }
}
