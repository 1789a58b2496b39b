//! Named crash points for fault-injection tests (DESIGN.md §3 rule 8).
//!
//! Built only with the `failpoints` cargo feature; without it every point compiles to nothing.
//! `FAILPOINTS="state:transact:after=return"` makes that point abort the process exactly there
//! (`return` runs the crash; the `fail` crate's `panic`, `sleep(ms)`, `off`... work too).
//!
//! Points: `state:{set,delete,transact}:{before,after}` in `StateClient` (before: the store
//! has not been called; after: the store committed, the caller is not answered yet),
//! `state:{sqlite,postgres,mysql}:transact:mid` (first operation applied inside the open
//! transaction), `state:{sqlite,postgres,mysql}:commit:before` (every operation applied, commit
//! not issued), `component:init` (an init error, not a crash: the supervisor retries), and
//! `pubsub:deadletter:publish` (an error, not a crash: only the dead-letter publish fails, so
//! the message stays unacknowledged; src/pubsub/handler.rs).

/// Aborts the process at `name` when the point is armed with `return`.
#[cfg(feature = "failpoints")]
pub fn crash_point(name: &str) {
    fail::eval(name, |_| {
        eprintln!("failpoint {name}: crashing the process");
        std::process::abort();
    });
}

/// Without the `failpoints` feature a crash point is nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn crash_point(_name: &str) {}

/// Reads `FAILPOINTS` once at start; keep the guard alive for the life of the process.
#[cfg(feature = "failpoints")]
pub fn setup() -> Option<fail::FailScenario<'static>> {
    Some(fail::FailScenario::setup())
}

/// Without the feature there is nothing to set up.
#[cfg(not(feature = "failpoints"))]
pub fn setup() -> Option<()> {
    None
}
