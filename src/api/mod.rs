//! The API layer: one transport-free facade per building block (`state.rs`, `metadata.rs`), the
//! set of them (`Facades`) composed at the sidecar's root, the HTTP and gRPC adapters over it,
//! and the single wire mapping of errors (`errors/`).

pub mod api_log;
pub mod errors;
pub mod grpc;
pub mod http;
pub mod invoke;
pub mod metadata;
pub mod pubsub;
pub mod secrets;
pub mod state;
pub mod state_keys;

/// Every building block's facade, composed once at the root (`sidecar/root.rs`) and shared whole
/// by the HTTP and gRPC adapters. A new building block adds its field here and its routes to
/// each adapter; no other block changes.
#[derive(Clone)]
pub struct Facades {
    /// State.
    pub state: state::StateApi,
    /// Metadata and health.
    pub metadata: metadata::MetadataApi,
    /// Secrets.
    pub secrets: secrets::SecretsApi,
    /// Service invocation.
    pub invoke: invoke::InvokeApi,
    /// Publishing.
    pub pubsub: pubsub::PubSubApi,
}
