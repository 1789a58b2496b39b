//! Results of `rapr bench`: each measured variant's rounds, their median and spread, printed as a
//! table and (with `--markdown`) as the Markdown docs/benchmarks.md takes.

use std::fmt::Write as _;

use super::loadgen::LoadResult;
use super::procs::ProcUsage;

/// One round of one variant.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundStats {
    /// Latency percentiles, µs.
    pub p50: f64,
    /// 90th percentile, µs.
    pub p90: f64,
    /// 99th percentile, µs.
    pub p99: f64,
    /// 99.9th percentile, µs.
    pub p999: f64,
    /// Successful answers per second.
    pub qps: f64,
    /// Failed requests.
    pub errors: u64,
    /// CPU of the measured processes, % of one core (summed).
    pub cpu_pct: f64,
    /// User CPU of the measured processes per answered request, µs (summed).
    pub user_us_per_req: f64,
    /// System CPU of the measured processes per answered request, µs (summed).
    pub sys_us_per_req: f64,
    /// Context switches of the measured processes per answered request (summed).
    pub switches_per_req: f64,
    /// RSS of the measured processes at the end of the round, KiB (summed).
    pub rss_kib: u64,
}

impl RoundStats {
    /// Summarises a load result and the measured processes' usage.
    pub fn new(r: &LoadResult, usage: &[ProcUsage]) -> Self {
        let qps = r.achieved_qps();
        // A rate over the request rate of the same window is a cost per request; with no
        // request answered there is none (NaN prints as "-").
        let per_req = |rate: f64| if qps > 0.0 { rate / qps } else { f64::NAN };
        RoundStats {
            p50: r.p_us(0.5),
            p90: r.p_us(0.9),
            p99: r.p_us(0.99),
            p999: r.p_us(0.999),
            qps: r.achieved_qps(),
            errors: r.errors,
            // `+ 0.0`: an empty float sum is -0.0, which would print as "-0%".
            cpu_pct: usage.iter().map(|u| u.cpu_pct).sum::<f64>() + 0.0,
            user_us_per_req: per_req(usage.iter().map(|u| u.user_pct).sum::<f64>() * 1e4),
            sys_us_per_req: per_req(usage.iter().map(|u| u.sys_pct).sum::<f64>() * 1e4),
            switches_per_req: per_req(usage.iter().map(|u| u.switches_per_s).sum::<f64>()),
            rss_kib: usage.iter().map(|u| u.rss_kib).sum(),
        }
    }
}

/// One measured variant (e.g. `invoke-http` through `rapr`), over its rounds.
#[derive(Debug, Clone)]
pub struct Row {
    /// Scenario name.
    pub scenario: String,
    /// Variant: `direct`, `nginx x2`, `rapr x2`, ...
    pub variant: String,
    /// What the CPU/RSS columns cover.
    pub measured: String,
    /// Every round.
    pub rounds: Vec<RoundStats>,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

impl Row {
    /// The median of `f` over the rounds.
    pub fn median(&self, f: impl Fn(&RoundStats) -> f64) -> f64 {
        let mut v: Vec<f64> = self.rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    /// (min, max) of `f` over the rounds.
    pub fn spread(&self, f: impl Fn(&RoundStats) -> f64) -> (f64, f64) {
        self.rounds.iter().map(f).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)))
    }
}

/// A "added latency" line: `variant - baseline` at p50 and p99 (medians).
pub fn added(rows: &[Row], scenario: &str, variant: &str, baseline: &str) -> Option<(f64, f64)> {
    let find = |v: &str| rows.iter().find(|r| r.scenario == scenario && r.variant == v);
    let (a, b) = (find(variant)?, find(baseline)?);
    Some((a.median(|s| s.p50) - b.median(|s| s.p50), a.median(|s| s.p99) - b.median(|s| s.p99)))
}

fn us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

/// A per-request cost with one decimal ("-" when unknown).
fn cost(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "-".into()
    }
}

/// A row's medians as printed: p50, p90, p99, p99.9, QPS, errors, CPU %, user and system CPU µs
/// per request, context switches per request, RSS MB.
fn cells(r: &Row) -> [String; 11] {
    [
        us(r.median(|s| s.p50)),
        us(r.median(|s| s.p90)),
        us(r.median(|s| s.p99)),
        us(r.median(|s| s.p999)),
        format!("{:.0}", r.median(|s| s.qps)),
        r.rounds.iter().map(|s| s.errors).sum::<u64>().to_string(),
        format!("{:.0}%", r.median(|s| s.cpu_pct)),
        cost(r.median(|s| s.user_us_per_req)),
        cost(r.median(|s| s.sys_us_per_req)),
        cost(r.median(|s| s.switches_per_req)),
        format!("{:.1} MB", r.median(|s| s.rss_kib as f64) / 1024.0),
    ]
}

/// The results as a Markdown table (medians, with the p50/p99 spread over rounds).
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from("| scenario | variant | p50 | p90 | p99 | p99.9 | QPS | errors | CPU | user µs/req | sys µs/req | cs/req | RSS | p50 / p99 spread |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let (l50, h50) = r.spread(|s| s.p50);
        let (l99, h99) = r.spread(|s| s.p99);
        let _ = writeln!(out, "| {} | {} | {} | {}–{} / {}–{} |", r.scenario, r.variant, cells(r).join(" | "), us(l50), us(h50), us(l99), us(h99));
    }
    out
}

/// The results as an aligned text table for the terminal.
pub fn text(rows: &[Row]) -> String {
    let head = ["p50", "p90", "p99", "p99.9", "QPS", "errors", "CPU", "usr µs/r", "sys µs/r", "cs/req", "RSS"];
    let line = |scenario: &str, variant: &str, c: &[String], measured: &str| {
        format!("{scenario:<22} {variant:<16} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6} {:>5} {:>8} {:>8} {:>6} {:>9}  {measured}\n", c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10])
    };
    let mut out = line("scenario", "variant", &head.map(String::from), "measured");
    for r in rows {
        out.push_str(&line(&r.scenario, &r.variant, &cells(r), &r.measured));
        if let Some(e) = &r.first_error {
            let _ = writeln!(out, "    first error: {e}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread_over_rounds() {
        let row = |p50s: &[f64]| Row {
            scenario: "s".into(),
            variant: "v".into(),
            measured: String::new(),
            rounds: p50s.iter().map(|&p50| RoundStats { p50, p99: p50 * 2.0, ..Default::default() }).collect(),
            first_error: None,
        };
        let r = row(&[30.0, 10.0, 20.0]);
        assert_eq!(r.median(|s| s.p50), 20.0);
        assert_eq!(r.spread(|s| s.p50), (10.0, 30.0));
        assert_eq!(row(&[10.0, 20.0]).median(|s| s.p50), 15.0);
        let mut b = row(&[5.0]);
        b.variant = "base".into();
        assert_eq!(added(&[r.clone(), b], "s", "v", "base"), Some((15.0, 30.0)));
        assert!(markdown(std::slice::from_ref(&r)).contains("| s | v | 20 µs |"));
        let mut costly = row(&[10.0]);
        costly.rounds[0].user_us_per_req = 41.26;
        costly.rounds[0].sys_us_per_req = f64::NAN;
        costly.rounds[0].switches_per_req = 3.0;
        assert!(markdown(std::slice::from_ref(&costly)).contains("| 0% | 41.3 | - | 3.0 |"), "{}", markdown(&[costly]));
        assert!(text(std::slice::from_ref(&r)).contains("20 µs"));
    }
}
