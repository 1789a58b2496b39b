//! The status lines `rapr run` prints about itself, in the Dapr CLI's shape: `✅  ` before a
//! success, `❌  ` before a failure (on stderr), `ℹ️  ` before information, `⚠  ` before a
//! warning; the words of each line are the CLI's (cmd/run.go), so scripts and docs validations
//! that wait for "You're up and running!" or "Exited App successfully" work unchanged.
//!
//! With `--log-as-json` each line is instead the CLI's `logJSON` object (pkg/print/print.go):
//! `{"time":"<RFC 3339 UTC, nanoseconds>","status":"success|failure|info|warning","msg":"…"}`,
//! so a log shipper reading the run's output gets JSON from the CLI part as from the sidecar.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set once at the start of a run, from `--log-as-json` (the CLI's global `print.logAsJSON`).
static JSON: AtomicBool = AtomicBool::new(false);

/// Switches every later status line to the CLI's JSON form.
pub fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

/// One status line: the CLI's mark and text, or its JSON object.
fn line(status: &str, mark: &str, msg: &str) -> String {
    if JSON.load(Ordering::Relaxed) {
        json_line(status, msg, time::OffsetDateTime::now_utc())
    } else {
        format!("{mark}  {msg}")
    }
}

/// The CLI's `jsonLog{Time, Status, Message}` as Go's `encoding/json` writes it: fields in
/// declaration order, the time as `RFC3339Nano` (trailing zeros of the fraction dropped).
fn json_line(status: &str, msg: &str, now: time::OffsetDateTime) -> String {
    let secs = now.replace_nanosecond(0).unwrap_or(now);
    let base = secs.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let base = base.trim_end_matches('Z');
    let nanos = now.nanosecond();
    let frac = if nanos == 0 { String::new() } else { format!(".{nanos:09}").trim_end_matches('0').to_string() };
    // Written in the CLI's field order (time, status, msg); serde_json escapes each value.
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    format!("{{\"time\":{},\"status\":{},\"msg\":{}}}", q(&format!("{base}{frac}Z")), q(status), q(msg))
}

/// `✅  <msg>` on stdout.
pub fn success(msg: &str) {
    println!("{}", line("success", "✅", msg));
}

/// `❌  <msg>` on stderr.
pub fn failure(msg: &str) {
    eprintln!("{}", line("failure", "❌", msg));
}

/// `ℹ️  <msg>` on stdout.
pub fn info(msg: &str) {
    println!("{}", line("info", "ℹ️", msg));
}

/// `⚠  <msg>` on stdout (the CLI writes warnings there too).
pub fn warning(msg: &str) {
    println!("{}", line("warning", "⚠", msg));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_the_clis_log_json_object() {
        let t = time::macros::datetime!(2026-12-07 07:11:29.120 UTC);
        assert_eq!(json_line("success", "Exited \"App\" successfully", t), r#"{"time":"2026-12-07T07:11:29.12Z","status":"success","msg":"Exited \"App\" successfully"}"#);
        let whole = time::macros::datetime!(2026-12-07 07:11:29 UTC);
        assert_eq!(json_line("info", "x", whole), r#"{"time":"2026-12-07T07:11:29Z","status":"info","msg":"x"}"#);
    }
}
