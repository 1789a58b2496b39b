//! docs/bench-cost.csv: one row per measured process per run of `rapr bench cost`, so the
//! per-request cost of each commit stays on record, and the comparison `--quick` prints (each
//! figure against the last row for the same scenario, variant and process). Plain
//! comma-separated values: no field holds a comma (notes have theirs replaced).

use std::io::Write as _;
use std::path::Path;

/// The header line of the file.
pub const HEADER: &str = "date,commit,scenario,variant,process,ir_per_req,syscalls_per_req,note";

/// One measured process of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct CostRow {
    /// RFC 3339 UTC.
    pub date: String,
    /// `git rev-parse --short HEAD`, or empty.
    pub commit: String,
    /// `invoke-http` or `invoke-grpc`.
    pub scenario: String,
    /// `direct`, `nginx x2`, `rapr x2`, ...
    pub variant: String,
    /// Which process of the variant (`app sidecar`, `nginx 1`, ...).
    pub process: String,
    /// User-space instructions per request (callgrind), if measured.
    pub ir_per_req: Option<f64>,
    /// System calls per request (strace), if measured.
    pub syscalls_per_req: Option<f64>,
    /// How it was measured (build, load on the machine).
    pub note: String,
}

impl CostRow {
    /// The row as a CSV line (no newline).
    pub fn line(&self) -> String {
        let num = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_default();
        let clean = |s: &str| s.replace([',', '\n'], ";");
        format!("{},{},{},{},{},{},{},{}", self.date, self.commit, clean(&self.scenario), clean(&self.variant), clean(&self.process), num(self.ir_per_req), num(self.syscalls_per_req), clean(&self.note))
    }

    /// Parses a line written by `line` (`None` for the header or a malformed line).
    pub fn parse(line: &str) -> Option<CostRow> {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 7 || f[0] == "date" {
            return None;
        }
        let num = |s: &str| s.trim().parse::<f64>().ok();
        Some(CostRow {
            date: f[0].into(),
            commit: f[1].into(),
            scenario: f[2].into(),
            variant: f[3].into(),
            process: f[4].into(),
            ir_per_req: num(f[5]),
            syscalls_per_req: num(f[6]),
            note: f.get(7).copied().unwrap_or_default().into(),
        })
    }
}

/// Every row of `text`, in file order.
pub fn parse_all(text: &str) -> Vec<CostRow> {
    text.lines().filter_map(CostRow::parse).collect()
}

/// Appends `rows` to `path`, writing the header first when the file is new or empty.
pub fn append(path: &Path, rows: &[CostRow]) -> std::io::Result<()> {
    let fresh = std::fs::metadata(path).map(|m| m.len() == 0).unwrap_or(true);
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    if fresh {
        writeln!(f, "{HEADER}")?;
    }
    for r in rows {
        writeln!(f, "{}", r.line())?;
    }
    Ok(())
}

/// Reads one figure of a row.
type Figure = fn(&CostRow) -> Option<f64>;

/// A line per measured figure with its change against the last earlier row of the same
/// scenario, variant, process and build (the note's first word: a debug build counts several
/// times the instructions of a release one) that has that figure ("no earlier row" otherwise).
pub fn compare(earlier: &[CostRow], now: &[CostRow]) -> Vec<String> {
    let build = |r: &CostRow| r.note.split_whitespace().next().unwrap_or_default().to_string();
    let mut out = Vec::new();
    for r in now {
        let figures: [(&str, usize, Figure); 2] = [("Ir/req", 0, |r| r.ir_per_req), ("syscalls/req", 1, |r| r.syscalls_per_req)];
        for (what, digits, get) in figures {
            let Some(v) = get(r) else { continue };
            let last = earlier.iter().rev().find(|e| e.scenario == r.scenario && e.variant == r.variant && e.process == r.process && build(e) == build(r) && get(e).is_some());
            let change = match last.and_then(|e| get(e).map(|b| (e, b))) {
                Some((e, base)) if base > 0.0 => format!("{:+.1}% vs {base:.digits$} ({} {})", (v - base) / base * 100.0, e.commit, e.date),
                _ => "no earlier row".into(),
            };
            out.push(format!("cost {} {} {}: {what} {v:.digits$}, {change}", r.scenario, r.variant, r.process));
        }
    }
    out
}

/// The current commit, short, or empty outside a git checkout.
pub fn commit() -> String {
    std::process::Command::new("git").args(["rev-parse", "--short", "HEAD"]).output().ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(variant: &str, ir: Option<f64>, sc: Option<f64>) -> CostRow {
        CostRow { date: "2026-12-07T08:00:00Z".into(), commit: "abc1234".into(), scenario: "invoke-http".into(), variant: variant.into(), process: "p".into(), ir_per_req: ir, syscalls_per_req: sc, note: "debug build, under load".into() }
    }

    #[test]
    fn rows_round_trip_through_a_line() {
        let r = row("rapr x2", Some(123456.0), None);
        assert_eq!(r.line(), "2026-12-07T08:00:00Z,abc1234,invoke-http,rapr x2,p,123456.0,,debug build; under load");
        let back = CostRow::parse(&r.line()).unwrap();
        assert_eq!((back.ir_per_req, back.syscalls_per_req), (Some(123456.0), None));
        assert_eq!(CostRow::parse(HEADER), None);
        assert_eq!(parse_all(&format!("{HEADER}\n{}\n\n", r.line())).len(), 1);
    }

    #[test]
    fn compares_with_the_last_row_of_the_same_process() {
        let mut release = row("rapr x2", Some(20.0), Some(9.0));
        release.note = "release build, N=1000".into();
        let earlier = [row("rapr x2", Some(100.0), Some(10.0)), row("direct", Some(50.0), None), row("rapr x2", Some(200.0), None), release];
        let lines = compare(&earlier, &[row("rapr x2", Some(150.0), Some(12.0)), row("nginx x2", Some(1.0), None)]);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].contains("rapr x2 p: Ir/req 150, -25.0% vs 200"), "{}", lines[0]);
        // The last row with syscalls is the first one.
        assert!(lines[1].contains("syscalls/req 12.0, +20.0% vs 10.0"), "{}", lines[1]);
        assert!(lines[2].ends_with("no earlier row"), "{}", lines[2]);
    }

    #[test]
    fn a_new_file_gets_the_header_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cost.csv");
        append(&path, &[row("direct", Some(1.0), None)]).unwrap();
        append(&path, &[row("direct", Some(2.0), None)]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().filter(|l| *l == HEADER).count(), 1);
        assert_eq!(parse_all(&text).len(), 2);
    }
}
