//! `footprint`: what the sidecar costs when nothing happens and at the reference load. Startup
//! (spawn to a 2xx `/v1.0/healthz`) and idle RSS of `rapr sidecar` on embedded defaults (the
//! SQLite state store `rapr init` writes), RSS of both sidecars of an invocation chain at the
//! flags' rate, and the size of this binary.

use std::time::Duration;

use http::Method;

use super::callers::{self, HttpShape};
use super::invoke::{echo_app, ECHO_ID};
use super::Ctx;

/// Runs it; returns result lines.
pub async fn run(ctx: &Ctx) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    // Embedded defaults under the run's own RAPR_HOME.
    let home = ctx.dir.join("home");
    let res = crate::cli::init::ensure_defaults(&home).map_err(|e| format!("writing the default components: {e}"))?;
    let mut startups = Vec::new();
    let mut idle = Vec::new();
    let mut split = (0, 0, 0);
    let mut faults = (0, 0);
    let mut at_start = (0, 0, 0);
    for i in 0..5.max(ctx.args.rounds) {
        if i == 0 {
            eprintln!("  footprint: startups and idle RSS");
        }
        let sc = ctx.sidecar(&format!("bench-idle-{i}"), &res, &[]).await?;
        startups.push(sc.startup.as_secs_f64() * 1000.0);
        if i == 0 {
            // The pages touched to get healthy: the binary's (RssFile) and the process's own.
            at_start = super::procs::memory_split(sc.proc.pid());
            faults = super::procs::page_faults(sc.proc.pid());
            tokio::time::sleep(Duration::from_secs(3)).await;
            idle.push(sc.proc.rss_kib());
            split = super::procs::memory_split(sc.proc.pid());
        }
    }
    startups.sort_by(f64::total_cmp);
    lines.push(format!(
        "startup to healthy (rapr sidecar, embedded SQLite state store): median {:.1} ms, min {:.1} ms, max {:.1} ms over {} starts",
        startups[startups.len() / 2],
        startups[0],
        startups[startups.len() - 1],
        startups.len()
    ));
    lines.push(format!(
        "at healthy (rapr sidecar, embedded defaults): RssFile {:.1} MB (binary and library pages touched to start), RssAnon {:.1} MB; {} minor / {} major page faults",
        at_start.1 as f64 / 1024.0,
        at_start.0 as f64 / 1024.0,
        faults.0,
        faults.1
    ));
    lines.push(format!(
        "idle RSS (rapr sidecar, embedded defaults, 3 s after healthy): {:.1} MB = {:.1} MB private (RssAnon) + {:.1} MB mapped binary and libraries (RssFile, shared by every rapr process); PSS {:.1} MB",
        idle[0] as f64 / 1024.0,
        split.0 as f64 / 1024.0,
        split.1 as f64 / 1024.0,
        split.2 as f64 / 1024.0
    ));
    // Both sidecars of an invocation chain, idle and at the flags' rate.
    let (_echo, echo_http, _) = echo_app(ctx).await?;
    let inv = ctx.dir.join("footprint-resources");
    let target = ctx.sidecar(ECHO_ID, &inv, &["--app-port".into(), echo_http.to_string()]).await?;
    let caller = ctx.sidecar("bench-caller-fp", &inv, &[]).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle_c, idle_t) = (caller.proc.rss_kib(), target.proc.rss_kib());
    let split_idle = [super::procs::memory_split(caller.proc.pid()), super::procs::memory_split(target.proc.pid())];
    let shape = HttpShape { method: Method::POST, path: format!("/v1.0/invoke/{ECHO_ID}/method/echo"), body: ctx.payload(), content_type: Some("application/json") };
    let what = format!("footprint at {} QPS", ctx.args.qps);
    let (stats, _) = ctx.measure(&what, callers::http(caller.http, shape), &[&caller.proc, &target.proc]).await?;
    let (load_c, load_t) = (caller.proc.rss_kib(), target.proc.rss_kib());
    let split_load = [super::procs::memory_split(caller.proc.pid()), super::procs::memory_split(target.proc.pid())];
    for (i, who) in ["caller", "app's sidecar"].iter().enumerate() {
        let mb = |k: u64| k as f64 / 1024.0;
        let ((a0, f0, p0), (a1, f1, p1)) = (split_idle[i], split_load[i]);
        lines.push(format!(
            "memory of the invocation {who}, idle -> at {} QPS: RssAnon {:.1} -> {:.1} MB, RssFile {:.1} -> {:.1} MB, PSS {:.1} -> {:.1} MB",
            ctx.args.qps,
            mb(a0),
            mb(a1),
            mb(f0),
            mb(f1),
            mb(p0),
            mb(p1)
        ));
    }
    lines.push(format!(
        "RSS of the invocation sidecars, idle -> at {} QPS ({} connections, {} B): caller {:.1} -> {:.1} MB, app's sidecar {:.1} -> {:.1} MB; both sidecars together {:.0}% of a core",
        ctx.args.qps,
        ctx.args.connections,
        ctx.args.payload,
        idle_c as f64 / 1024.0,
        load_c as f64 / 1024.0,
        idle_t as f64 / 1024.0,
        load_t as f64 / 1024.0,
        stats.cpu_pct
    ));
    let size = std::fs::metadata(&ctx.exe).map(|m| m.len()).unwrap_or(0);
    let stripped = if is_stripped(&ctx.exe) { "stripped" } else { "NOT stripped (build with --release)" };
    lines.push(format!("binary size: {:.1} MB ({stripped}, {})", size as f64 / 1_048_576.0, ctx.exe.display()));
    Ok(lines)
}

/// Whether the ELF64 file has no `.symtab` section (what `strip` removes), read from its
/// section headers.
fn is_stripped(path: &std::path::Path) -> bool {
    let Ok(b) = std::fs::read(path) else { return false };
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]) as usize);
    let u32_at = |o: usize| b.get(o..o + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize);
    let u64_at = |o: usize| b.get(o..o + 8).and_then(|s| <[u8; 8]>::try_from(s).ok()).map(|a| u64::from_le_bytes(a) as usize);
    let names = || -> Option<Vec<String>> {
        if b.get(..5)? != b"\x7fELF\x02" {
            return None;
        }
        let (shoff, shentsize, shnum, shstrndx) = (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?, u16_at(0x3e)?);
        let strtab = u64_at(shoff + shstrndx * shentsize + 0x18)?;
        let mut out = Vec::new();
        for i in 0..shnum {
            let name = strtab + u32_at(shoff + i * shentsize)?;
            let end = b.get(name..)?.iter().position(|&c| c == 0)?;
            out.push(String::from_utf8_lossy(&b[name..name + end]).into_owned());
        }
        Some(out)
    };
    names().is_some_and(|n| !n.iter().any(|s| s == ".symtab"))
}
