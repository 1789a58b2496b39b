//! rapr's integration tests: one binary (DESIGN.md §4) that starts the real `rapr` binary
//! against real backends and drives its HTTP and gRPC APIs.

mod backends;
mod durability;
mod faults;
mod harness;
mod invoke;
mod lifecycle;
mod resiliency;
mod resources;
mod secrets;
mod state;
mod supervision;
