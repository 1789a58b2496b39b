//! The API layer: one transport-free facade per building block (`state.rs`, `metadata.rs`), the
//! HTTP and gRPC adapters over them, and the single wire mapping of errors (`errors/`).

pub mod errors;
pub mod grpc;
pub mod http;
pub mod invoke;
pub mod metadata;
pub mod secrets;
pub mod state;
pub mod state_keys;
