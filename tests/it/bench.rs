//! `rapr bench` end to end at a small scale: every scenario starts what it measures (echo app,
//! nginx and haproxy chains, sidecars, stores), runs its baseline in the same run, and reports
//! rows without errors; `--markdown` writes the table docs/benchmarks.md takes. Figures are not
//! asserted (benchmarks, never timed assertions), only that each was measured.

use std::process::Command;

#[test]
fn every_scenario_runs_with_its_baseline_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("bench.md");
    let out = Command::new(env!("CARGO_BIN_EXE_rapr"))
        .args(["bench", "all", "--qps", "100", "-c", "4", "--duration", "1s", "--warmup", "300ms", "--rounds", "1", "--payload", "256"])
        .args(["--stores", "sqlite,redis,postgres", "--p99-limit-ms", "50", "--ladder", "100,200", "--cost-requests", "200", "--markdown"])
        .arg(&md)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "rapr bench failed:\n{stdout}\n{stderr}");
    let table = std::fs::read_to_string(&md).unwrap();
    let rows: Vec<Vec<&str>> = table.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| scenario")).map(|l| l.split('|').map(str::trim).collect()).collect();
    for (scenario, variant) in [
        ("invoke-http", "direct"),
        ("invoke-http", "nginx x2"),
        ("invoke-http", "haproxy x2"),
        ("invoke-http", "rapr x2"),
        ("invoke-grpc", "direct"),
        ("invoke-grpc", "nginx x2"),
        ("invoke-grpc", "haproxy x2"),
        ("invoke-grpc", "rapr x2"),
        ("state-get redis", "direct"),
        ("state-get redis", "rapr http"),
        ("state-get postgres", "rapr grpc"),
        ("state-get sqlite", "rapr http"),
        ("state-save postgres", "direct"),
        ("state-save redis", "rapr grpc"),
        ("state-save sqlite", "rapr grpc"),
    ] {
        let row = rows.iter().find(|r| r[1] == scenario && r[2] == variant).unwrap_or_else(|| panic!("no row {scenario} / {variant} in:\n{table}"));
        assert_eq!(row[8], "0", "errors in {scenario} / {variant}:\n{stdout}");
        assert!(row[3].ends_with("µs") || row[3].ends_with("ms"), "{row:?}");
    }
    for note in [
        "added latency invoke-http rapr x2 vs direct",
        "added latency invoke-http haproxy x2 vs direct",
        "added latency invoke-grpc haproxy x2 vs direct",
        "max throughput invoke-http rapr x2 (ladder 100/200;",
        "max throughput invoke-http haproxy x2",
        "max throughput invoke-grpc rapr x2",
        "max throughput invoke-grpc nginx x2",
        "CPU per state get on redis (200 calls back to back on one connection after 500, 256 B): sidecar over HTTP",
        "CPU per state save on postgres (200 calls",
        "; driver-only client ",
        "startup to healthy",
        "at healthy (rapr sidecar, embedded defaults): RssFile",
        "idle RSS",
        "RSS of the invocation sidecars",
        "memory of the invocation caller, idle -> at 100 QPS: RssAnon",
        "binary size",
        "placement join (",
        "placement fail-over (leader killed",
        "placement leave (",
        "placement memory per node: idle: leader",
    ] {
        assert!(table.contains(note), "{note:?} missing from:\n{table}");
    }
}

/// The invocation scenarios alone, in seconds: every chain (nginx, haproxy with HTTP/2 between
/// its hops, rapr) answers through to the echo app, so each row has answers and no errors, and
/// each chain has its added-latency line.
#[test]
fn invoke_scenarios_run_every_chain_through_to_the_app() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("bench.md");
    let out = Command::new(env!("CARGO_BIN_EXE_rapr"))
        .args(["bench", "invoke-http,invoke-grpc", "--quick", "--duration", "1s", "--warmup", "300ms", "--qps", "200", "-c", "4", "--rounds", "1", "--markdown"])
        .arg(&md)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "rapr bench failed:\n{stdout}\n{stderr}");
    assert!(stderr.contains("1s measured + 300ms warm-up (--quick)"), "{stderr}");
    let table = std::fs::read_to_string(&md).unwrap();
    let rows: Vec<Vec<&str>> = table.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| scenario")).map(|l| l.split('|').map(str::trim).collect()).collect();
    for scenario in ["invoke-http", "invoke-grpc"] {
        for variant in ["direct", "nginx x2", "haproxy x2", "rapr x2"] {
            let row = rows.iter().find(|r| r[1] == scenario && r[2] == variant).unwrap_or_else(|| panic!("no row {scenario} / {variant} in:\n{table}"));
            assert_eq!(row[8], "0", "errors in {scenario} / {variant}:\n{stdout}");
            let qps: f64 = row[7].parse().unwrap_or_else(|_| panic!("{row:?}"));
            assert!(qps > 0.0, "no answers in {scenario} / {variant}:\n{table}");
            if variant != "direct" {
                let note = format!("added latency {scenario} {variant} vs direct");
                assert!(table.contains(&note), "{note:?} missing from:\n{table}");
            }
        }
    }
}

/// The pub/sub scenarios alone, quickly: every broker's sidecar row beside its direct baseline,
/// no errors (a lost delivery is an error), and the CPU and bulk lines.
#[test]
fn pubsub_scenarios_run_with_their_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("bench.md");
    let out = Command::new(env!("CARGO_BIN_EXE_rapr"))
        .args(["bench", "publish,pubsub-e2e,pubsub-bulk", "--qps", "100", "-c", "4", "--duration", "1s", "--warmup", "300ms", "--rounds", "1", "--payload", "256"])
        .args(["--brokers", "redis,sqlite", "--markdown"])
        .arg(&md)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "rapr bench failed:\n{stdout}\n{stderr}");
    let table = std::fs::read_to_string(&md).unwrap();
    let rows: Vec<Vec<&str>> = table.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| scenario")).map(|l| l.split('|').map(str::trim).collect()).collect();
    for scenario in ["publish redis", "publish sqlite", "pubsub-e2e redis", "pubsub-e2e sqlite"] {
        for variant in ["direct", "rapr http"] {
            let row = rows.iter().find(|r| r[1] == scenario && r[2] == variant).unwrap_or_else(|| panic!("no row {scenario} / {variant} in:\n{table}"));
            assert_eq!(row[8], "0", "errors in {scenario} / {variant}:\n{stdout}");
            assert!(row[3].ends_with("µs") || row[3].ends_with("ms"), "{row:?}");
        }
    }
    for note in ["sidecar CPU per message publish redis rapr http", "sidecar CPU per message pubsub-e2e sqlite rapr http", "bulk publish sqlite direct", "bulk publish sqlite rapr http"] {
        assert!(table.contains(note), "{note:?} missing from:\n{table}");
    }
}

/// `bench cost --quick` with a tiny N: instructions per request counted for the direct echo app
/// and both sidecars, a row each appended to the CSV, and each figure compared with the CSV's
/// last row for the same process. Counts are not asserted beyond being there.
#[test]
fn cost_quick_counts_instructions_per_request() {
    if Command::new("callgrind_control").arg("-h").output().is_err() {
        eprintln!("skipped: valgrind (callgrind_control) is not installed; .ci/run installs it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("cost.csv");
    let build = if cfg!(debug_assertions) { "debug" } else { "release" };
    std::fs::write(&csv, format!("date,commit,scenario,variant,process,ir_per_req,syscalls_per_req,note\n2026-01-01T00:00:00Z,abc,invoke-http,direct,echo app,1000.0,,{build} build\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rapr")).args(["bench", "cost", "--quick", "--cost-requests", "20", "--payload", "256", "--csv"]).arg(&csv).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "rapr bench cost failed:\n{stdout}\n{stderr}");
    assert!(!stdout.contains("could not measure"), "{stdout}\n{stderr}");
    let text = std::fs::read_to_string(&csv).unwrap();
    for (variant, process) in [("direct", "echo app"), ("rapr x2", "caller sidecar"), ("rapr x2", "app sidecar")] {
        let row = text.lines().skip(2).find(|l| l.contains(&format!(",invoke-http,{variant},{process},"))).unwrap_or_else(|| panic!("no row {variant} / {process} in:\n{text}\n{stdout}"));
        let ir: f64 = row.split(',').nth(5).unwrap().parse().unwrap();
        assert!(ir > 0.0, "{row}");
    }
    assert!(stdout.contains("cost invoke-http direct echo app: Ir/req") && stdout.contains("% vs 1000"), "{stdout}");
    assert!(stdout.contains("cost invoke-http rapr x2 app sidecar: Ir/req") && stdout.contains("no earlier row"), "{stdout}");
}
