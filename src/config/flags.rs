//! `rapr sidecar` flags: daprd's names, defaults and env fallbacks (cmd/daprd/options at v1.18.3),
//! so existing scripts work unchanged.
//!
//! No flag is accepted and silently ignored: each one is either honoured as daprd honours it or
//! refused at start with a message saying why ([`SidecarArgs::validate`], flags_validate.rs).
//! The few that name control-plane services rapr's sidecar does not use yet (placement,
//! scheduler) are accepted, as daprd accepts an unreachable address, and say so in the log.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Flags of `rapr sidecar` (daprd's). A flag given twice keeps its last value, as Go's pflag
/// (lists, such as `--resources-path`, collect every value instead).
#[derive(Debug, Clone, Args)]
#[command(args_override_self = true)]
pub struct SidecarArgs {
    /// The id of the application this sidecar serves.
    #[arg(long = "app-id", default_value = "")]
    pub app_id: String,
    /// The port the application listens on (0: no app channel).
    #[arg(long = "app-port", default_value_t = 0)]
    pub app_port: u16,
    /// Protocol of the app channel: http, grpc, https, grpcs, h2c.
    #[arg(long = "app-protocol", default_value = "http")]
    pub app_protocol: String,
    /// Address of the app.
    #[arg(long = "app-channel-address", default_value = "127.0.0.1")]
    pub app_channel_address: String,
    /// Most concurrent requests delivered to the app (-1: unlimited).
    #[arg(long = "app-max-concurrency", default_value_t = -1, allow_negative_numbers = true)]
    pub app_max_concurrency: i32,
    /// HTTP API port.
    #[arg(long = "dapr-http-port", default_value_t = 3500)]
    pub dapr_http_port: u16,
    /// gRPC API port.
    #[arg(long = "dapr-grpc-port", default_value_t = 50001)]
    pub dapr_grpc_port: u16,
    /// Sidecar-to-sidecar gRPC port (0: pick a free one).
    #[arg(long = "dapr-internal-grpc-port", default_value_t = 0)]
    pub dapr_internal_grpc_port: u16,
    /// Public HTTP port serving only `/v1.0/healthz*` and `/v1.0/metadata` (daprd's public server).
    #[arg(long = "dapr-public-port")]
    pub dapr_public_port: Option<u16>,
    /// Address the public server binds (daprd's default: empty, all interfaces).
    #[arg(long = "dapr-public-listen-address", default_value = "")]
    pub dapr_public_listen_address: String,
    /// Address the sidecar-to-sidecar gRPC server binds (daprd's default: empty, all interfaces).
    /// Not `--dapr-listen-addresses`, which is for the HTTP and gRPC APIs only.
    #[arg(long = "dapr-internal-grpc-listen-address", default_value = "")]
    pub dapr_internal_grpc_listen_address: String,
    /// Addresses the API listeners bind, comma separated.
    #[arg(long = "dapr-listen-addresses", default_value = "")]
    pub dapr_listen_addresses: String,
    /// Prometheus metrics port (0: a free one).
    #[arg(long = "metrics-port", default_value_t = 9090)]
    pub metrics_port: u16,
    /// Address the metrics server binds (daprd's default `0.0.0.0`).
    #[arg(long = "metrics-listen-address", default_value = "0.0.0.0")]
    pub metrics_listen_address: String,
    /// Serve metrics.
    #[arg(long = "enable-metrics", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_metrics: bool,
    /// Resource folders or files (repeatable, and comma separated as daprd's string slice).
    #[arg(long = "resources-path", value_delimiter = ',')]
    pub resources_path: Vec<PathBuf>,
    /// Deprecated alias of --resources-path.
    #[arg(long = "components-path", hide = true)]
    pub components_path: Option<PathBuf>,
    /// Configuration files (repeatable, comma separated): each is applied over the previous, as
    /// daprd's standalone loader does.
    #[arg(long = "config", value_delimiter = ',')]
    pub config: Vec<PathBuf>,
    /// Log level: debug, info, warn, error.
    #[arg(long = "log-level", default_value = "info")]
    pub log_level: String,
    /// Write the log lines to this file (created, appended to) instead of the terminal.
    #[arg(long = "log-file")]
    pub log_file: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long = "log-as-json", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub log_as_json: bool,
    /// Log every API call (scopes `dapr.runtime.http-info`, `dapr.runtime.grpc.api-info`). Unset:
    /// the Configuration's `logging.apiLogging.enabled` decides, as daprd.
    #[arg(long = "enable-api-logging", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_api_logging: Option<bool>,
    /// Run mode: `standalone` (`kubernetes` is refused: rapr has no operator).
    #[arg(long = "mode", default_value = "standalone")]
    pub mode: String,
    /// Placement service addresses.
    #[arg(long = "placement-host-address")]
    pub placement_host_address: Option<String>,
    /// Scheduler service addresses (daprd falls back to `DAPR_SCHEDULER_HOST_ADDRESS_DNS_A`).
    #[arg(long = "scheduler-host-address", env = "DAPR_SCHEDULER_HOST_ADDRESS_DNS_A")]
    pub scheduler_host_address: Option<String>,
    /// Sentry address.
    #[arg(long = "sentry-address")]
    pub sentry_address: Option<String>,
    /// Use mTLS between sidecars (refused until rapr has sentry).
    #[arg(long = "enable-mtls", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_mtls: bool,
    /// Largest request body accepted, e.g. `4Mi` (Dapr's default); wins over the deprecated
    /// `--dapr-http-max-request-size`. Empty: not given (4Mi unless the deprecated flag is).
    #[arg(long = "max-body-size", default_value = "")]
    pub max_body_size: String,
    /// Deprecated: largest request body in MB (used only without `--max-body-size`).
    #[arg(long = "dapr-http-max-request-size", hide = true, allow_negative_numbers = true)]
    pub dapr_http_max_request_size: Option<i64>,
    /// Largest request head (headers) of the HTTP servers, e.g. `4Ki` (daprd's default); wins
    /// over the deprecated `--dapr-http-read-buffer-size`. Empty: not given.
    #[arg(long = "read-buffer-size", default_value = "")]
    pub read_buffer_size: String,
    /// Deprecated: `--read-buffer-size` in KB.
    #[arg(long = "dapr-http-read-buffer-size", hide = true, allow_negative_numbers = true)]
    pub dapr_http_read_buffer_size: Option<i64>,
    /// Seconds to drain in-flight requests on shutdown (negative: daprd's default, 5).
    #[arg(long = "dapr-graceful-shutdown-seconds", default_value_t = 5, allow_negative_numbers = true)]
    pub dapr_graceful_shutdown_seconds: i64,
    /// On SIGTERM/SIGINT, keep serving this long (Go duration, `10s`) or until the app reports
    /// unhealthy before the graceful shutdown starts; subscriptions stop first. Unset: off.
    #[arg(long = "dapr-block-shutdown-duration")]
    pub dapr_block_shutdown_duration: Option<String>,
    /// Health-check the app.
    #[arg(long = "enable-app-health-check", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_app_health_check: bool,
    /// Path probed on the app.
    #[arg(long = "app-health-check-path", default_value = "/healthz")]
    pub app_health_check_path: String,
    /// Seconds between app probes.
    #[arg(long = "app-health-probe-interval", default_value_t = 5)]
    pub app_health_probe_interval: u64,
    /// Milliseconds before an app probe times out.
    #[arg(long = "app-health-probe-timeout", default_value_t = 500)]
    pub app_health_probe_timeout: u64,
    /// Failed probes before the app is unhealthy.
    #[arg(long = "app-health-threshold", default_value_t = 3)]
    pub app_health_threshold: u32,
    /// CORS allowed origins, comma separated; `*` any. daprd's default is empty: no CORS headers.
    #[arg(long = "allowed-origins", default_value = "")]
    pub allowed_origins: String,
    /// Profiling port (only read with `--enable-profiling`, which rapr refuses).
    #[arg(long = "profile-port", default_value_t = 7777)]
    pub profile_port: u16,
    /// Serve Go's pprof endpoints: refused (rapr is not a Go program; see the docs).
    #[arg(long = "enable-profiling", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_profiling: bool,
    /// rapr extension: deadline of every call into a component (`500ms`, `30s`), so a stalled
    /// backend answers with an error instead of holding requests forever.
    #[arg(long = "component-call-timeout", default_value = "30s")]
    pub component_call_timeout: String,
    /// rapr extension (daprd never probes components after init): time between health probes
    /// of each ready component (`5s`; `0s` turns probing off). Named after daprd's
    /// `--app-health-probe-interval`.
    #[arg(long = "component-health-probe-interval", default_value = "5s")]
    pub component_health_probe_interval: String,
    /// rapr extension: consecutive failed probes before a component shows as failing in
    /// `/v1.0/metadata` and reconnects in place. Named after daprd's `--app-health-threshold`.
    #[arg(long = "component-health-threshold", default_value_t = 3)]
    pub component_health_threshold: u32,
    /// Directory for the API sockets: the HTTP and gRPC APIs listen on
    /// `<dir>/dapr-<app-id>-http.socket` and `<dir>/dapr-<app-id>-grpc.socket` instead of TCP.
    #[arg(long = "unix-domain-socket")]
    pub unix_domain_socket: Option<PathBuf>,
    /// Deprecated: `--app-protocol http` becomes `https`, `grpc` becomes `grpcs`.
    #[arg(long = "app-ssl", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", hide = true)]
    pub app_ssl: bool,
    /// daprd's other flags (flags_daprd.rs).
    #[command(flatten)]
    pub daprd: super::flags_daprd::DaprdArgs,
}

/// Flag errors caught after parsing.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    /// A size or duration flag that does not parse.
    #[error("invalid value {value:?} for --{flag}: {reason}")]
    Size {
        /// Flag name.
        flag: &'static str,
        /// Value given.
        value: String,
        /// Why it failed.
        reason: String,
    },
    /// A flag whose value rapr does not implement: refused rather than ignored.
    #[error("--{flag} {value}: {reason}")]
    Refused {
        /// Flag name.
        flag: &'static str,
        /// Value given.
        value: String,
        /// Why.
        reason: &'static str,
    },
}

impl SidecarArgs {
    /// Resource paths, with the deprecated `--components-path` folded in.
    pub fn resource_paths(&self) -> Vec<PathBuf> {
        let mut paths = self.resources_path.clone();
        paths.extend(self.components_path.clone());
        paths
    }

    /// The request body limit in bytes: `--max-body-size` wins over the deprecated
    /// `--dapr-http-max-request-size` (MB), as daprd's options.
    pub fn max_body_bytes(&self) -> Result<usize, FlagError> {
        sized(&self.max_body_size, "max-body-size", self.dapr_http_max_request_size, 20, DEFAULT_MAX_BODY)
    }

    /// The largest request head of the HTTP servers in bytes (Go's `MaxHeaderBytes`):
    /// `--read-buffer-size` wins over the deprecated `--dapr-http-read-buffer-size` (KB).
    pub fn read_buffer_bytes(&self) -> Result<usize, FlagError> {
        sized(&self.read_buffer_size, "read-buffer-size", self.dapr_http_read_buffer_size, 10, DEFAULT_READ_BUFFER)
    }

    /// The component call deadline.
    pub fn component_call_timeout(&self) -> Result<Duration, FlagError> {
        // rapr's own flag: Go syntax, and a bare integer of seconds as it always accepted.
        super::duration::parse_std(&self.component_call_timeout, super::duration::BareInteger::Seconds)
            .ok()
            .flatten()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| FlagError::Size { flag: "component-call-timeout", value: self.component_call_timeout.clone(), reason: "not a positive duration".into() })
    }

    /// How component hosts probe their components after start.
    pub fn component_health_probe(&self) -> Result<crate::components::host::HealthProbe, FlagError> {
        let interval = super::duration::parse_std(&self.component_health_probe_interval, super::duration::BareInteger::Seconds).ok().flatten().ok_or_else(|| FlagError::Size {
            flag: "component-health-probe-interval",
            value: self.component_health_probe_interval.clone(),
            reason: "not a duration".into(),
        })?;
        Ok(crate::components::host::HealthProbe { interval, threshold: self.component_health_threshold.max(1) })
    }

    /// Drain deadline on shutdown (negative: daprd's default of 5 s).
    pub fn graceful_shutdown(&self) -> Duration {
        u64::try_from(self.dapr_graceful_shutdown_seconds).map_or(Duration::from_secs(5), Duration::from_secs)
    }

    /// Addresses the API listeners bind; daprd binds all interfaces when none are given.
    pub fn listen_addresses(&self) -> Vec<String> {
        let addrs: Vec<String> =
            self.dapr_listen_addresses.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect();
        if addrs.is_empty() {
            vec!["0.0.0.0".to_string()]
        } else {
            addrs
        }
    }
}

/// daprd's `DefaultMaxRequestBodySize`.
const DEFAULT_MAX_BODY: usize = 4 << 20;
/// daprd's `DefaultReadBufferSize`.
const DEFAULT_READ_BUFFER: usize = 4 << 10;

/// A size from its quantity flag, else its deprecated integer flag (`shift`: 20 for MB, 10 for
/// KB; daprd keeps a non-positive number as is, and -1 means the default).
fn sized(quantity: &str, flag: &'static str, deprecated: Option<i64>, shift: u32, default: usize) -> Result<usize, FlagError> {
    if !quantity.trim().is_empty() {
        let q = quantity;
        return parse_size(q).map_err(|reason| FlagError::Size { flag, value: q.to_string(), reason });
    }
    Ok(match deprecated {
        Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX).checked_shl(shift).unwrap_or(usize::MAX),
        Some(0) => 0,
        _ => default,
    })
}

/// Parses a Kubernetes-style quantity (`4Mi`, `512Ki`, `1G`, `100`).
pub fn parse_size(v: &str) -> Result<usize, String> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().map_err(|_| "not a size".to_string())?;
    let mult: f64 = match unit {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown unit {other:?}")),
    };
    Ok((n * mult) as usize)
}

/// Rewrites Go-style single-dash long flags (`-app-id`) to `--app-id`, as daprd accepts both.
pub fn normalize_go_flags(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut passthrough = false;
    for a in args {
        if a == "--" {
            passthrough = true;
        }
        let go_style = !passthrough && a.starts_with('-') && !a.starts_with("--") && a.len() > 2 && a.as_bytes()[1].is_ascii_alphabetic();
        out.push(if go_style { format!("-{a}") } else { a });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4Mi"), Ok(4 << 20));
        assert_eq!(parse_size("512Ki"), Ok(512 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn go_flags() {
        let v = normalize_go_flags(["rapr", "sidecar", "-app-id", "x", "--", "-foo"].map(String::from));
        assert_eq!(v, ["rapr", "sidecar", "--app-id", "x", "--", "-foo"]);
    }
}
