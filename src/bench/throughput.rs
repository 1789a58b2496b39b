//! `throughput`: for `invoke-http` and `invoke-grpc`, the highest rate of a fixed ladder (the
//! ladder is printed with the result; `--ladder` changes it) at which p99 stays within
//! `--p99-limit-ms` (default 5 ms) with no errors and the rate achieved, for the direct call, the
//! two-hop nginx chain, the two-hop haproxy h2 chain and two rapr sidecars, all on the same
//! measured core(s). Each variant climbs the ladder until a step fails twice in a row (one
//! stall of the machine in a 10 s step is enough to put p99 over 5 ms, so a failed step is run
//! again before it counts). Steps are `--duration` capped at 10 s after 2 s of warm-up: at 1,000
//! QPS and up that is ≥ 10,000 samples behind each p99.

use std::time::Duration;

use http::Method;

use super::callers::{self, HttpShape};
use super::invoke::{echo_app, ECHO_ID};
use super::loadgen::{Connect, Load};
use super::procs::Proc;
use super::{haproxy, nginx, Ctx};

/// The default ladder, QPS.
pub const LADDER: [u64; 14] = [1_000, 2_000, 3_000, 4_000, 5_000, 6_000, 7_000, 8_000, 10_000, 12_000, 15_000, 20_000, 25_000, 30_000];

/// Runs it for HTTP and gRPC; returns result lines.
pub async fn run(ctx: &Ctx) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    for grpc in [false, true] {
        lines.extend(run_protocol(ctx, grpc).await?);
    }
    Ok(lines)
}

async fn run_protocol(ctx: &Ctx, grpc: bool) -> Result<Vec<String>, String> {
    let scenario = if grpc { "invoke-grpc" } else { "invoke-http" };
    let (echo, echo_http, echo_grpc) = echo_app(ctx).await?;
    let app_port = if grpc { echo_grpc } else { echo_http };
    let name = format!("tp-{scenario}");
    let (n1p, n2p, n1) = nginx::chain(&nginx::ensure_installed()?, ctx, &name, app_port, grpc).await?;
    let (h1p, h2p, h1) = haproxy::chain(&haproxy::ensure_installed()?, ctx, &name, app_port, grpc).await?;
    let res = ctx.dir.join(format!("{name}-resources"));
    let protocol = if grpc { "grpc" } else { "http" };
    let target = ctx.sidecar(ECHO_ID, &res, &["--app-port".into(), app_port.to_string(), "--app-protocol".into(), protocol.into()]).await?;
    let caller = ctx.sidecar(&format!("bench-caller-{name}"), &res, &[]).await?;
    let payload = ctx.payload();
    let shape = |path: String| HttpShape { method: Method::POST, path, body: payload.clone(), content_type: Some("application/json") };
    let variants: [(&str, Connect, Vec<&Proc>); 4] = if grpc {
        [
            ("direct", callers::on_invoke(echo_grpc, payload.clone()), vec![&echo]),
            ("nginx x2", callers::on_invoke(n1, payload.clone()), vec![&n1p, &n2p]),
            ("haproxy x2", callers::on_invoke(h1, payload.clone()), vec![&h1p, &h2p]),
            ("rapr x2", callers::invoke_service(caller.grpc, ECHO_ID.into(), payload.clone()), vec![&caller.proc, &target.proc]),
        ]
    } else {
        [
            ("direct", callers::http(echo_http, shape("/echo".into())), vec![&echo]),
            ("nginx x2", callers::http(n1, shape("/echo".into())), vec![&n1p, &n2p]),
            ("haproxy x2", callers::http(h1, shape("/echo".into())), vec![&h1p, &h2p]),
            ("rapr x2", callers::http(caller.http, shape(format!("/v1.0/invoke/{ECHO_ID}/method/echo"))), vec![&caller.proc, &target.proc]),
        ]
    };
    let ladder = ladder(ctx);
    let mut lines = Vec::new();
    for (variant, connect, measured) in &variants {
        let (best, failed) = climb(ctx, &format!("{scenario} {variant}"), &ladder, connect, measured).await?;
        let at = |q: u64| if q == 0 { "none of the ladder".to_string() } else { format!("{q} QPS") };
        let why = failed.map_or_else(|| "the top of the ladder passed".to_string(), |(q, why)| format!("{q} QPS failed: {why}"));
        lines.push(format!(
            "max throughput {scenario} {variant} (ladder {}; p99 ≤ {} ms, no errors, ≥ 95% of the rate; {} connections, {} B): {} ({why})",
            ladder.iter().map(u64::to_string).collect::<Vec<_>>().join("/"),
            ctx.args.p99_limit_ms,
            ctx.args.connections,
            ctx.args.payload,
            at(best)
        ));
    }
    Ok(lines)
}

/// `--ladder`, else [`LADDER`], in rising order.
fn ladder(ctx: &Ctx) -> Vec<u64> {
    let mut l = if ctx.args.ladder.is_empty() { LADDER.to_vec() } else { ctx.args.ladder.clone() };
    l.sort_unstable();
    l.dedup();
    l
}

/// Climbs `ladder` until a step fails twice: the last passing rate (0 if none) and the failure.
async fn climb(ctx: &Ctx, what: &str, ladder: &[u64], connect: &Connect, measured: &[&Proc]) -> Result<(u64, Option<(u64, String)>), String> {
    let duration = ctx.args.duration().min(Duration::from_secs(10));
    let warmup = ctx.args.warmup().min(Duration::from_secs(2));
    let mut good = 0;
    for &qps in ladder {
        let load = Load { qps, connections: ctx.args.connections, duration, warmup };
        let mut failures = Vec::new();
        for attempt in 1..=2 {
            let (s, err) = ctx.measure_at(&format!("throughput {what} at {qps} QPS (try {attempt})"), load, connect.clone(), measured).await?;
            match verdict(&s, qps, ctx.args.p99_limit_ms) {
                None => break,
                Some(why) => failures.push(err.map_or(why.clone(), |e| format!("{why}; first error: {e}"))),
            }
        }
        if failures.len() == 2 {
            return Ok((good, Some((qps, failures.join(", then ")))));
        }
        good = qps;
    }
    Ok((good, None))
}

/// Why a step at `qps` fails, or `None` when it passes.
fn verdict(s: &super::report::RoundStats, qps: u64, p99_limit_ms: f64) -> Option<String> {
    if s.errors > 0 {
        Some(format!("{} errors", s.errors))
    } else if s.p99 > p99_limit_ms * 1000.0 {
        Some(format!("p99 {:.2} ms", s.p99 / 1000.0))
    } else if s.qps < qps as f64 * 0.95 {
        Some(format!("achieved {:.0} QPS", s.qps))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::report::RoundStats;
    use super::*;

    #[test]
    fn a_step_passes_only_without_errors_within_the_p99_limit_at_the_rate() {
        let ok = RoundStats { p99: 4_900.0, qps: 1_990.0, ..Default::default() };
        assert_eq!(verdict(&ok, 2_000, 5.0), None);
        assert_eq!(verdict(&RoundStats { p99: 5_100.0, ..ok }, 2_000, 5.0).as_deref(), Some("p99 5.10 ms"));
        assert_eq!(verdict(&RoundStats { errors: 2, ..ok }, 2_000, 5.0).as_deref(), Some("2 errors"));
        assert_eq!(verdict(&RoundStats { qps: 1_800.0, ..ok }, 2_000, 5.0).as_deref(), Some("achieved 1800 QPS"));
    }
}
