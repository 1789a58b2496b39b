//! `rapr sidecar` flags: daprd's names and defaults, so existing scripts work unchanged.
//!
//! Flags for building blocks that later issues implement are accepted now (and reported in the
//! log when set) rather than rejected, because daprd's callers pass them routinely.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Flags of `rapr sidecar` (daprd's).
#[derive(Debug, Clone, Args)]
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
    /// Public (health and metadata only) HTTP port.
    #[arg(long = "dapr-public-port")]
    pub dapr_public_port: Option<u16>,
    /// Addresses the API listeners bind, comma separated.
    #[arg(long = "dapr-listen-addresses", default_value = "")]
    pub dapr_listen_addresses: String,
    /// Prometheus metrics port (0: a free one).
    #[arg(long = "metrics-port", default_value_t = 9090)]
    pub metrics_port: u16,
    /// Serve metrics.
    #[arg(long = "enable-metrics", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_metrics: bool,
    /// Resource folders or files (repeatable).
    #[arg(long = "resources-path")]
    pub resources_path: Vec<PathBuf>,
    /// Deprecated alias of --resources-path.
    #[arg(long = "components-path", hide = true)]
    pub components_path: Option<PathBuf>,
    /// Configuration file.
    #[arg(long = "config")]
    pub config: Option<PathBuf>,
    /// Log level: debug, info, warn, error.
    #[arg(long = "log-level", default_value = "info")]
    pub log_level: String,
    /// Log as JSON lines.
    #[arg(long = "log-as-json", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub log_as_json: bool,
    /// Log every API call.
    #[arg(long = "enable-api-logging", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_api_logging: bool,
    /// Run mode (only standalone here).
    #[arg(long = "mode", default_value = "standalone")]
    pub mode: String,
    /// Placement service addresses.
    #[arg(long = "placement-host-address")]
    pub placement_host_address: Option<String>,
    /// Scheduler service addresses.
    #[arg(long = "scheduler-host-address")]
    pub scheduler_host_address: Option<String>,
    /// Sentry address.
    #[arg(long = "sentry-address")]
    pub sentry_address: Option<String>,
    /// Use mTLS between sidecars.
    #[arg(long = "enable-mtls", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_mtls: bool,
    /// Largest request body accepted, e.g. `4Mi` (Dapr's default).
    #[arg(long = "max-body-size", default_value = "4Mi")]
    pub max_body_size: String,
    /// Deprecated: largest request body in MB.
    #[arg(long = "dapr-http-max-request-size", hide = true)]
    pub dapr_http_max_request_size: Option<u64>,
    /// Read buffer size for HTTP headers, e.g. `4Ki`.
    #[arg(long = "read-buffer-size", default_value = "4Ki")]
    pub read_buffer_size: String,
    /// Seconds to drain in-flight requests on shutdown.
    #[arg(long = "dapr-graceful-shutdown-seconds", default_value_t = 5)]
    pub dapr_graceful_shutdown_seconds: u64,
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
    /// CORS allowed origins.
    #[arg(long = "allowed-origins", default_value = "*")]
    pub allowed_origins: String,
    /// Profiling port.
    #[arg(long = "profile-port", default_value_t = 7777)]
    pub profile_port: u16,
    /// Serve profiling endpoints.
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
    /// Unix domain socket directory for the APIs.
    #[arg(long = "unix-domain-socket")]
    pub unix_domain_socket: Option<PathBuf>,
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
}

impl SidecarArgs {
    /// Resource paths, with the deprecated `--components-path` folded in.
    pub fn resource_paths(&self) -> Vec<PathBuf> {
        let mut paths = self.resources_path.clone();
        paths.extend(self.components_path.clone());
        paths
    }

    /// The request body limit in bytes.
    pub fn max_body_bytes(&self) -> Result<usize, FlagError> {
        if let Some(mb) = self.dapr_http_max_request_size {
            return Ok((mb as usize) << 20);
        }
        parse_size(&self.max_body_size).map_err(|reason| FlagError::Size { flag: "max-body-size", value: self.max_body_size.clone(), reason })
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

    /// Drain deadline on shutdown.
    pub fn graceful_shutdown(&self) -> Duration {
        Duration::from_secs(self.dapr_graceful_shutdown_seconds)
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
