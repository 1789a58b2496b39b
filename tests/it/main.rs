//! rapr's integration tests: one binary (DESIGN.md §4) that starts the real `rapr` binary
//! against real backends and drives its HTTP and gRPC APIs.

/// The `AppCallback` methods of a test app that only serves invocation: no subscriptions, and
/// topic events answered UNIMPLEMENTED (what a gRPC app without pub/sub handlers answers).
macro_rules! no_topic_callbacks {
    () => {
        no_topic_callbacks!(@one list_topic_subscriptions, (), rapr_proto::app::ListTopicSubscriptionsResponse, Ok(tonic::Response::new(Default::default())));
        no_topic_callbacks!(@one on_topic_event, rapr_proto::app::TopicEventRequest, rapr_proto::app::TopicEventResponse, Err(tonic::Status::unimplemented("no topic handlers")));
        no_topic_callbacks!(@one on_bulk_topic_event, rapr_proto::app::TopicEventBulkRequest, rapr_proto::app::TopicEventBulkResponse, Err(tonic::Status::unimplemented("no topic handlers")));
    };
    // Written out as `#[async_trait]` expands a method, since the attribute runs before this
    // macro inside the impl.
    (@one $name:ident, $req:ty, $resp:ty, $answer:expr) => {
        fn $name<'life0, 'async_trait>(
            &'life0 self,
            _r: tonic::Request<$req>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<tonic::Response<$resp>, tonic::Status>> + Send + 'async_trait>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async move { $answer })
        }
    };
}

mod app_channel;
mod backends;
mod bench;
mod component_health;
mod durability;
mod faults;
mod flags;
mod harness;
mod hot_reload;
mod http_endpoint_secrets;
mod invoke;
mod invoke_grpc;
mod invoke_faults;
mod invoke_resiliency;
mod lifecycle;
mod logs;
mod metadata_templates;
mod metrics;
mod multi_app;
mod netns;
mod otlp;
mod placement;
mod placement_cluster;
mod placement_partition;
mod placement_sidecar;
mod pubsub;
mod readme_control_plane;
mod resiliency;
mod resources;
mod run_cli;
mod run_control_plane;
mod secrets;
mod state;
mod supervision;
mod telemetry;
mod tls;
mod zipkin;
