//! Pub/sub through the real binary (issue 11): one module per part; broker conformance runs at the
//! trait level in `src/components/pubsub/conformance.rs`.

pub mod app;
mod delivery;
mod delivery_grpc;
mod proofs;
mod publish;
mod redis;
mod sqlite;
mod streaming;
mod subscriptions;
