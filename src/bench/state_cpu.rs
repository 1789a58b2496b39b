//! `state-cpu`: the CPU one state get or save costs the sidecar (over HTTP and over gRPC), next
//! to what the same operation costs a client that drives the store with its Rust driver alone
//! (issue 13, item 4), for each of `--stores` that has a server (Redis, PostgreSQL).
//!
//! Why closed loops and not the rate-driven rounds: the generator spins for the last
//! millisecond before each send, so its own CPU says nothing about the driver's. Here each side
//! runs N calls back to back on one connection after a warm-up: the driver on a thread of its
//! own (a current-thread runtime: the connection's tasks run there too), timed with
//! `getrusage(RUSAGE_THREAD)`; the sidecar from the generator, timed from /proc (user and
//! system, every thread of the sidecar process). The store server's own CPU is in neither.

use std::time::Duration;

use super::loadgen::Connect;
use super::{callers, state, Ctx};

/// Calls before timing starts (connections made, statements prepared, caches warm).
const WARMUP: usize = 500;

/// µs of CPU per call, (user, system).
type PerCall = (f64, f64);

/// Runs it; returns a line per store and operation.
pub async fn run(ctx: &Ctx) -> Result<Vec<String>, String> {
    let n = ctx.args.cost_requests.unwrap_or(if ctx.args.quick { 2_000 } else { 20_000 }).max(1);
    let mut lines = Vec::new();
    for store in ctx.args.stores.iter().filter(|s| matches!(s.as_str(), "redis" | "postgres" | "postgresql")) {
        let sc = state::store_sidecar(ctx, "state-cpu", store).await?;
        let payload = ctx.payload();
        for save in [false, true] {
            let op = if save { "save" } else { "get" };
            eprintln!("  state-cpu {store} {op}: {n} calls per side");
            let direct = state::direct(ctx, store, save, payload.clone(), state::stored_key(store)).ok_or_else(|| format!("no driver for {store}"))?;
            let driver = on_own_thread(direct, n).await?;
            let http = sidecar_side(callers::http(sc.http, state::http_shape(save, &payload)), &sc.proc, n).await?;
            let grpc = sidecar_side(state::grpc(sc.grpc, save, payload.clone()), &sc.proc, n).await?;
            let show = |(u, s): PerCall| format!("{:.1} µs ({u:.1} usr + {s:.1} sys)", u + s);
            lines.push(format!(
                "CPU per state {op} on {store} ({n} calls back to back on one connection after {WARMUP}, {} B): sidecar over HTTP {}, over gRPC {}; driver-only client {}; sidecar ÷ driver {:.1}× (HTTP), {:.1}× (gRPC)",
                ctx.args.payload,
                show(http),
                show(grpc),
                show(driver),
                (http.0 + http.1) / (driver.0 + driver.1).max(1e-9),
                (grpc.0 + grpc.1) / (driver.0 + driver.1).max(1e-9),
            ));
        }
    }
    Ok(lines)
}

/// The driver's CPU per call, on a thread of its own.
async fn on_own_thread(connect: Connect, n: usize) -> Result<PerCall, String> {
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let mut caller = connect().await?;
            for _ in 0..WARMUP {
                caller.call().await?;
            }
            let before = thread_cpu()?;
            for _ in 0..n {
                caller.call().await?;
            }
            let after = thread_cpu()?;
            Ok(per_call(after.0.saturating_sub(before.0), after.1.saturating_sub(before.1), n))
        })
    })
    .await
    .map_err(|e| format!("driver thread: {e}"))?
}

/// The sidecar's CPU per call, driven from here.
async fn sidecar_side(connect: Connect, sidecar: &super::procs::Proc, n: usize) -> Result<PerCall, String> {
    let mut caller = connect().await?;
    for _ in 0..WARMUP {
        caller.call().await?;
    }
    let before = sidecar.counters();
    for _ in 0..n {
        caller.call().await?;
    }
    let after = sidecar.counters();
    Ok(per_call(after.user.saturating_sub(before.user), after.sys.saturating_sub(before.sys), n))
}

/// This thread's (user, system) CPU time so far.
fn thread_cpu() -> Result<(Duration, Duration), String> {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD).map_err(|e| format!("getrusage: {e}"))?;
    let d = |t: nix::sys::time::TimeVal| Duration::from_secs(t.tv_sec().max(0) as u64) + Duration::from_micros(t.tv_usec().max(0) as u64);
    Ok((d(u.user_time()), d(u.system_time())))
}

fn per_call(user: Duration, sys: Duration, n: usize) -> PerCall {
    (user.as_secs_f64() * 1e6 / n as f64, sys.as_secs_f64() * 1e6 / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_threads_cpu_grows_with_work() {
        let (u0, s0) = thread_cpu().unwrap();
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(t.elapsed());
        }
        let (u1, s1) = thread_cpu().unwrap();
        assert!(u1 + s1 > u0 + s0, "{u0:?}+{s0:?} -> {u1:?}+{s1:?}");
        assert_eq!(per_call(Duration::from_millis(2), Duration::from_millis(1), 100), (20.0, 10.0));
    }
}
