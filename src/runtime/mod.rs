//! Leaf utilities of the runtime, depending on nothing else in the crate: `call` (ask a process
//! with a deadline), `restart` (the one backoff rule), `failpoints`, `shutdown` (the trigger),
//! `metrics`; and telemetry (logging, tracing exporters). The sidecar that wires them with the
//! subsystems is `crate::sidecar`.

pub mod baggage;
pub mod call;
pub mod failpoints;
pub mod log_sink;
pub mod logging;
pub mod otlp;
pub mod metrics;
pub mod restart;
pub mod shutdown;
pub mod span_attrs;
pub mod telemetry;
pub mod trace_context;
pub mod zipkin;
