//! `rapr bench cost`: what one request costs each process of the invoke chains, in counts that
//! do not depend on the machine's load: system calls per request (`strace -c -f` attached after
//! warm-up) and user-space instructions per request (callgrind, counting switched on after
//! warm-up, the same wall time idle subtracted). Callgrind does not see the kernel: the
//! syscall count is the kernel side's proxy.
//!
//! Each variant's chain is started afresh for each tool (under valgrind, only the measured
//! processes), driven by a closed loop of N requests on one connection. `--quick` (for CI) runs
//! the instruction count alone on `direct` and `rapr x2` over HTTP, and always succeeds: it is
//! informational. Rows go to a CSV (`--csv`, docs/bench-cost.csv) unless `--compare-only`.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use http::Method;

use super::callers::{self, HttpShape};
use super::cost_csv::{self, CostRow};
use super::cost_tools::{self, Strace};
use super::invoke::{echo_app, ECHO_ID};
use super::loadgen::Connect;
use super::{haproxy, nginx};
use super::procs::{free_ports, retry_in_use, wait_port, Pinning, Proc};
use super::Ctx;

/// A started chain: its processes, which of them are measured (with their names in the
/// table), and how to connect to its front.
pub struct Chain {
    procs: Vec<Proc>,
    measured: Vec<(usize, &'static str)>,
    connect: Connect,
}

/// Starts a variant's chain; `measured` starts the processes whose cost is counted (under
/// valgrind for the instruction count), `plain` the others.
type Start = for<'a> fn(&'a Ctx, &'a Ctx, bool) -> Pin<Box<dyn Future<Output = Result<Chain, String>> + 'a>>;

/// One variant: its name, whether `--quick` runs it, how it starts.
struct Spec {
    name: &'static str,
    quick: bool,
    start: Start,
}

/// The variants, in table order. Adding one is a line here and a chain function below.
const VARIANTS: &[Spec] = &[
    Spec { name: "direct", quick: true, start: |m, p, g| Box::pin(direct(m, p, g)) },
    Spec { name: "nginx x2", quick: false, start: |m, p, g| Box::pin(nginx_x2(m, p, g)) },
    Spec { name: "haproxy x2", quick: false, start: |m, p, g| Box::pin(haproxy_x2(m, p, g)) },
    Spec { name: "rapr x2", quick: true, start: |m, p, g| Box::pin(rapr_x2(m, p, g)) },
];

/// Requests before counting starts (connections made, caches and pools warm).
const WARMUP: usize = 200;

/// Runs the scenario; returns the lines to print. With `--quick`, never an error.
pub async fn run(ctx: &Ctx) -> Result<Vec<String>, String> {
    if ctx.args.quick {
        return Ok(match measure_all(ctx).await {
            Ok(lines) => lines,
            Err(e) => vec![format!("bench cost --quick could not measure (informational, not a failure): {e}")],
        });
    }
    measure_all(ctx).await
}

async fn measure_all(ctx: &Ctx) -> Result<Vec<String>, String> {
    let quick = ctx.args.quick;
    let n = ctx.args.cost_requests.unwrap_or(if quick { 300 } else { 1000 }).max(1);
    cost_tools::ensure_tool("valgrind", "valgrind")?;
    if !quick {
        cost_tools::ensure_tool("strace", "strace")?;
    }
    let scenarios: &[bool] = if quick { &[false] } else { &[false, true] };
    let now = time::OffsetDateTime::now_utc();
    let (date, commit) = (now.replace_nanosecond(0).unwrap_or(now).format(&time::format_description::well_known::Rfc3339).unwrap_or_default(), cost_csv::commit());
    let build = if cfg!(debug_assertions) { "debug build" } else { "release build" };
    let note = ctx.args.csv_note.clone().unwrap_or_else(|| format!("{build}, N={n}{}", if quick { ", quick" } else { "" }));
    let mut rows: Vec<CostRow> = Vec::new();
    for &grpc in scenarios {
        let scenario = if grpc { "invoke-grpc" } else { "invoke-http" };
        for spec in VARIANTS.iter().filter(|s| !quick || s.quick) {
            let syscalls = if quick { Vec::new() } else { syscalls_per_req(ctx, spec, grpc, n).await? };
            let ir = instructions_per_req(ctx, spec, grpc, n).await?;
            for (process, ir) in ir {
                let sc = syscalls.iter().find(|(p, _)| *p == process).map(|(_, v)| *v);
                rows.push(CostRow { date: date.clone(), commit: commit.clone(), scenario: scenario.into(), variant: spec.name.into(), process: process.into(), ir_per_req: Some(ir), syscalls_per_req: sc, note: note.clone() });
            }
        }
    }
    let mut lines = vec![table(&rows, n)];
    if let Some(path) = &ctx.args.csv {
        let earlier = cost_csv::parse_all(&std::fs::read_to_string(path).unwrap_or_default());
        lines.extend(cost_csv::compare(&earlier, &rows));
        if ctx.args.compare_only {
            lines.push(format!("(--compare-only: {} left as it was)", path.display()));
        } else {
            cost_csv::append(path, &rows).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(lines)
}

/// The results as an aligned table.
fn table(rows: &[CostRow], n: usize) -> String {
    let mut out = format!("per-request cost over {n} closed-loop requests on 1 connection (Ir: user space only)\n{:<12} {:<10} {:<16} {:>13} {:>14}\n", "scenario", "variant", "process", "syscalls/req", "Ir/req");
    for r in rows {
        let sc = r.syscalls_per_req.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
        let ir = r.ir_per_req.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into());
        out.push_str(&format!("{:<12} {:<10} {:<16} {sc:>13} {ir:>14}\n", r.scenario, r.variant, r.process));
    }
    out
}

/// `n` requests one after the other on one connection.
async fn closed_loop(connect: &Connect, n: usize) -> Result<(), String> {
    let mut caller = connect().await?;
    for i in 0..n {
        caller.call().await.map_err(|e| format!("request {i}: {e}"))?;
    }
    Ok(())
}

/// System calls per request of each measured process: strace attached after warm-up.
async fn syscalls_per_req(ctx: &Ctx, spec: &Spec, grpc: bool, n: usize) -> Result<Vec<(&'static str, f64)>, String> {
    eprintln!("  cost {} syscalls ({n} requests under strace)", spec.name);
    let own = sub_ctx(ctx, &format!("strace-{}-{}", if grpc { "grpc" } else { "http" }, spec.name), false)?;
    let chain = (spec.start)(&own, &own, grpc).await?;
    closed_loop(&chain.connect, WARMUP).await?;
    let mut traces = Vec::new();
    for &(i, name) in &chain.measured {
        traces.push((name, Strace::attach(&ctx.dir, &format!("{}-{name}", spec.name).replace(' ', "_"), chain.procs[i].pid()).await?));
    }
    closed_loop(&chain.connect, n).await?;
    let mut out = Vec::new();
    for (name, t) in traces {
        out.push((name, t.finish().await? as f64 / n as f64));
    }
    Ok(out)
}

/// User-space instructions per request of each measured process: callgrind's count over `n`
/// requests minus its count over the same wall time idle.
async fn instructions_per_req(ctx: &Ctx, spec: &Spec, grpc: bool, n: usize) -> Result<Vec<(&'static str, f64)>, String> {
    eprintln!("  cost {} instructions ({n} requests under callgrind)", spec.name);
    let label = format!("callgrind-{}-{}", if grpc { "grpc" } else { "http" }, spec.name);
    let plain = sub_ctx(ctx, &label, false)?;
    let traced = sub_ctx(ctx, &label, true)?;
    let cg_dir = traced.dir.clone();
    let chain = (spec.start)(&traced, &plain, grpc).await?;
    closed_loop(&chain.connect, WARMUP.min(n)).await?;
    let pids: Vec<(u32, &'static str)> = chain.measured.iter().map(|&(i, name)| (chain.procs[i].pid(), name)).collect();
    for &(pid, _) in &pids {
        cost_tools::callgrind_control(pid, &["-i", "on"])?;
        cost_tools::callgrind_control(pid, &["-z"])?;
    }
    let start = Instant::now();
    closed_loop(&chain.connect, n).await?;
    let busy_for = start.elapsed();
    let mut busy = Vec::new();
    for &(pid, _) in &pids {
        busy.push(cost_tools::callgrind_dump(&cg_dir, pid).await?);
    }
    // The same wall time with nothing to do: timers, pollers, metrics ticking under the loop.
    let idle_from = Instant::now();
    tokio::time::sleep(busy_for).await;
    let idle_for = idle_from.elapsed().as_secs_f64().max(1e-9);
    let mut out = Vec::new();
    for (&(pid, name), busy) in pids.iter().zip(busy) {
        // The idle dump also spans the time dumping the others took: scale it to busy_for.
        let idle = cost_tools::callgrind_dump(&cg_dir, pid).await? as f64 * busy_for.as_secs_f64() / idle_for;
        let _ = cost_tools::callgrind_control(pid, &["-i", "off"]);
        out.push((name, ((busy as f64 - idle) / n as f64).max(0.0)));
    }
    Ok(out)
}

/// A context of its own for one chain: its own folder (so its sidecars' `RAPR_HOME` holds
/// them and no earlier chain's), and with `callgrind` the valgrind wrapper writing there.
fn sub_ctx(ctx: &Ctx, label: &str, callgrind: bool) -> Result<Ctx, String> {
    let dir = ctx.dir.join(label.replace(' ', "_"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let wrapper = if callgrind { cost_tools::callgrind_wrapper(&dir) } else { Vec::new() };
    Ok(Ctx { exe: ctx.exe.clone(), pin: Pinning { wrapper, ..ctx.pin.clone() }, dir, args: ctx.args.clone() })
}

/// How long a process started by `ctx` may take to listen.
fn deadline(ctx: &Ctx) -> Duration {
    ctx.pin.startup_deadline(Duration::from_secs(10))
}

/// The request every variant sends over HTTP, to `path`.
fn shape(ctx: &Ctx, path: &str) -> HttpShape {
    HttpShape { method: Method::POST, path: path.into(), body: ctx.payload(), content_type: Some("application/json") }
}

/// The echo app alone, called directly.
async fn direct(measured: &Ctx, _plain: &Ctx, grpc: bool) -> Result<Chain, String> {
    let (echo, http, grpc_port) = echo_app(measured).await?;
    let connect = if grpc { callers::on_invoke(grpc_port, measured.payload()) } else { callers::http(http, shape(measured, "/echo")) };
    Ok(Chain { procs: vec![echo], measured: vec![(0, "echo app")], connect })
}

/// Two nginx hops (one process each, `master_process off`) in front of the echo app.
async fn nginx_x2(measured: &Ctx, plain: &Ctx, grpc: bool) -> Result<Chain, String> {
    let bin = nginx::ensure_installed()?;
    let (echo, http, grpc_port) = echo_app(plain).await?;
    let app = if grpc { grpc_port } else { http };
    let name = if grpc { "cost-grpc" } else { "cost-http" };
    let (hop1, hop2, n1) = retry_in_use(|| async {
        let [n1, n2] = free_ports()?;
        let mut hop2 = nginx::hop(&bin, &measured.pin, &measured.dir, &format!("{name}-nginx2"), n2, app, grpc)?;
        let mut hop1 = nginx::hop(&bin, &measured.pin, &measured.dir, &format!("{name}-nginx1"), n1, n2, grpc)?;
        wait_port(&mut hop2, n2, deadline(measured)).await?;
        wait_port(&mut hop1, n1, deadline(measured)).await?;
        Ok((hop1, hop2, n1))
    })
    .await?;
    let connect = if grpc { callers::on_invoke(n1, measured.payload()) } else { callers::http(n1, shape(measured, "/echo")) };
    Ok(Chain { procs: vec![echo, hop1, hop2], measured: vec![(1, "nginx 1"), (2, "nginx 2")], connect })
}

/// Two haproxy hops (one foreground process each, HTTP/2 between them) in front of the echo app.
async fn haproxy_x2(measured: &Ctx, plain: &Ctx, grpc: bool) -> Result<Chain, String> {
    let bin = haproxy::ensure_installed()?;
    let (echo, http, grpc_port) = echo_app(plain).await?;
    let app = if grpc { grpc_port } else { http };
    let name = if grpc { "cost-grpc" } else { "cost-http" };
    let (s1, s2) = haproxy::chain_sides(grpc);
    let (hop1, hop2, h1) = retry_in_use(|| async {
        let [h1, h2] = free_ports()?;
        let mut hop2 = haproxy::hop(&bin, &measured.pin, &measured.dir, &format!("{name}-haproxy2"), h2, app, s2)?;
        let mut hop1 = haproxy::hop(&bin, &measured.pin, &measured.dir, &format!("{name}-haproxy1"), h1, h2, s1)?;
        wait_port(&mut hop2, h2, deadline(measured)).await?;
        wait_port(&mut hop1, h1, deadline(measured)).await?;
        Ok((hop1, hop2, h1))
    })
    .await?;
    let connect = if grpc { callers::on_invoke(h1, measured.payload()) } else { callers::http(h1, shape(measured, "/echo")) };
    Ok(Chain { procs: vec![echo, hop1, hop2], measured: vec![(1, "haproxy 1"), (2, "haproxy 2")], connect })
}

/// Two rapr sidecars (caller's, app's) in front of the echo app.
async fn rapr_x2(measured: &Ctx, plain: &Ctx, grpc: bool) -> Result<Chain, String> {
    let (echo, http, grpc_port) = echo_app(plain).await?;
    let (app, protocol) = if grpc { (grpc_port, "grpc") } else { (http, "http") };
    let res = measured.dir.join(format!("cost-{protocol}-resources"));
    let target = measured.sidecar(ECHO_ID, &res, &["--app-port".into(), app.to_string(), "--app-protocol".into(), protocol.into()]).await?;
    let caller = measured.sidecar("bench-caller", &res, &[]).await?;
    let connect = if grpc { callers::invoke_service(caller.grpc, ECHO_ID.into(), measured.payload()) } else { callers::http(caller.http, shape(measured, &format!("/v1.0/invoke/{ECHO_ID}/method/echo"))) };
    Ok(Chain { procs: vec![echo, caller.proc, target.proc], measured: vec![(1, "caller sidecar"), (2, "app sidecar")], connect })
}
