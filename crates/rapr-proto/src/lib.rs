//! Generated protobuf and gRPC types for the Dapr wire contract that rapr serves.
//!
//! Kept in its own crate so a change in rapr's code never recompiles the generated code. The
//! `.proto` sources are rapr's own (../../proto), with Dapr's package, message and field names
//! and numbers.

#![forbid(unsafe_code)]
#![allow(clippy::all, missing_docs)]

/// `dapr.proto.common.v1`: state items, ETags and options.
pub mod common {
    /// Version 1 of the common package.
    pub mod v1 {
        tonic::include_proto!("dapr.proto.common.v1");
    }
}

/// `dapr.proto.runtime.v1`: the `Dapr` service and its messages.
pub mod runtime {
    /// Version 1 of the runtime package.
    pub mod v1 {
        tonic::include_proto!("dapr.proto.runtime.v1");
    }
}

/// The app callback protocol rapr calls on gRPC apps (`AppCallback`: invocation, topic events,
/// subscriptions; health checks). Its messages are generated in `runtime::v1` (the streaming
/// subscription serves two of them) and re-exported here.
pub mod app {
    pub use crate::runtime::v1::{
        topic_event_bulk_request_entry, topic_event_response, BulkSubscribeConfig, HealthCheckResponse, ListTopicSubscriptionsResponse,
        TopicEventBulkRequest, TopicEventBulkRequestEntry, TopicEventBulkResponse, TopicEventBulkResponseEntry, TopicEventCeRequest,
        TopicEventRequest, TopicEventResponse, TopicRoutes, TopicRule, TopicSubscription,
    };
    include!(concat!(env!("OUT_DIR"), "/private/dapr.proto.runtime.v1.rs"));
}

/// `dapr.proto.placement.v1`: sidecars and the placement service (control plane, not served on the
/// sidecar's API, so kept out of its reflection).
pub mod placement {
    /// Version 1.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/private/dapr.proto.placement.v1.rs"));
    }
}

/// `dapr.proto.internals.v1`: sidecar-to-sidecar invocation.
pub mod internals {
    /// Version 1.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/private/dapr.proto.internals.v1.rs"));
    }
}

/// Encoded `FileDescriptorSet` of every served file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("rapr_descriptor");
