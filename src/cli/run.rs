//! `rapr run`: the developer's front door, as `dapr run`. Starts a sidecar in this process on the
//! embedded defaults (or `--resources-path`), on a runtime of its own whose log lines all carry
//! `sidecar{app_id=<id>}` (sidecar_host.rs), then the app with `DAPR_HTTP_PORT`,
//! `DAPR_GRPC_PORT`, `APP_ID` and `APP_PORT`; prefixes the app's output `== APP == `; exits with
//! the app's exit code; on SIGINT/SIGTERM (`rapr stop`) stops the app and drains the sidecar.
//!
//! `launch` and `RunningApp` are shared with `rapr run -f` (run_file.rs), which runs several apps,
//! each with its own in-process sidecar. Every running app is recorded under `$RAPR_HOME/run/`
//! (runs.rs) for `rapr list` and `rapr stop`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::init::ensure_defaults;
use crate::config::rapr_home;
use super::runs::{self, RunGuard, RunRecord};
use super::sidecar_host::SidecarHost;
use crate::config::SidecarArgs;
use crate::sidecar::Signals;

/// App channel flags `dapr run` passes through to daprd; also the keys of a run file's app.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelOptions {
    /// Address of the app.
    #[arg(long = "app-channel-address")]
    pub app_channel_address: Option<String>,
    /// Most concurrent calls delivered to the app (-1: unlimited).
    #[arg(long = "app-max-concurrency", allow_negative_numbers = true)]
    pub app_max_concurrency: Option<i32>,
    /// Health-check the app.
    #[arg(long = "enable-app-health-check", num_args = 0..=1, default_missing_value = "true")]
    pub enable_app_health_check: Option<bool>,
    /// Path probed on the app.
    #[arg(long = "app-health-check-path")]
    pub app_health_check_path: Option<String>,
    /// Seconds between probes.
    #[arg(long = "app-health-probe-interval")]
    pub app_health_probe_interval: Option<u64>,
    /// Milliseconds before a probe times out.
    #[arg(long = "app-health-probe-timeout")]
    pub app_health_probe_timeout: Option<u64>,
    /// Failed probes before the app is unhealthy.
    #[arg(long = "app-health-threshold")]
    pub app_health_threshold: Option<u32>,
    /// Largest request body, e.g. `4Mi`.
    #[arg(long = "max-body-size")]
    pub max_body_size: Option<String>,
}

impl ChannelOptions {
    /// Sets the given options on the sidecar's flags.
    pub fn apply(&self, f: &mut SidecarArgs) {
        if let Some(v) = &self.app_channel_address {
            f.app_channel_address = v.clone();
        }
        if let Some(v) = self.app_max_concurrency {
            f.app_max_concurrency = v;
        }
        if let Some(v) = self.enable_app_health_check {
            f.enable_app_health_check = v;
        }
        if let Some(v) = &self.app_health_check_path {
            f.app_health_check_path = v.clone();
        }
        if let Some(v) = self.app_health_probe_interval {
            f.app_health_probe_interval = v;
        }
        if let Some(v) = self.app_health_probe_timeout {
            f.app_health_probe_timeout = v;
        }
        if let Some(v) = self.app_health_threshold {
            f.app_health_threshold = v;
        }
        if let Some(v) = &self.max_body_size {
            f.max_body_size = v.clone();
        }
    }
}

/// Flags of `rapr run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// App id (generated when absent).
    #[arg(long = "app-id", short = 'a')]
    pub app_id: Option<String>,
    /// Port the app listens on.
    #[arg(long = "app-port", short = 'p')]
    pub app_port: Option<u16>,
    /// App protocol.
    #[arg(long = "app-protocol", short = 'P', default_value = "http")]
    pub app_protocol: String,
    /// Sidecar HTTP port (a free one when absent).
    #[arg(long = "dapr-http-port", short = 'H')]
    pub dapr_http_port: Option<u16>,
    /// Sidecar gRPC port (a free one when absent).
    #[arg(long = "dapr-grpc-port", short = 'G')]
    pub dapr_grpc_port: Option<u16>,
    /// Resource folders (default: `~/.rapr/components`, written on first use).
    #[arg(long = "resources-path", short = 'd')]
    pub resources_path: Vec<PathBuf>,
    /// Configuration file.
    #[arg(long = "config", short = 'c')]
    pub config: Option<PathBuf>,
    /// Sidecar log level.
    #[arg(long = "log-level", default_value = "info")]
    pub log_level: String,
    /// The sidecars' log lines as JSON (daprd's `--log-as-json` fields, `app_id` on every line).
    #[arg(long = "log-as-json", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub log_as_json: bool,
    /// Run every app of a multi-app run file (a file, or a folder holding `dapr.yaml`).
    #[arg(long = "run-file", short = 'f', conflicts_with = "command")]
    pub run_file: Option<PathBuf>,
    /// App channel options.
    #[command(flatten)]
    pub channel: ChannelOptions,
    /// The app's command line.
    #[arg(last = true, required_unless_present = "run_file")]
    pub command: Vec<String>,
}

/// One app to start with its own sidecar.
pub struct AppLaunch {
    /// App id.
    pub app_id: String,
    /// The sidecar's flags (ports, resources, app channel), fully set.
    pub flags: SidecarArgs,
    /// The app's command line.
    pub command: Vec<String>,
    /// Extra environment for the app.
    pub env: Vec<(String, String)>,
    /// Working directory of the app.
    pub dir: Option<PathBuf>,
    /// Prefix of each line of the app's output.
    pub prefix: String,
    /// The run file this app came from.
    pub run_file: Option<String>,
    /// The control socket of the run hosting the app (`rapr run -f`), for its record.
    pub control: Option<PathBuf>,
    /// Worker threads of the sidecar's runtime.
    pub workers: usize,
}

/// An app running with its sidecar.
pub struct RunningApp {
    /// App id.
    pub app_id: String,
    sidecar: SidecarHost,
    child: Child,
    pipes: Vec<JoinHandle<()>>,
    record: Option<RunGuard>,
}

/// Worker threads for each of `apps` sidecars: the machine's cores shared out, at least two so
/// that one busy task never stalls a sidecar.
pub fn workers_per_sidecar(apps: usize) -> usize {
    let cores = std::thread::available_parallelism().map(std::num::NonZeroUsize::get).unwrap_or(2);
    (cores / apps.max(1)).max(2)
}

/// A free loopback port.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The default resources folder (written on first use).
pub fn default_resources() -> Result<PathBuf, String> {
    ensure_defaults(&rapr_home()).map_err(|e| format!("cannot write the default components under {}: {e}", rapr_home().display()))
}

async fn pipe(stream: impl AsyncRead + Unpin, prefix: String, to_stderr: bool) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if to_stderr {
            eprintln!("{prefix}{line}");
        } else {
            println!("{prefix}{line}");
        }
    }
}

/// Waits until the sidecar serves outbound calls; the full `/v1.0/healthz` also waits for the
/// app's port, which only opens once the app runs.
async fn wait_outbound(port: u16, deadline: Duration) -> bool {
    let url = format!("http://127.0.0.1:{port}/v1.0/healthz/outbound");
    let client = reqwest::Client::new();
    let start = Instant::now();
    while start.elapsed() < deadline {
        if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Starts the sidecar, then the app; records the run.
pub async fn launch(l: AppLaunch) -> Result<RunningApp, String> {
    let (http_port, grpc_port, app_port) = (l.flags.dapr_http_port, l.flags.dapr_grpc_port, l.flags.app_port);
    println!("Starting rapr with id {}. HTTP Port: {http_port}. gRPC Port: {grpc_port}", l.app_id);
    let program = l.command.first().ok_or_else(|| format!("no command given for app {}", l.app_id))?.clone();
    let sidecar = SidecarHost::start(l.flags, std::env::var("DAPR_API_TOKEN").ok(), l.workers).await.map_err(|e| e.to_string())?;
    if !wait_outbound(http_port, Duration::from_secs(60)).await {
        eprintln!("the sidecar of {} did not become ready; see /v1.0/metadata for component errors", l.app_id);
    }
    let mut cmd = Command::new(&program);
    cmd.args(&l.command[1..])
        .env("DAPR_HTTP_PORT", http_port.to_string())
        .env("DAPR_GRPC_PORT", grpc_port.to_string())
        .env("APP_ID", &l.app_id)
        .envs(l.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if app_port != 0 {
        cmd.env("APP_PORT", app_port.to_string());
    }
    if let Some(d) = &l.dir {
        cmd.current_dir(d);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            sidecar.stop().await;
            return Err(format!("cannot start the app {program:?}: {e}"));
        }
    };
    let mut pipes = Vec::new();
    pipes.extend(child.stdout.take().map(|s| tokio::spawn(pipe(s, l.prefix.clone(), false))));
    pipes.extend(child.stderr.take().map(|s| tokio::spawn(pipe(s, l.prefix.clone(), true))));
    let rec = RunRecord {
        app_id: l.app_id.clone(),
        http_port,
        grpc_port,
        app_port,
        command: l.command.join(" "),
        cli_pid: std::process::id(),
        app_pid: child.id().unwrap_or(0),
        created: runs::now(),
        run_template_path: l.run_file,
        control: l.control,
    };
    let record = runs::register(&rapr_home(), &rec).map_err(|e| tracing::warn!(app_id = %l.app_id, error = %e, "cannot record the run; `rapr list` will not show it")).ok();
    Ok(RunningApp { app_id: l.app_id, sidecar, child, pipes, record })
}

fn exit_code(status: std::io::Result<std::process::ExitStatus>) -> i32 {
    match status {
        Ok(s) => s.code().unwrap_or(1),
        Err(e) => {
            eprintln!("waiting for the app failed: {e}");
            1
        }
    }
}

impl RunningApp {
    /// Waits for the app to exit, or sends it SIGTERM once `stop` resolves; returns its exit code.
    pub async fn wait_or_stop(&mut self, stop: impl std::future::Future<Output = ()>) -> i32 {
        let status = tokio::select! {
            s = self.child.wait() => s,
            _ = stop => {
                println!("Terminating the app {} and its sidecar", self.app_id);
                if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
                }
                match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = self.child.kill().await;
                        self.child.wait().await
                    }
                }
            }
        };
        for t in self.pipes.drain(..) {
            let _ = t.await;
        }
        exit_code(status)
    }

    /// Drains and stops the sidecar, then removes the run's record.
    pub async fn stop_sidecar(self) {
        self.sidecar.stop().await;
        drop(self.record);
    }
}

/// `rapr run`; returns the exit code.
pub async fn run(args: RunArgs, mut flags: SidecarArgs) -> i32 {
    if let Some(file) = &args.run_file {
        return super::run_file::run_file(file, &args).await;
    }
    // Installed first: a SIGTERM while the sidecar starts still stops the run cleanly.
    let mut signals = Signals::install();
    let resources = if args.resources_path.is_empty() {
        match default_resources() {
            Ok(dir) => vec![dir],
            Err(e) => {
                eprintln!("{e}");
                return 1;
            }
        }
    } else {
        args.resources_path.clone()
    };
    let (http_port, grpc_port) = match (args.dapr_http_port.map(Ok).unwrap_or_else(free_port), args.dapr_grpc_port.map(Ok).unwrap_or_else(free_port)) {
        (Ok(h), Ok(g)) => (h, g),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("cannot find a free port: {e}");
            return 1;
        }
    };
    let app_id = args.app_id.clone().unwrap_or_else(|| format!("app-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    flags.app_id = app_id.clone();
    flags.app_port = args.app_port.unwrap_or(0);
    flags.app_protocol = args.app_protocol.clone();
    flags.dapr_http_port = http_port;
    flags.dapr_grpc_port = grpc_port;
    flags.resources_path = resources;
    flags.config = args.config.clone();
    flags.dapr_listen_addresses = "127.0.0.1".into();
    // As the Dapr CLI: a free metrics port, so several runs coexist.
    flags.metrics_port = 0;
    args.channel.apply(&mut flags);
    let one = AppLaunch { app_id, flags, command: args.command.clone(), env: vec![], dir: None, prefix: "== APP == ".into(), run_file: None, control: None, workers: workers_per_sidecar(1) };
    let mut app = match launch(one).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    println!("You're up and running! Both rapr and your app logs will appear here.");
    let code = app.wait_or_stop(signals.recv()).await;
    println!("Exited App successfully");
    app.stop_sidecar().await;
    println!("Exited rapr successfully");
    code
}
