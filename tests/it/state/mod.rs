//! The state building block over HTTP and gRPC, and the state conformance suite.

mod capabilities;
mod conformance;
mod grpc;
mod grpc_daprd;
mod http;
mod mysql;
mod postgres;
mod redis;
mod slow;
