//! rapr's integration tests: one binary (DESIGN.md §4) that starts the real `rapr` binary
//! against real backends and drives its HTTP and gRPC APIs.

mod app_channel;
mod backends;
mod bench;
mod component_health;
mod durability;
mod faults;
mod harness;
mod http_endpoint_secrets;
mod invoke;
mod invoke_grpc;
mod invoke_faults;
mod invoke_resiliency;
mod lifecycle;
mod logs;
mod metadata_templates;
mod multi_app;
mod netns;
mod resiliency;
mod resources;
mod secrets;
mod state;
mod supervision;
mod telemetry;
mod tls;
mod zipkin;
