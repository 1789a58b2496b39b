//! One app and its sidecar, started and stopped as the Dapr CLI 1.18 does, for `rapr run` (one
//! app, run.rs) and `rapr run -f` (several, multi_run.rs): the sidecar first (in this process,
//! sidecar_host.rs), a readiness wait when the app has no port (as the CLI, which otherwise would
//! deadlock on the app's health), then the app in its own process group (app_process.rs), and a
//! record under `$RAPR_HOME/run/` for `rapr list` and `rapr stop` (runs.rs).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::app_process::{AppExit, AppOutput, AppProcess, AppSpec};
use super::runs::{self, RunGuard, RunRecord};
use super::sidecar_host::{SidecarEnd, SidecarHost};
use super::status;
use crate::config::{rapr_home, SidecarArgs};
use crate::runtime::logging::LineSink;

/// One app to start with its own sidecar.
pub struct AppLaunch {
    /// App id.
    pub app_id: String,
    /// The sidecar's flags, fully set.
    pub flags: SidecarArgs,
    /// The app's command line (empty: the sidecar alone).
    pub command: Vec<String>,
    /// The app's environment (the CLI's variables and the run file's `env`).
    pub env: Vec<(String, String)>,
    /// Working directory of the app.
    pub dir: Option<PathBuf>,
    /// Where the app's output goes.
    pub output: AppOutput,
    /// Where the sidecar's log lines go (None: stderr).
    pub sidecar_log: Option<LineSink>,
    /// What `rapr list` shows beyond the ports.
    pub record: RecordExtras,
    /// Worker threads of the sidecar's runtime.
    pub workers: usize,
}

/// Fields of the app's record that come from how it was started.
#[derive(Debug, Clone, Default)]
pub struct RecordExtras {
    /// The run file it came from.
    pub run_template_path: Option<String>,
    /// The run file's `name`.
    pub run_template_name: Option<String>,
    /// The control socket of the run hosting it (`rapr run -f`).
    pub control: Option<PathBuf>,
    /// The app's log file.
    pub app_log_path: Option<String>,
    /// The sidecar's log file.
    pub daprd_log_path: Option<String>,
}

/// How a running app's wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The app exited by itself.
    App(AppExit),
    /// A stop was asked for (signal, `rapr stop`).
    Stop,
    /// The sidecar stopped by itself.
    Sidecar(SidecarEnd),
}

/// An app running with its sidecar.
pub struct RunningApp {
    /// App id.
    pub app_id: String,
    sidecar: SidecarHost,
    app: Option<AppProcess>,
    record: Option<RunGuard>,
    sockets: Vec<PathBuf>,
}

/// Worker threads for each of `apps` sidecars: the machine's cores shared out, at least two so
/// that one busy task never stalls a sidecar.
pub fn workers_per_sidecar(apps: usize) -> usize {
    let cores = std::thread::available_parallelism().map(std::num::NonZeroUsize::get).unwrap_or(2);
    (cores / apps.max(1)).max(2)
}

/// Where the ports [`free_port`] hands out lie.
const PORT_BASE: u32 = 20_000;
const PORT_SPAN: u32 = 30_000;

/// A free port (on every interface, as the sidecar binds some servers there), never one handed
/// out before by this process: ports go in sequence from a start that differs per process, each
/// checked by binding it. Asking the kernel for port 0 and closing the socket could give the
/// same port twice in a row, and a run's sidecar then found its HTTP and internal ports equal.
pub fn free_port() -> std::io::Result<u16> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seed = || {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        (nanos ^ std::process::id().wrapping_mul(7919)) % PORT_SPAN + 1
    };
    let _ = NEXT.compare_exchange(0, seed(), std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed);
    let mut last = None;
    for _ in 0..PORT_SPAN {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Invariant: the value is reduced modulo PORT_SPAN, so it fits a port.
        let port = u16::try_from(PORT_BASE + n % PORT_SPAN).unwrap_or(0);
        match std::net::TcpListener::bind(("0.0.0.0", port)) {
            Ok(l) => return Ok(l.local_addr()?.port()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
}


/// The CLI's socket file for `protocol` (http, grpc) under `--unix-domain-socket DIR`.
pub fn socket_path(dir: &std::path::Path, app_id: &str, protocol: &str) -> PathBuf {
    dir.join(format!("dapr-{app_id}-{protocol}.socket"))
}

/// How long the readiness check waits (the CLI's `runtimeWaitTimeoutInSeconds`).
const READY_WAIT: Duration = Duration::from_secs(60);

async fn socket_appears(sock: &std::path::Path) -> bool {
    let start = Instant::now();
    while start.elapsed() < READY_WAIT {
        if sock.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn tcp_open(port: u16) -> bool {
    let start = Instant::now();
    while start.elapsed() < READY_WAIT {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Waits until the sidecar serves outbound calls (its components are up), so an app that calls
/// it first thing finds it ready; the full `/v1.0/healthz` would also wait for the app.
async fn wait_outbound(port: u16) -> bool {
    let url = format!("http://127.0.0.1:{port}/v1.0/healthz/outbound");
    let client = reqwest::Client::new();
    let start = Instant::now();
    while start.elapsed() < READY_WAIT {
        if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The CLI's readiness check, before an app without a port starts.
async fn check_sidecar(flags: &SidecarArgs) {
    let mut up = true;
    if let Some(dir) = &flags.unix_domain_socket {
        for (proto, what) in [("http", "HTTP"), ("grpc", "GRPC")] {
            let sock = socket_path(dir, &flags.app_id, proto);
            status::info(&format!("Checking if Dapr sidecar is listening on {what} socket {}", sock.display()));
            if !socket_appears(&sock).await {
                up = false;
                status::warning(&format!("Dapr sidecar is not listening on {what} socket: timed out"));
            }
        }
    } else {
        for (port, what) in [(flags.dapr_http_port, "HTTP"), (flags.dapr_grpc_port, "GRPC")] {
            status::info(&format!("Checking if Dapr sidecar is listening on {what} port {port}"));
            if !tcp_open(port).await {
                up = false;
                status::warning(&format!("Dapr sidecar is not listening on {what} port: timed out"));
            }
        }
    }
    if up {
        status::info("Dapr sidecar is up and running.");
    } else {
        status::warning("Dapr sidecar might not be responding.");
    }
}

/// Starts the sidecar, then the app; records the run.
pub async fn launch(l: AppLaunch) -> Result<RunningApp, String> {
    let (http_port, grpc_port, app_port) = (l.flags.dapr_http_port, l.flags.dapr_grpc_port, l.flags.app_port);
    let sockets: Vec<PathBuf> = l.flags.unix_domain_socket.iter().flat_map(|d| ["http", "grpc"].map(|p| socket_path(d, &l.app_id, p))).collect();
    match sockets.as_slice() {
        [h, g] => status::info(&format!("Starting Dapr with id {}. HTTP Socket: {}. gRPC Socket: {}.", l.app_id, h.display(), g.display())),
        _ => status::info(&format!("Starting Dapr with id {}. HTTP Port: {http_port}. gRPC Port: {grpc_port}", l.app_id)),
    }
    let (metrics_port, max_body, read_buffer) = (l.flags.metrics_port, l.flags.max_body_bytes().unwrap_or(4 << 20), crate::config::flags::parse_size(&l.flags.read_buffer_size).unwrap_or(4 << 10));
    let probe = (app_port == 0).then(|| l.flags.clone());
    let mut sidecar = SidecarHost::start(l.flags, std::env::var("DAPR_API_TOKEN").ok(), l.workers, l.sidecar_log).await.map_err(|e| e.to_string())?;
    if let Some(flags) = probe {
        check_sidecar(&flags).await;
    }
    if sockets.is_empty() && !wait_outbound(http_port).await {
        status::warning(&format!("the sidecar of {} did not become ready; see /v1.0/metadata for component errors", l.app_id));
    }
    let app = if l.command.is_empty() {
        None
    } else {
        match AppProcess::spawn(AppSpec { command: &l.command, env: &l.env, dir: l.dir.as_ref(), output: &l.output }) {
            Ok(a) => Some(a),
            Err(e) => {
                status::failure(&format!("Failed to find command {}: {e}", l.command[0]));
                sidecar.stop().await;
                status::success("Start App failed, try to stop Dapr successfully");
                return Err(format!("cannot start the app of {}", l.app_id));
            }
        }
    };
    // The sidecar may already have failed (a component, a port): the run ends as daprd's would.
    tokio::select! {
        biased;
        end = sidecar.exited() => {
            if let Some(mut a) = app {
                a.stop().await;
            }
            sidecar.stop().await;
            return Err(format!("the sidecar of {} stopped during start ({end:?})", l.app_id));
        }
        _ = std::future::ready(()) => {}
    }
    let cli_pid = std::process::id();
    let rec = RunRecord {
        app_id: l.app_id.clone(),
        http_port,
        grpc_port,
        app_port,
        metrics_port,
        command: l.command.join(" "),
        cli_pid,
        daprd_pid: cli_pid,
        app_pid: app.as_ref().map_or(0, AppProcess::pid),
        created: runs::now(),
        max_request_body_size: max_body as u64,
        http_read_buffer_size: read_buffer as u64,
        run_template_path: l.record.run_template_path,
        run_template_name: l.record.run_template_name,
        app_log_path: l.record.app_log_path,
        daprd_log_path: l.record.daprd_log_path,
        control: l.record.control,
    };
    let record = runs::register(&rapr_home(), &rec).map_err(|e| tracing::warn!(app_id = %l.app_id, error = %e, "cannot record the run; `rapr list` will not show it")).ok();
    Ok(RunningApp { app_id: l.app_id, sidecar, app, record, sockets })
}

impl RunningApp {
    /// Whether an app runs beside the sidecar.
    pub fn has_app(&self) -> bool {
        self.app.is_some()
    }

    /// Waits for the app to exit, the sidecar to stop, or `stop` to resolve.
    pub async fn wait(&mut self, stop: impl std::future::Future<Output = ()>) -> Ended {
        let app = async {
            match self.app.as_mut() {
                Some(a) => a.wait().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            e = app => Ended::App(e),
            e = self.sidecar.exited() => Ended::Sidecar(e),
            _ = stop => Ended::Stop,
        }
    }

    /// Stops the app's process group (also after the app exited: what it left behind); how
    /// the app ended, None without an app.
    pub async fn stop_app(&mut self) -> Option<AppExit> {
        match self.app.as_mut() {
            Some(a) => Some(a.stop().await),
            None => None,
        }
    }

    /// Drains and stops the sidecar, then removes the run's record and socket files.
    pub async fn stop_sidecar(self) -> SidecarEnd {
        let end = self.sidecar.stop().await;
        drop(self.record);
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
        end
    }
}

#[cfg(test)]
mod port_tests {
    #[test]
    fn free_ports_are_never_handed_out_twice() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            assert!(seen.insert(super::free_port().unwrap()), "a port came back twice");
        }
    }
}
