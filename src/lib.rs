//! rapr: a distributed application runtime that speaks Dapr's language.
//!
//! One sidecar per app serves Dapr's HTTP and gRPC APIs; every subsystem is a ractor process in
//! one supervision tree wired in `sidecar` (the composition root). Components sit behind per-category traits.

#![forbid(unsafe_code)]

pub mod api;
pub mod bench;
pub mod cli;
pub mod components;
pub mod config;
pub mod resiliency;
pub mod runtime;
pub mod sidecar;
pub mod invoke;
pub mod net_ports;
pub mod placement;
pub mod pubsub;
