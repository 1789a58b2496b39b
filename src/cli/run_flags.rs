//! What `rapr run` hands its sidecar and its app: the sidecar's flags as a daprd command line,
//! and the app's environment.
//!
//! The Dapr CLI starts daprd with a command line built from its own flags (`getArgs`); rapr's
//! sidecar runs in-process, but it is still configured from such a command line, parsed by the
//! same parser as `rapr sidecar` ([`SidecarArgv::parse`]). So each `dapr run` flag reaches the
//! sidecar under daprd's name, with daprd's parsing and defaults, and a flag the sidecar refuses
//! fails the run with the sidecar's own message.
//!
//! The app's environment is the CLI's (`getEnv`): `APP_ID`, `APP_CHANNEL_ADDRESS`, `APP_PORT`
//! and `DAPR_METRICS_PORT` (when set), `APP_PROTOCOL`, `DAPR_HTTP_PORT`, `DAPR_GRPC_PORT`, then
//! the run file's `env`.

use clap::{Args, Parser};
use serde::Deserialize;

use crate::config::SidecarArgs;

/// App channel and request flags `dapr run` passes through to daprd; also keys of a run file's
/// app (and of its `common` section).
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelOptions {
    /// The network address the app listens on.
    #[arg(long = "app-channel-address")]
    pub app_channel_address: Option<String>,
    /// Most concurrent calls delivered to the app (-1: unlimited).
    #[arg(long = "app-max-concurrency", allow_negative_numbers = true)]
    pub app_max_concurrency: Option<i32>,
    /// Health-check the app.
    #[arg(long = "enable-app-health-check", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
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
    /// HTTP header read buffer, e.g. `4Ki`.
    #[arg(long = "read-buffer-size")]
    pub read_buffer_size: Option<String>,
    /// Log every API call.
    #[arg(long = "enable-api-logging", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub enable_api_logging: Option<bool>,
    /// Serve profiling endpoints.
    #[arg(long = "enable-profiling", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub enable_profiling: Option<bool>,
    /// Comma separated addresses the sidecar's APIs listen on.
    #[arg(long = "dapr-listen-addresses")]
    #[serde(rename = "apiListenAddresses")]
    pub dapr_listen_addresses: Option<String>,
    /// Placement service address (empty: no actors).
    #[arg(long = "placement-host-address")]
    pub placement_host_address: Option<String>,
    /// Scheduler service address (empty: none).
    #[arg(long = "scheduler-host-address")]
    pub scheduler_host_address: Option<String>,
    /// Deprecated: https or grpcs to the app (use --app-protocol).
    #[arg(long = "app-ssl", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    #[serde(rename = "appSSL")]
    pub app_ssl: Option<bool>,
}

impl ChannelOptions {
    /// `self`'s values, with `base`'s where `self` has none (a run file's `common`).
    pub fn or(&self, base: &ChannelOptions) -> ChannelOptions {
        macro_rules! pick {
            ($($f:ident),*) => { ChannelOptions { $($f: self.$f.clone().or_else(|| base.$f.clone())),* } };
        }
        pick!(
            app_channel_address,
            app_max_concurrency,
            enable_app_health_check,
            app_health_check_path,
            app_health_probe_interval,
            app_health_probe_timeout,
            app_health_threshold,
            max_body_size,
            read_buffer_size,
            enable_api_logging,
            enable_profiling,
            dapr_listen_addresses,
            placement_host_address,
            scheduler_host_address,
            app_ssl
        )
    }

    /// Adds the options that are set to the sidecar's command line.
    pub fn push(&self, argv: &mut SidecarArgv) {
        argv.opt("app-channel-address", self.app_channel_address.as_ref());
        // The CLI: below 1 is unlimited.
        argv.opt("app-max-concurrency", self.app_max_concurrency.map(|c| if c < 1 { -1 } else { c }));
        argv.opt("enable-app-health-check", self.enable_app_health_check);
        argv.opt("app-health-check-path", self.app_health_check_path.as_ref());
        argv.opt("app-health-probe-interval", self.app_health_probe_interval.filter(|v| *v != 0));
        argv.opt("app-health-probe-timeout", self.app_health_probe_timeout.filter(|v| *v != 0));
        argv.opt("app-health-threshold", self.app_health_threshold.filter(|v| *v != 0));
        argv.opt("max-body-size", self.max_body_size.as_ref());
        argv.opt("read-buffer-size", self.read_buffer_size.as_ref());
        argv.opt("enable-api-logging", self.enable_api_logging);
        argv.opt("enable-profiling", self.enable_profiling);
        // rapr run's sidecars answer on loopback unless told otherwise (daprd alone: everywhere).
        argv.flag("dapr-listen-addresses", self.dapr_listen_addresses.as_deref().filter(|a| !a.trim().is_empty()).unwrap_or("127.0.0.1"));
        argv.opt("placement-host-address", self.placement_host_address.as_ref().map(|a| with_port(a, 50005)));
        argv.opt("scheduler-host-address", self.scheduler_host_address.as_ref().map(|a| with_port(a, 50006)));
    }

    /// The app protocol the sidecar and the app are told, as the CLI's `getAppProtocol`:
    /// `--app-ssl` turns http into https and grpc into grpcs; unknown values pass unchanged.
    pub fn app_protocol(&self, given: Option<&str>) -> String {
        let p = given.unwrap_or("http").to_ascii_lowercase();
        match (p.as_str(), self.app_ssl.unwrap_or(false)) {
            ("" | "http", false) => "http".into(),
            ("" | "http", true) => "https".into(),
            ("grpc", true) => "grpcs".into(),
            _ => p,
        }
    }
}

/// `host` → `host:port` (the CLI's default ports for placement and scheduler); empty stays
/// empty (disabled).
fn with_port(addr: &str, port: u16) -> String {
    let a = addr.trim();
    if a.is_empty() || a.contains(':') {
        a.to_string()
    } else {
        format!("{a}:{port}")
    }
}

/// A sidecar command line under construction.
#[derive(Debug, Clone, Default)]
pub struct SidecarArgv(Vec<String>);

/// The flags every app's sidecar gets from `rapr run` (one app or a run file).
pub struct SidecarBase<'a> {
    /// `--app-id`.
    pub app_id: &'a str,
    /// `--app-port`.
    pub app_port: u16,
    /// `--app-protocol`.
    pub protocol: &'a str,
    /// `--dapr-http-port`, `--dapr-grpc-port`, `--dapr-internal-grpc-port`, `--metrics-port`.
    pub ports: [u16; 4],
}

impl SidecarArgv {
    /// A command line starting with `base`.
    pub fn with_base(base: SidecarBase<'_>) -> Self {
        let mut argv = Self::default();
        argv.flag("app-id", base.app_id);
        argv.flag("app-port", base.app_port);
        argv.flag("app-protocol", base.protocol);
        let [http, grpc, internal, metrics] = base.ports;
        argv.flag("dapr-http-port", http);
        argv.flag("dapr-grpc-port", grpc);
        argv.flag("dapr-internal-grpc-port", internal);
        argv.flag("metrics-port", metrics);
        argv
    }

    /// `--name value`.
    pub fn flag(&mut self, name: &str, value: impl ToString) {
        // `--name=value`: a value that starts with `-` is never read as a flag.
        self.0.push(format!("--{name}={}", value.to_string()));
    }

    /// `--name value` when set.
    pub fn opt<T: ToString>(&mut self, name: &str, value: Option<T>) {
        if let Some(v) = value {
            self.flag(name, v);
        }
    }

    /// The arguments so far.
    pub fn args(&self) -> &[String] {
        &self.0
    }

    /// Parses the command line as `rapr sidecar` does; `Err` is the parser's complaint.
    pub fn parse(&self) -> Result<SidecarArgs, String> {
        #[derive(Parser)]
        #[command(name = "rapr sidecar")]
        struct Wrapper {
            #[command(flatten)]
            args: SidecarArgs,
        }
        Wrapper::try_parse_from(std::iter::once("rapr-sidecar".to_string()).chain(self.0.iter().cloned()))
            .map(|w| w.args)
            .map_err(|e| format!("the sidecar refuses its flags: {}", e.to_string().lines().next().unwrap_or_default().trim_start_matches("error: ")))
    }
}

/// The app's environment as the CLI sets it.
pub struct AppEnv<'a> {
    /// App id.
    pub app_id: &'a str,
    /// The app's address as the sidecar reaches it.
    pub app_channel_address: &'a str,
    /// App port (0: none).
    pub app_port: u16,
    /// Sidecar HTTP port.
    pub http_port: u16,
    /// Sidecar gRPC port.
    pub grpc_port: u16,
    /// Sidecar metrics port (0: none).
    pub metrics_port: u16,
    /// App protocol after `--app-ssl`.
    pub app_protocol: &'a str,
}

impl AppEnv<'_> {
    /// The variables, the CLI's first, then `extra` (a run file's `env`, which may override).
    pub fn vars(&self, extra: &[(String, String)]) -> Vec<(String, String)> {
        let mut v = vec![("APP_ID".to_string(), self.app_id.to_string()), ("APP_CHANNEL_ADDRESS".into(), self.app_channel_address.to_string())];
        if self.app_port > 0 {
            v.push(("APP_PORT".into(), self.app_port.to_string()));
        }
        v.push(("DAPR_HTTP_PORT".into(), self.http_port.to_string()));
        v.push(("DAPR_GRPC_PORT".into(), self.grpc_port.to_string()));
        if self.metrics_port > 0 {
            v.push(("DAPR_METRICS_PORT".into(), self.metrics_port.to_string()));
        }
        if !self.app_protocol.is_empty() {
            v.push(("APP_PROTOCOL".into(), self.app_protocol.to_string()));
        }
        v.extend(extra.iter().cloned());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_reach_the_sidecar_under_daprds_names() {
        let o = ChannelOptions {
            app_max_concurrency: Some(0),
            enable_api_logging: Some(true),
            read_buffer_size: Some("8Ki".into()),
            placement_host_address: Some("localhost".into()),
            scheduler_host_address: Some(String::new()),
            ..Default::default()
        };
        let mut argv = SidecarArgv::default();
        argv.flag("app-id", "x");
        o.push(&mut argv);
        let f = argv.parse().unwrap();
        assert_eq!(f.app_id, "x");
        assert_eq!(f.app_max_concurrency, -1);
        assert_eq!(f.enable_api_logging, Some(true));
        assert_eq!(f.read_buffer_size, "8Ki");
        assert_eq!(f.placement_host_address.as_deref(), Some("localhost:50005"));
        assert_eq!(f.scheduler_host_address.as_deref(), Some(""));
    }

    #[test]
    fn unknown_flags_are_the_sidecars_complaint() {
        let mut argv = SidecarArgv::default();
        argv.flag("no-such-flag", 1);
        assert!(argv.parse().unwrap_err().starts_with("the sidecar refuses its flags:"));
    }

    #[test]
    fn app_ssl_and_common_fold_in() {
        let ssl = ChannelOptions { app_ssl: Some(true), ..Default::default() };
        assert_eq!(ssl.app_protocol(None), "https");
        assert_eq!(ssl.app_protocol(Some("grpc")), "grpcs");
        assert_eq!(ChannelOptions::default().app_protocol(Some("H2C")), "h2c");
        let app = ChannelOptions { max_body_size: Some("1Mi".into()), ..Default::default() };
        let common = ChannelOptions { max_body_size: Some("9Mi".into()), read_buffer_size: Some("1Ki".into()), ..Default::default() };
        let merged = app.or(&common);
        assert_eq!((merged.max_body_size.as_deref(), merged.read_buffer_size.as_deref()), (Some("1Mi"), Some("1Ki")));
    }

    #[test]
    fn the_apps_environment_is_the_clis() {
        let env = AppEnv { app_id: "a", app_channel_address: "127.0.0.1", app_port: 0, http_port: 1, grpc_port: 2, metrics_port: 3, app_protocol: "http" };
        let v = env.vars(&[("X".into(), "y".into())]);
        let keys: Vec<&str> = v.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["APP_ID", "APP_CHANNEL_ADDRESS", "DAPR_HTTP_PORT", "DAPR_GRPC_PORT", "DAPR_METRICS_PORT", "APP_PROTOCOL", "X"]);
    }
}
