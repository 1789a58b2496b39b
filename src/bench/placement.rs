//! `rapr bench placement` (issue 14 C.12): a 3-node `rapr placement` cluster on the measured
//! cores and 100 simulated daprd sidecars (`placement_sim.rs`) on the generator's core.
//!
//! - join: from the first sidecar's connect until every sidecar holds a table with all 100 hosts;
//! - fail-over: from `kill -9` of the leader until every sidecar holds a table from the new leader
//!   with all 100 hosts (the killed node is restarted from its data directory and caught up
//!   before the next kill; repeated `--rounds` times);
//! - leave: from every sidecar closing its stream until an observer's tables hold none of them
//!   (each host keeps its place for the lease period, 5 s, by design);
//! - memory per node: VmRSS, RssAnon and PSS, idle and with the 100 hosts.
//!
//! Targets (issue 14): fail-over ≤ 2 s, ≤ 10 MB per node. Dapr's placement is published at about
//! 21-25 MB per node.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::placement_sim::{report, Seen, SimSidecar};
use super::procs::{free_ports, memory_split, Proc};
use super::Ctx;

const SIDECARS: usize = 100;
const ACTOR_TYPE: &str = "BenchActor";

struct Node {
    proc: Option<Proc>,
    /// gRPC, healthz, metrics.
    ports: [u16; 3],
    id: String,
    dir: PathBuf,
}

fn spawn(ctx: &Ctx, node: &Node, initial: &str) -> Result<Proc, String> {
    let [grpc, healthz, metrics] = node.ports;
    let mut cmd = ctx.pin.command(&ctx.exe);
    cmd.args(["placement", "--id", &node.id, "--initial-cluster", initial, "--port", &grpc.to_string()])
        .args(["--healthz-port", &healthz.to_string(), "--metrics-port", &metrics.to_string(), "--metadata-enabled"])
        .args(["--listen-address", "127.0.0.1", "--healthz-listen-address", "127.0.0.1", "--log-level", "warn"])
        .arg("--raft-logstore-path")
        .arg(&node.dir);
    Proc::spawn(&node.id, cmd, &ctx.dir)
}

async fn get(healthz: u16, path: &str) -> Option<reqwest::Response> {
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_millis(300)).build().ok()?;
    client.get(format!("http://127.0.0.1:{healthz}{path}")).send().await.ok().filter(|r| r.status().is_success())
}

/// The node that leads, waiting up to `deadline`.
async fn leader(nodes: &[Node], deadline: Duration) -> Result<usize, String> {
    let start = Instant::now();
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if n.proc.is_some() && get(n.ports[1], "/placement/state").await.is_some() {
                return Ok(i);
            }
        }
        if start.elapsed() > deadline {
            return Err(format!("no placement leader within {deadline:?}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until every sidecar's `Seen` satisfies `f(index, seen)`; the latest of their rounds'
/// arrival times.
async fn all_hold(sims: &[SimSidecar], what: &str, deadline: Duration, f: impl Fn(usize, &Seen) -> bool) -> Result<Instant, String> {
    let start = Instant::now();
    loop {
        let seen: Vec<Seen> = sims.iter().map(|s| *s.seen.borrow()).collect();
        let ok = seen.iter().enumerate().filter(|(i, s)| f(*i, s)).count();
        if ok == sims.len() {
            return Ok(seen.iter().filter_map(|s| s.at).max().unwrap_or_else(Instant::now));
        }
        if start.elapsed() > deadline {
            return Err(format!("{what}: {ok} of {} sidecars after {deadline:?}", sims.len()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn mb(kib: u64) -> String {
    format!("{:.1} MB", kib as f64 / 1024.0)
}

/// "VmRSS X (RssAnon Y, PSS Z)" of each running node, the leader first.
fn memory(nodes: &[Node], leader: usize) -> String {
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by_key(|i| *i != leader);
    let parts: Vec<String> = order
        .iter()
        .filter_map(|i| nodes[*i].proc.as_ref().map(|p| (*i, p)))
        .map(|(i, p)| {
            let (anon, _, pss) = memory_split(p.pid());
            let role = if i == leader { "leader" } else { "follower" };
            format!("{role} {} (RssAnon {}, PSS {})", mb(p.rss_kib()), mb(anon), mb(pss))
        })
        .collect();
    parts.join(", ")
}

fn spread(ms: &mut [f64]) -> String {
    ms.sort_by(f64::total_cmp);
    format!("median {:.0} ms, min {:.0} ms, max {:.0} ms over {} kills", ms[ms.len() / 2], ms[0], ms[ms.len() - 1], ms.len())
}

/// Runs it; result lines.
pub async fn run(ctx: &Ctx) -> Result<Vec<String>, String> {
    let build = if cfg!(debug_assertions) { "debug build" } else { "release build" };
    let mut nodes = Vec::new();
    let mut peers = Vec::new();
    for i in 0..3 {
        let [grpc, healthz, metrics, raft] = free_ports::<4>()?;
        let id = format!("bench-placement-{i}");
        peers.push(format!("{id}=127.0.0.1:{raft}"));
        nodes.push(Node { proc: None, ports: [grpc, healthz, metrics], dir: ctx.dir.join(&id), id });
    }
    let initial = peers.join(",");
    eprintln!("  placement: 3 nodes, {SIDECARS} simulated sidecars");
    for node in nodes.iter_mut() {
        node.proc = Some(spawn(ctx, node, &initial)?);
    }
    let first = leader(&nodes, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = memory(&nodes, first);

    let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.ports[0])).collect();
    let joined = Instant::now();
    let sims: Vec<SimSidecar> = (0..SIDECARS).map(|i| SimSidecar::start(addresses.clone(), report(&format!("127.0.0.1:{}", 20000 + i), Some(ACTOR_TYPE)), ACTOR_TYPE)).collect();
    let all_in = all_hold(&sims, "join", Duration::from_secs(60), |_, s| s.hosts == SIDECARS).await?;
    let join_ms = all_in.saturating_duration_since(joined).as_secs_f64() * 1000.0;
    let leading = leader(&nodes, Duration::from_secs(5)).await?;
    let versions = match get(nodes[leading].ports[1], "/placement/state").await {
        Some(r) => r.json::<serde_json::Value>().await.ok().and_then(|v| v["tables"]["default"]["version"].as_u64()).unwrap_or(0),
        None => 0,
    };
    // jemalloc hands freed pages back after its 10 s decay: the resident set once that passed.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let loaded = memory(&nodes, leading);

    let mut failovers = Vec::new();
    let mut elections = Vec::new();
    for round in 0..ctx.args.rounds.max(1) {
        let killed = leader(&nodes, Duration::from_secs(30)).await?;
        eprintln!("  placement fail-over {}/{}", round + 1, ctx.args.rounds.max(1));
        let before: Vec<u64> = sims.iter().map(|s| s.seen.borrow().connection).collect();
        let at = Instant::now();
        drop(nodes[killed].proc.take());
        leader(&nodes, Duration::from_secs(30)).await?;
        elections.push(at.elapsed().as_secs_f64() * 1000.0);
        let back = all_hold(&sims, "fail-over", Duration::from_secs(30), |i, s| s.connection > before[i] && s.hosts == SIDECARS && s.at.is_some_and(|t| t > at)).await?;
        failovers.push(back.saturating_duration_since(at).as_secs_f64() * 1000.0);
        // The killed node comes back from its data directory and catches up before the next kill.
        let p = spawn(ctx, &nodes[killed], &initial)?;
        nodes[killed].proc = Some(p);
        let start = Instant::now();
        while get(nodes[killed].ports[1], "/healthz").await.is_none() {
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!("{} did not restart", nodes[killed].id));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let observer = [SimSidecar::start(addresses.clone(), report("127.0.0.1:19999", None), ACTOR_TYPE)];
    all_hold(&observer, "observer", Duration::from_secs(30), |_, s| s.hosts == SIDECARS).await?;
    let left = Instant::now();
    drop(sims);
    let gone = all_hold(&observer, "leave", Duration::from_secs(60), |_, s| s.hosts == 0).await?;
    let leave_ms = gone.saturating_duration_since(left).as_secs_f64() * 1000.0;
    let after = leader(&nodes, Duration::from_secs(5)).await?;
    let end = memory(&nodes, after);

    Ok(vec![
        format!("placement join ({build}, 3 raft nodes, {SIDECARS} simulated daprd sidecars): every sidecar held the {SIDECARS}-host table {join_ms:.0} ms after the first connected (table version {versions})"),
        format!("placement fail-over (leader killed -> every sidecar holds a table with all {SIDECARS} hosts from the new leader): {}; target <= 2000 ms", spread(&mut failovers)),
        format!("placement fail-over, the election part (leader killed -> another node serves): {}", spread(&mut elections)),
        format!("placement leave ({SIDECARS} sidecars closed their streams -> an observer's tables hold none): {leave_ms:.0} ms, the 5 s lease period included by design"),
        format!("placement memory per node: idle: {idle}; with {SIDECARS} hosts: {loaded}; after the fail-overs and the leave: {end}; target <= 10 MB"),
    ])
}
