//! The state building block over HTTP and gRPC, and the state conformance suite.

mod conformance;
mod grpc;
mod http;
