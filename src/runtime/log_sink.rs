//! Per-thread routing of log lines (logging.rs writes them): which level and which destination a
//! thread's lines have. `rapr run -f` hosts several sidecars in one process, each with the
//! run file's own `logLevel` and `daprdLogDestination`; each sidecar runs on a runtime of its own
//! (cli/sidecar_host.rs), whose threads set their sink when they start. A thread-local needs no
//! lock, and a file written through `&File` with one `write` per line never interleaves lines.

use std::io::Write as _;

use tracing::Level;

/// Where a thread's log lines go and down to which level: a sidecar hosted by `rapr run -f`,
/// whose run file gives it a `logLevel` and a `daprdLogDestination` of its own
/// (cli/sidecar_host.rs sets it on each of its runtime's threads, as it sets the `sidecar` span).
/// The process's filter still applies first; `rapr run -f` sets it to its most verbose app.
#[derive(Debug, Clone)]
pub struct LineSink {
    /// The sidecar's log file, if its lines go to one.
    pub file: Option<std::sync::Arc<std::fs::File>>,
    /// Write to stderr.
    pub console: bool,
    /// The most verbose level written.
    pub level: Level,
}

/// daprd's `--log-level` names as a tracing level (`fatal` is `error`; unknown: `info`).
pub fn level_of(name: &str) -> Level {
    match name.to_ascii_lowercase().as_str() {
        "debug" => Level::DEBUG,
        "warn" | "warning" => Level::WARN,
        "error" | "fatal" | "panic" => Level::ERROR,
        _ => Level::INFO,
    }
}

/// The most verbose level of threads without a sink (0: no limit; else 1 error … 4 debug).
static OTHER_THREADS_LEVEL: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Limits the lines of threads that have no sink (`rapr run -f`'s own, whose filter is its
/// most verbose app's) to `level`.
pub fn set_other_threads_level(level: Level) {
    let n = match level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        _ => 4,
    };
    OTHER_THREADS_LEVEL.store(n, std::sync::atomic::Ordering::Relaxed);
}

pub(super) fn thread_allows(level: &Level) -> bool {
    LINE_SINK.with(|s| match s.borrow().as_ref() {
        Some(sink) => level <= &sink.level,
        None => match OTHER_THREADS_LEVEL.load(std::sync::atomic::Ordering::Relaxed) {
            0 => true,
            n => {
                let rank = match *level {
                    Level::ERROR => 1,
                    Level::WARN => 2,
                    Level::INFO => 3,
                    _ => 4,
                };
                rank <= n
            }
        },
    })
}

thread_local! {
    static LINE_SINK: std::cell::RefCell<Option<LineSink>> = const { std::cell::RefCell::new(None) };
}

/// Sends this thread's log lines to `sink` (None: stderr again).
pub fn set_thread_sink(sink: Option<LineSink>) {
    LINE_SINK.with(|s| *s.borrow_mut() = sink);
}

/// One write per line: lines of concurrent threads never interleave.
pub(super) fn write_line(line: &[u8]) {
    let console = LINE_SINK.with(|s| match s.borrow().as_ref() {
        Some(sink) => {
            if let Some(f) = &sink.file {
                let _ = (&**f).write_all(line);
            }
            sink.console
        }
        None => true,
    });
    if console {
        let _ = std::io::stderr().lock().write_all(line);
    }
}
