//! `throughput`: the highest rate at which p99 stays under `--p99-limit-ms` (default 5 ms) with
//! no errors, for `invoke-http` through two rapr sidecars and through the two-hop nginx chain.
//! The rate doubles from `--qps` until a step fails, then bisects between the last good and the
//! first bad rate. Steps are short (`--duration` capped at 5 s, 1 s warm-up).

use std::time::Duration;

use http::Method;

use super::callers::{self, HttpShape};
use super::invoke::{echo_app, ECHO_ID};
use super::loadgen::{Connect, Load};
use super::nginx;
use super::procs::Proc;
use super::Ctx;

/// Runs it; returns result lines.
pub async fn run(ctx: &Ctx) -> Result<Vec<String>, String> {
    let nginx_bin = nginx::ensure_installed()?;
    let (echo, echo_http, _) = echo_app(ctx).await?;
    let (hop1, hop2, n1) = nginx::chain(&nginx_bin, ctx, "tp", echo_http, false).await?;
    let res = ctx.dir.join("tp-resources");
    let target = ctx.sidecar(ECHO_ID, &res, &["--app-port".into(), echo_http.to_string()]).await?;
    let caller = ctx.sidecar("bench-caller-tp", &res, &[]).await?;
    let shape = |path: String| HttpShape { method: Method::POST, path, body: ctx.payload(), content_type: Some("application/json") };
    let mut lines = Vec::new();
    let variants: [(&str, Connect, Vec<&Proc>); 3] = [
        ("direct", callers::http(echo_http, shape("/echo".into())), vec![&echo]),
        ("nginx x2", callers::http(n1, shape("/echo".into())), vec![&hop1, &hop2]),
        ("rapr x2", callers::http(caller.http, shape(format!("/v1.0/invoke/{ECHO_ID}/method/echo"))), vec![&caller.proc, &target.proc]),
    ];
    for (variant, connect, measured) in &variants {
        let best = search(ctx, variant, connect, measured).await?;
        lines.push(format!(
            "max throughput invoke-http {variant} (p99 ≤ {} ms, no errors, {} connections, {} B): {best} QPS",
            ctx.args.p99_limit_ms, ctx.args.connections, ctx.args.payload
        ));
    }
    Ok(lines)
}

/// The highest passing rate for one variant.
async fn search(ctx: &Ctx, variant: &str, connect: &Connect, measured: &[&Proc]) -> Result<u64, String> {
    let duration = ctx.args.duration().min(Duration::from_secs(5));
    let step = |qps: u64| Load { qps, connections: ctx.args.connections, duration, warmup: Duration::from_secs(1) };
    let passes = |s: &super::report::RoundStats, qps: u64| s.errors == 0 && s.p99 <= ctx.args.p99_limit_ms * 1000.0 && s.qps >= qps as f64 * 0.95;
    let (mut good, mut bad) = (0u64, None::<u64>);
    let mut qps = ctx.args.qps.max(100);
    while bad.is_none() && qps <= 1_000_000 {
        let (s, _) = ctx.measure_at(&format!("throughput {variant} at {qps} QPS"), step(qps), connect.clone(), measured).await?;
        if passes(&s, qps) {
            good = qps;
            qps *= 2;
        } else {
            bad = Some(qps);
        }
    }
    if let Some(mut hi) = bad {
        for _ in 0..4 {
            let mid = (good + hi) / 2;
            if hi - good <= good / 20 + 1 {
                break;
            }
            let (s, _) = ctx.measure_at(&format!("throughput {variant} at {mid} QPS"), step(mid), connect.clone(), measured).await?;
            if passes(&s, mid) {
                good = mid;
            } else {
                hi = mid;
            }
        }
    }
    Ok(good)
}
