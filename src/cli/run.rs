//! `rapr run`: the developer's front door, as `dapr run` of the Dapr CLI 1.18. Starts a sidecar
//! in this process (sidecar_host.rs; its log lines carry `app_id`), then the app in its own
//! process group, inheriting the terminal (app_process.rs), with the CLI's environment
//! (run_flags.rs). Without a command the sidecar runs alone until stopped.
//!
//! The run ends when the app exits, on SIGINT/SIGTERM (`rapr stop`), or when the sidecar stops
//! by itself (`POST /v1.0/shutdown`). Then it stops the app's whole process group and drains
//! the sidecar, printing the CLI's closing lines: `Exited App successfully` only for an app
//! that exited 0 (or was stopped), `The App process exited with error code: N` and
//! `Error exiting App: …` for one that failed, `Exited Dapr successfully` for the sidecar.
//! The exit code is the app's own (the CLI gives only 0 or 1; docs/runtime-semantics.md).
//!
//! `rapr run -f` (several apps) is run_file.rs and multi_run.rs; both share launch.rs.

use std::path::PathBuf;

use clap::Args;

use super::app_process::{AppExit, AppOutput};
use super::init::ensure_defaults;
use super::launch::{free_port, launch, workers_per_sidecar, AppLaunch, Ended, RecordExtras};
use super::run_flags::{AppEnv, ChannelOptions, SidecarArgv};
use super::sidecar_host::SidecarEnd;
use super::status;
use crate::config::rapr_home;
use crate::sidecar::Signals;

/// Flags of `rapr run` (those of `dapr run`).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// App id (generated when absent).
    #[arg(long = "app-id", short = 'a')]
    pub app_id: Option<String>,
    /// Port the app listens on.
    #[arg(long = "app-port", short = 'p', allow_negative_numbers = true)]
    pub app_port: Option<i32>,
    /// App protocol: http, grpc, https, grpcs, h2c.
    #[arg(long = "app-protocol", short = 'P')]
    pub app_protocol: Option<String>,
    /// Sidecar HTTP port (a free one when absent).
    #[arg(long = "dapr-http-port", short = 'H', allow_negative_numbers = true)]
    pub dapr_http_port: Option<i32>,
    /// Sidecar gRPC port (a free one when absent).
    #[arg(long = "dapr-grpc-port", short = 'G', allow_negative_numbers = true)]
    pub dapr_grpc_port: Option<i32>,
    /// Sidecar-to-sidecar gRPC port (a free one when absent).
    #[arg(long = "dapr-internal-grpc-port", short = 'I', allow_negative_numbers = true)]
    pub dapr_internal_grpc_port: Option<i32>,
    /// Metrics port (a free one when absent).
    #[arg(long = "metrics-port", short = 'M', allow_negative_numbers = true)]
    pub metrics_port: Option<i32>,
    /// Profiling port (with --enable-profiling; a free one when absent).
    #[arg(long = "profile-port", allow_negative_numbers = true)]
    pub profile_port: Option<i32>,
    /// Resource folders, repeatable or comma separated (default: `~/.rapr/components`).
    #[arg(long = "resources-path", value_delimiter = ',')]
    pub resources_path: Vec<PathBuf>,
    /// Deprecated: one components folder (use --resources-path).
    #[arg(long = "components-path", short = 'd')]
    pub components_path: Option<PathBuf>,
    /// Configuration file.
    #[arg(long = "config", short = 'c')]
    pub config: Option<PathBuf>,
    /// Sidecar log level.
    #[arg(long = "log-level", default_value = "info")]
    pub log_level: String,
    /// The sidecars' log lines as JSON (daprd's `--log-as-json` fields, `app_id` on every line).
    #[arg(long = "log-as-json", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub log_as_json: bool,
    /// Directory for the sidecar's Unix domain sockets (`dapr-<id>-http.socket`, `-grpc`).
    #[arg(long = "unix-domain-socket", short = 'u')]
    pub unix_domain_socket: Option<PathBuf>,
    /// Run every app of a multi-app run file (a file, or a folder holding `dapr.yaml`).
    #[arg(long = "run-file", short = 'f', conflicts_with = "command")]
    pub run_file: Option<PathBuf>,
    /// Kubernetes mode of `dapr run -f`: not supported, rapr runs apps on this machine.
    #[arg(long = "kubernetes", short = 'k', default_value_t = false)]
    pub kubernetes: bool,
    /// Where daprd is installed, for `dapr run`: accepted and unused (the sidecar is rapr).
    #[arg(long = "runtime-path", hide = true)]
    pub runtime_path: Option<PathBuf>,
    /// Where the embedded control plane keeps its data, pid and addresses (default:
    /// `~/.rapr/control-plane`); `rapr run` starts it there when it is not running.
    #[arg(long = "data-dir", env = "RAPR_CONTROL_PLANE_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The embedded control plane's placement port, when `rapr run` starts it.
    #[arg(long = "placement-port", env = "RAPR_PLACEMENT_PORT", default_value_t = 50005)]
    pub placement_port: u16,
    /// App channel and sidecar options.
    #[command(flatten)]
    pub channel: ChannelOptions,
    /// The app's command line (none: the sidecar alone).
    #[arg(last = true)]
    pub command: Vec<String>,
}

impl RunArgs {
    /// Flags set beside `--run-file`, which the run file replaces (the CLI warns the same way).
    fn ignored_with_run_file(&self) -> Vec<&'static str> {
        let c = &self.channel;
        let set = [
            ("app-id", self.app_id.is_some()),
            ("app-port", self.app_port.is_some()),
            ("app-protocol", self.app_protocol.is_some()),
            ("dapr-http-port", self.dapr_http_port.is_some()),
            ("dapr-grpc-port", self.dapr_grpc_port.is_some()),
            ("dapr-internal-grpc-port", self.dapr_internal_grpc_port.is_some()),
            ("metrics-port", self.metrics_port.is_some()),
            ("profile-port", self.profile_port.is_some()),
            ("resources-path", !self.resources_path.is_empty()),
            ("components-path", self.components_path.is_some()),
            ("config", self.config.is_some()),
            ("unix-domain-socket", self.unix_domain_socket.is_some()),
            ("app-channel-address", c.app_channel_address.is_some()),
            ("app-max-concurrency", c.app_max_concurrency.is_some()),
            ("enable-app-health-check", c.enable_app_health_check.is_some()),
            ("max-body-size", c.max_body_size.is_some()),
            ("read-buffer-size", c.read_buffer_size.is_some()),
            ("enable-api-logging", c.enable_api_logging.is_some()),
            ("enable-profiling", c.enable_profiling.is_some()),
            ("dapr-listen-addresses", c.dapr_listen_addresses.is_some()),
            ("placement-host-address", c.placement_host_address.is_some()),
            ("scheduler-host-address", c.scheduler_host_address.is_some()),
            ("app-ssl", c.app_ssl.is_some()),
        ];
        set.into_iter().filter(|(_, on)| *on).map(|(n, _)| n).collect()
    }
}

/// The default resources folder (written on first use).
pub fn default_resources() -> Result<PathBuf, String> {
    ensure_defaults(&rapr_home()).map_err(|e| format!("cannot write the default components under {}: {e}", rapr_home().display()))
}

/// The Configuration a run uses when none is given: `config.yaml` in rapr's home (written by
/// `rapr init`), as the CLI falls back to `~/.dapr/config.yaml` (cmd/run.go, and last in a run
/// file's order). Left out when the file is not there: the CLI would pass a missing file and
/// daprd would refuse to start, where rapr runs on its defaults.
pub fn default_config() -> Option<PathBuf> {
    Some(rapr_home().join("config.yaml")).filter(|p| p.is_file())
}

/// A port flag: the CLI picks a free port for an absent or non-positive one.
pub fn port_or_free(p: Option<i32>) -> Result<u16, String> {
    match p.filter(|p| *p > 0) {
        Some(p) => u16::try_from(p).map_err(|_| format!("invalid port {p}")),
        None => free_port().map_err(|e| format!("cannot find a free port: {e}")),
    }
}

/// Plans the one app of `rapr run`.
fn plan(args: &RunArgs) -> Result<AppLaunch, String> {
    let mut resources = args.resources_path.clone();
    if resources.is_empty() {
        resources.push(match &args.components_path {
            Some(d) => d.clone(),
            None => default_resources()?,
        });
    }
    let app_id = args.app_id.clone().filter(|a| !a.is_empty()).unwrap_or_else(|| format!("app-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    let app_port = u16::try_from(args.app_port.unwrap_or(0).max(0)).map_err(|_| "invalid --app-port".to_string())?;
    let (http_port, grpc_port) = (port_or_free(args.dapr_http_port)?, port_or_free(args.dapr_grpc_port)?);
    let metrics_port = port_or_free(args.metrics_port)?;
    let protocol = args.channel.app_protocol(args.app_protocol.as_deref());
    let ports = [http_port, grpc_port, port_or_free(args.dapr_internal_grpc_port)?, metrics_port];
    let mut argv = SidecarArgv::with_base(super::run_flags::SidecarBase { app_id: &app_id, app_port, protocol: &protocol, ports });
    argv.flag("log-level", &args.log_level);
    if args.log_as_json {
        argv.flag("log-as-json", true);
    }
    for r in &resources {
        argv.flag("resources-path", r.display());
    }
    argv.opt("config", args.config.clone().or_else(default_config).map(|c| c.display().to_string()));
    argv.opt("unix-domain-socket", args.unix_domain_socket.as_ref().map(|d| d.display()));
    if args.channel.enable_profiling == Some(true) {
        argv.flag("profile-port", port_or_free(args.profile_port)?);
    }
    args.channel.push(&mut argv);
    let flags = argv.parse()?;
    let env = AppEnv { app_id: &app_id, app_channel_address: &flags.app_channel_address, app_port, http_port, grpc_port, metrics_port, app_protocol: &protocol }.vars(&[]);
    Ok(AppLaunch {
        app_id,
        flags,
        command: args.command.clone(),
        env,
        dir: None,
        output: AppOutput::Inherit,
        sidecar_log: None,
        record: RecordExtras::default(),
        workers: workers_per_sidecar(1),
    })
}

/// `rapr run`; returns the exit code.
pub async fn run(args: RunArgs) -> i32 {
    status::set_json(args.log_as_json);
    if args.kubernetes {
        status::failure("rapr runs apps on this machine only: --kubernetes is not supported");
        return 1;
    }
    if let Some(file) = &args.run_file {
        let ignored = args.ignored_with_run_file();
        if !ignored.is_empty() {
            status::warning(&format!("The following flags are ignored when using --run-file and should be configured in the run file instead: {}", ignored.join(", ")));
        }
        return super::run_file::run_file(file, &args).await;
    }
    if args.command.is_empty() {
        println!("WARNING: no application command found.");
    }
    if args.unix_domain_socket.is_some() {
        // The CLI's words (cmd/run.go); its ports are still picked and passed, as here.
        status::warning("Unix domain sockets are currently a preview feature");
    }
    // Installed first: a SIGTERM while the sidecar starts still stops the run cleanly.
    let mut signals = Signals::install();
    let mut planned = match plan(&args) {
        Ok(p) => p,
        Err(e) => {
            status::failure(&e);
            return 1;
        }
    };
    super::control_plane::attach(std::slice::from_mut(&mut planned), args.data_dir.as_deref(), args.placement_port).await;
    let mut app = match launch(planned).await {
        Ok(a) => a,
        Err(e) => {
            status::failure(&e);
            return 1;
        }
    };
    if app.has_app() {
        status::success("You're up and running! Both Dapr and your app logs will appear here.\n");
    } else {
        status::success("You're up and running! Dapr logs will appear here.\n");
    }
    let ended = app.wait(signals.recv()).await;
    match ended {
        Ended::App(exit) => exit.report(),
        Ended::Sidecar(SidecarEnd::Clean) => status::success("Exited Dapr successfully"),
        Ended::Sidecar(SidecarEnd::Failed) => status::failure("The daprd process exited with error code: 1"),
        Ended::Stop => {}
    }
    status::info("\nterminated signal received: shutting down");
    let exit = app.stop_app().await;
    let sidecar_end = if let Ended::Sidecar(end) = ended {
        app.stop_sidecar().await;
        if end == SidecarEnd::Failed {
            status::failure("Error exiting Dapr: the sidecar stopped unexpectedly");
        }
        end
    } else {
        let end = app.stop_sidecar().await;
        match end {
            SidecarEnd::Clean => status::success("Exited Dapr successfully"),
            SidecarEnd::Failed => status::failure("Error exiting Dapr: the sidecar stopped unexpectedly"),
        }
        end
    };
    let code = match (ended, exit) {
        // The app failed by itself: its own code.
        (Ended::App(e), _) if e != AppExit::Code(0) => {
            status::failure(&format!("Error exiting App: {}", match e {
                AppExit::Code(c) => format!("app exited with status {c}"),
                AppExit::Signal(s) => format!("app terminated by signal {s}"),
            }));
            e.code()
        }
        (_, None) => 0,
        // Stopped, or ended when the sidecar did: a code it exited with, else (our signal) 0.
        (_, Some(e)) => {
            let code = match e {
                AppExit::Code(c) => c,
                AppExit::Signal(_) => 0,
            };
            if code == 0 {
                status::success("Exited App successfully");
            } else {
                status::failure(&format!("The App process exited with error code: {code}"));
            }
            code
        }
    };
    if code == 0 && sidecar_end == SidecarEnd::Failed {
        return 1;
    }
    code
}
