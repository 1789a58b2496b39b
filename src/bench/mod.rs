//! `rapr bench`: the instrument behind docs/benchmarks.md (DESIGN.md §9). An open-loop generator
//! at a fixed rate (`loadgen`), the processes it measures started on free ports and pinned away
//! from the generator (`procs`, `nginx`, `haproxy`, `echo`), one module per scenario, each measuring its
//! baseline in the same run, and every scenario repeated over rounds reported as median and
//! spread (`report`).
//!
//! The generator runs on a current-thread runtime pinned to core 0; sidecars, nginx and the echo
//! app share the other cores. Processes stay up across rounds; the variants of a scenario take
//! turns within each round so drift on the machine touches all of them alike.

pub mod callers;
pub mod cost;
pub mod cost_csv;
pub mod cost_tools;
pub mod debian;
pub mod echo;
pub mod footprint;
pub mod haproxy;
pub mod invoke;
pub mod loadgen;
pub mod nginx;
pub mod placement;
pub mod placement_sim;
pub mod procs;
pub mod pubsub;
pub mod pubsub_bulk;
pub mod pubsub_direct;
pub mod report;
pub mod sidecar;
pub mod state;
pub mod state_cpu;
pub mod throughput;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use loadgen::Load;
use procs::Pinning;
use report::Row;

/// Flags of `rapr bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Scenarios: invoke-http, invoke-grpc, state-get, state-save, state-cpu, publish, pubsub-e2e,
    /// pubsub-bulk, throughput, footprint, placement, or all; and cost (per-request syscalls and
    /// instructions, not in all).
    #[arg(value_delimiter = ',', default_value = "invoke-http")]
    pub scenarios: Vec<String>,
    /// Requests per second (over all connections).
    #[arg(long, default_value_t = 1000)]
    pub qps: u64,
    /// Concurrent connections.
    #[arg(long, short = 'c', default_value_t = 16)]
    pub connections: usize,
    /// Request payload in bytes.
    #[arg(long, default_value_t = 1024)]
    pub payload: usize,
    /// Measured time per round (default 60 s: a p99 needs thousands of samples behind it; 5 s
    /// with `--quick`).
    #[arg(long, value_parser = go_duration)]
    pub duration: Option<Duration>,
    /// Warm-up before each round (same rate, not recorded; default 5 s, 1 s with `--quick`).
    #[arg(long, value_parser = go_duration)]
    pub warmup: Option<Duration>,
    /// Short rounds for smoke runs (5 s after 1 s of warm-up) unless `--duration`/`--warmup` say
    /// otherwise; too few samples for p99 claims. For `cost`: the instruction count only, of
    /// `direct` and `rapr x2` over HTTP, never failing (CI's informational check).
    #[arg(long)]
    pub quick: bool,
    /// Rounds per scenario (median and spread are reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// State stores for state-get/state-save: redis, postgres, sqlite.
    #[arg(long, value_delimiter = ',', default_value = "redis,postgres,sqlite")]
    pub stores: Vec<String>,
    /// Brokers for publish/pubsub-e2e: redis, sqlite.
    #[arg(long, value_delimiter = ',', default_value = "redis,sqlite")]
    pub brokers: Vec<String>,
    /// Redis address for the state and pub/sub scenarios.
    #[arg(long, default_value = "127.0.0.1:6379")]
    pub redis: String,
    /// PostgreSQL connection string for the state scenarios.
    #[arg(long, default_value = "host=127.0.0.1 user=postgres dbname=test")]
    pub postgres: String,
    /// p99 limit of a throughput step, in milliseconds.
    #[arg(long, default_value_t = 5.0)]
    pub p99_limit_ms: f64,
    /// The throughput ladder, QPS (default 1000/2000/3000/4000/5000/6000/7000/8000/10000/12000/
    /// 15000/20000/25000/30000).
    #[arg(long, value_delimiter = ',')]
    pub ladder: Vec<u64>,
    /// Do not pin the generator and the measured processes to separate cores.
    #[arg(long)]
    pub no_pin: bool,
    /// Append the results as Markdown to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// `cost`: closed-loop requests counted per variant (default 1000, 300 with --quick);
    /// `state-cpu`: calls timed per side (default 20000, 2000 with --quick).
    #[arg(long)]
    pub cost_requests: Option<usize>,
    /// `cost`: append a row per measured process to this CSV (docs/bench-cost.csv) and print
    /// each figure's change against the file's last row for the same process.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// `cost`: only compare with `--csv`, never write to it (CI).
    #[arg(long)]
    pub compare_only: bool,
    /// `cost`: the CSV rows' note (default: the build kind, N, quick).
    #[arg(long)]
    pub csv_note: Option<String>,
}

impl BenchArgs {
    /// The measured time per round: `--duration`, else 60 s (5 s with `--quick`).
    pub fn duration(&self) -> Duration {
        self.duration.unwrap_or(Duration::from_secs(if self.quick { 5 } else { 60 }))
    }

    /// The warm-up before each round: `--warmup`, else 5 s (1 s with `--quick`).
    pub fn warmup(&self) -> Duration {
        self.warmup.unwrap_or(Duration::from_secs(if self.quick { 1 } else { 5 }))
    }
}

/// What every scenario needs.
pub struct Ctx {
    /// The rapr binary (this one).
    pub exe: PathBuf,
    /// Core assignment.
    pub pin: Pinning,
    /// Scratch folder for configs, logs and RAPR_HOME.
    pub dir: PathBuf,
    /// The flags.
    pub args: BenchArgs,
}

impl Ctx {
    /// The fixed-rate load of the flags.
    pub fn load(&self) -> Load {
        Load { qps: self.args.qps, connections: self.args.connections, duration: self.args.duration(), warmup: self.args.warmup() }
    }

    /// The request payload: `payload` bytes of JSON-safe text.
    pub fn payload(&self) -> bytes::Bytes {
        let mut v = vec![b'x'; self.args.payload];
        if v.len() >= 2 {
            v[0] = b'"';
            let n = v.len();
            v[n - 1] = b'"';
        }
        bytes::Bytes::from(v)
    }

    /// A progress reporter for `what`: one line on stderr rewritten every second on a terminal;
    /// elsewhere (CI logs) only the start of each measurement.
    pub fn progress(&self, what: String) -> impl Fn(f64, u64) + Sync {
        let total = (self.args.warmup() + self.args.duration()).as_secs_f64();
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        if !tty {
            eprintln!("  {what}");
        }
        move |t, n| {
            if tty {
                eprint!("\r  {what}: {t:>5.1}/{total:.0} s, {n} requests   ")
            }
        }
    }

    /// Runs one variant's load with progress and the usage of `measured`.
    pub async fn measure(&self, what: &str, connect: loadgen::Connect, measured: &[&procs::Proc]) -> Result<(report::RoundStats, Option<String>), String> {
        self.measure_at(what, self.load(), connect, measured).await
    }

    /// As `measure`, at a given load.
    pub async fn measure_at(&self, what: &str, load: Load, connect: loadgen::Connect, measured: &[&procs::Proc]) -> Result<(report::RoundStats, Option<String>), String> {
        let progress = self.progress(what.to_string());
        let usage_start = std::sync::OnceLock::new();
        let r = loadgen::run(load, connect, &|t, n| {
            // CPU is measured from the first tick after warm-up: the recorded part only.
            if t >= load.warmup.as_secs_f64() {
                usage_start.get_or_init(|| procs::Usage::begin(measured));
            }
            progress(t, n)
        })
        .await?;
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprint!("\r{:100}\r", "");
        }
        let usage = usage_start.into_inner().unwrap_or_else(|| procs::Usage::begin(measured));
        Ok((report::RoundStats::new(&r, &usage.finish(measured)), r.first_error))
    }
}

/// One measured variant of a scenario.
pub struct Variant<'a> {
    /// Its name in the table (`direct`, `nginx x2`, `haproxy x2`, `rapr x2`, ...).
    pub name: String,
    /// How its connections are made.
    pub connect: loadgen::Connect,
    /// The processes whose CPU and RSS it reports.
    pub measured: Vec<&'a procs::Proc>,
    /// What those processes are, for the table.
    pub covers: &'static str,
}

impl<'a> Variant<'a> {
    /// A variant named `name`.
    pub fn new(name: &str, connect: loadgen::Connect, measured: Vec<&'a procs::Proc>, covers: &'static str) -> Self {
        Variant { name: name.into(), connect, measured, covers }
    }
}

impl Ctx {
    /// Runs every variant once per round, taking turns within a round (so drift on the machine
    /// touches all alike); a row per variant.
    pub async fn rounds(&self, scenario: &str, variants: &[Variant<'_>]) -> Result<Vec<Row>, String> {
        let mut rows: Vec<Row> = variants.iter().map(|v| Row { scenario: scenario.into(), variant: v.name.clone(), measured: v.covers.into(), rounds: Vec::new(), first_error: None }).collect();
        for round in 0..self.args.rounds {
            for (row, v) in rows.iter_mut().zip(variants) {
                let what = format!("{scenario} {} round {}/{}", v.name, round + 1, self.args.rounds);
                let (stats, err) = self.measure(&what, v.connect.clone(), &v.measured).await?;
                row.rounds.push(stats);
                row.first_error = row.first_error.take().or(err);
            }
        }
        Ok(rows)
    }
}

/// `rapr bench`; returns the exit code.
pub async fn run_bench(args: BenchArgs) -> i32 {
    let pin = Pinning::detect(args.no_pin);
    pin.pin_generator();
    let dir = std::env::temp_dir().join(format!("rapr-bench-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("❌  {}: {e}", dir.display());
        return 1;
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("❌  cannot find the rapr binary: {e}");
            return 1;
        }
    };
    let ctx = Ctx { exe, pin, dir: dir.clone(), args: args.clone() };
    let scenarios = expand(&args.scenarios);
    eprintln!(
        "rapr bench: {} at {} QPS, {} connections, {} B, {:?} measured + {:?} warm-up{}, {} rounds; generator core {:?}, measured cores {:?}",
        scenarios.join(","),
        args.qps,
        args.connections,
        args.payload,
        args.duration(),
        args.warmup(),
        if args.quick { " (--quick)" } else { "" },
        args.rounds,
        ctx.pin.load,
        ctx.pin.sut
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut code = 0;
    for s in &scenarios {
        let r = match s.as_str() {
            "invoke-http" => invoke::run(&ctx, false).await,
            "invoke-grpc" => invoke::run(&ctx, true).await,
            "state-get" | "state-save" => state::run(&ctx, s == "state-save").await,
            "state-cpu" => state_cpu::run(&ctx).await.map(|lines| {
                notes.extend(lines);
                Vec::new()
            }),
            "publish" | "pubsub-e2e" => {
                let r = if s == "publish" { pubsub::run_publish(&ctx).await } else { pubsub::run_e2e(&ctx).await };
                r.inspect(|rows| notes.extend(pubsub::cpu_per_message(rows, 1.0)))
            }
            "pubsub-bulk" => pubsub_bulk::run(&ctx).await.map(|lines| {
                notes.extend(lines);
                Vec::new()
            }),
            "throughput" => throughput::run(&ctx).await.map(|lines| {
                notes.extend(lines);
                Vec::new()
            }),
            "cost" => cost::run(&ctx).await.map(|lines| {
                notes.extend(lines);
                Vec::new()
            }),
            "footprint" => footprint::run(&ctx).await.map(|lines| {
                notes.extend(lines);
                Vec::new()
            }),
            "placement" => placement::run(&ctx).await.map(|lines| {
                notes.extend(lines);
                Vec::new()
            }),
            other => Err(format!("unknown scenario {other:?}: use invoke-http, invoke-grpc, state-get, state-save, state-cpu, publish, pubsub-e2e, pubsub-bulk, throughput, footprint, placement, cost or all")),
        };
        match r {
            Ok(mut r) => rows.append(&mut r),
            Err(e) => {
                eprintln!("❌  {s}: {e}");
                code = 1;
            }
        }
    }
    notes.splice(0..0, added_lines(&rows));
    println!("\n{}", report::text(&rows));
    for n in &notes {
        println!("{n}");
    }
    if let Some(path) = &args.markdown {
        if let Err(e) = append_markdown(path, &rows, &notes) {
            eprintln!("❌  {}: {e}", path.display());
            code = 1;
        }
    }
    // `RAPR_BENCH_KEEP=1` keeps the scratch folder (logs, configs, callgrind profiles).
    if std::env::var_os("RAPR_BENCH_KEEP").is_some() {
        eprintln!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    code
}

/// `--duration`/`--warmup`: Go's duration syntax, as every rapr duration.
use crate::config::duration::flag_duration as go_duration;

fn expand(list: &[String]) -> Vec<String> {
    let all = ["invoke-http", "invoke-grpc", "state-get", "state-save", "state-cpu", "publish", "pubsub-e2e", "pubsub-bulk", "throughput", "footprint", "placement"];
    let mut out = Vec::new();
    for s in list {
        if s == "all" {
            out.extend(all.iter().map(|s| s.to_string()));
        } else {
            out.push(s.clone());
        }
    }
    out.dedup();
    out
}

/// "added latency" lines for every scenario with a `direct` baseline.
fn added_lines(rows: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for r in rows {
        if r.variant == "direct" || !seen.insert((r.scenario.clone(), r.variant.clone())) {
            continue;
        }
        if let Some((p50, p99)) = report::added(rows, &r.scenario, &r.variant, "direct") {
            out.push(format!("added latency {} {} vs direct: p50 {p50:+.0} µs, p99 {p99:+.0} µs", r.scenario, r.variant));
        }
    }
    out
}

/// The machine, for the record.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| s.lines().find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))).unwrap_or_else(|| "unknown CPU".into());
    // Every online core, not this (pinned) thread's share of them.
    let cores = std::fs::read_to_string("/proc/cpuinfo").map(|s| s.lines().filter(|l| l.starts_with("processor")).count()).unwrap_or(1);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores, {cpu}, Linux {}", kernel.trim())
}

fn append_markdown(path: &std::path::Path, rows: &[Row], notes: &[String]) -> std::io::Result<()> {
    use std::io::Write as _;
    let date = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let cmd: Vec<String> = std::env::args().collect();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(f, "\n### `{}`\n\n{date}, {}\n", cmd.join(" "), machine())?;
    if !rows.is_empty() {
        writeln!(f, "{}", report::markdown(rows))?;
    }
    for n in notes {
        writeln!(f, "- {n}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn rounds(args: &[&str]) -> (Duration, Duration) {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).unwrap();
        (cli.bench.duration(), cli.bench.warmup())
    }

    #[test]
    fn rounds_are_60_s_unless_quick_and_explicit_flags_win() {
        let s = Duration::from_secs;
        assert_eq!(rounds(&[]), (s(60), s(5)));
        assert_eq!(rounds(&["--quick"]), (s(5), s(1)));
        assert_eq!(rounds(&["--quick", "--duration", "2s"]), (s(2), s(1)));
        assert_eq!(rounds(&["--quick", "--warmup", "300ms"]), (s(5), Duration::from_millis(300)));
        assert_eq!(rounds(&["--duration", "10s", "--warmup", "2s"]), (s(10), s(2)));
    }
}
