//! daprd's remaining flags (cmd/daprd/options at v1.18.3), flattened into [`SidecarArgs`]: the
//! one-shot commands (`--version`, `--build-info`, `--wait`), the init endpoints a sidecar may
//! skip, the hot-reload reconcile period, and the flags that belong to services rapr's sidecar
//! does not run yet (scheduler streams, actor dissemination, input bindings) or to Kubernetes.
//!
//! Each is parsed and checked as daprd does (a bad value stops the start); those with nothing to
//! act on yet are logged as such rather than silently dropped.

use std::time::Duration;

use clap::Args;

use super::duration::{parse_std, BareInteger};
use super::flags::{FlagError, SidecarArgs};
use super::flags_validate::Warning;

/// daprd's init endpoint names (`--disable-init-endpoints`, pkg/runtime/config.go).
pub const INIT_SUBSCRIBE: &str = "subscribe";
/// The app's `/dapr/config` (actor configuration).
pub const INIT_CONFIG: &str = "config";

/// The hot-reload backup reconcile period when the flag is zero or absent (daprd's 60 s).
pub const DEFAULT_RECONCILE: Duration = Duration::from_secs(60);

/// daprd's flags not in flags.rs.
#[derive(Debug, Clone, Default, Args)]
pub struct DaprdArgs {
    /// Print the version and exit.
    #[arg(long = "version", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub version: bool,
    /// Print the build info and exit.
    #[arg(long = "build-info", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub build_info: bool,
    /// Wait until the sidecar on `--dapr-http-port` is outbound ready (at most 60 s), then exit.
    #[arg(long = "wait", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub wait: bool,
    /// Init endpoints not to call on the app: `subscribe` (`/dapr/subscribe`), `config`
    /// (`/dapr/config`); comma separated.
    #[arg(long = "disable-init-endpoints", value_delimiter = ',')]
    pub disable_init_endpoints: Vec<String>,
    /// Period of the hot-reload backup reconcile (`30s`); zero: 60 s.
    #[arg(long = "hot-reload-reconcile-interval", default_value = "0s")]
    pub hot_reload_reconcile_interval: String,
    /// Job streams to each scheduler (daprd's default 3).
    #[arg(long = "scheduler-job-streams", default_value_t = 3)]
    pub scheduler_job_streams: u32,
    /// Actor placement dissemination timeout.
    #[arg(long = "actors-disseminate-timeout", default_value = "30s")]
    pub actors_disseminate_timeout: String,
    /// Timeout of the input binding discovery call to the app.
    #[arg(long = "app-binding-options-timeout", default_value = "3s")]
    pub app_binding_options_timeout: String,
    /// Kubernetes: the operator's address.
    #[arg(long = "control-plane-address")]
    pub control_plane_address: Option<String>,
    /// mTLS: the control plane's trust domain (daprd's env `DAPR_CONTROLPLANE_TRUST_DOMAIN`).
    #[arg(long = "control-plane-trust-domain", env = "DAPR_CONTROLPLANE_TRUST_DOMAIN", default_value = "localhost")]
    pub control_plane_trust_domain: String,
    /// mTLS: the control plane's namespace (daprd's env `DAPR_CONTROLPLANE_NAMESPACE`).
    #[arg(long = "control-plane-namespace", env = "DAPR_CONTROLPLANE_NAMESPACE", default_value = "default")]
    pub control_plane_namespace: String,
    /// mTLS: audiences of the JWT requested from sentry.
    #[arg(long = "sentry-request-jwt-audiences", value_delimiter = ',')]
    pub sentry_request_jwt_audiences: Vec<String>,
    /// Kubernetes: no built-in Kubernetes secret store.
    #[arg(long = "disable-builtin-k8s-secret-store", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub disable_builtin_k8s_secret_store: bool,
    /// Deprecated, no effect (daprd's words).
    #[arg(long = "reminders-service", hide = true)]
    pub reminders_service: Option<String>,
    /// Deprecated, no effect (daprd's words).
    #[arg(long = "actors-service", hide = true)]
    pub actors_service: Option<String>,
}

impl DaprdArgs {
    /// The init endpoints, as daprd's config: trimmed, lower-cased, empty ones dropped, anything
    /// but `subscribe` or `config` refused.
    pub fn init_endpoints_disabled(&self) -> Result<Vec<String>, FlagError> {
        let mut out = Vec::new();
        for e in &self.disable_init_endpoints {
            let e = e.trim().to_ascii_lowercase();
            if e.is_empty() {
                continue;
            }
            if e != INIT_SUBSCRIBE && e != INIT_CONFIG {
                return Err(FlagError::Size { flag: "disable-init-endpoints", value: e, reason: "supported values: subscribe, config".into() });
            }
            out.push(e);
        }
        Ok(out)
    }

    /// Whether the app's `/dapr/subscribe` is fetched.
    pub fn programmatic_subscriptions(&self) -> bool {
        !self.init_endpoints_disabled().unwrap_or_default().iter().any(|e| e == INIT_SUBSCRIBE)
    }

    /// The hot-reload backup reconcile period (zero or negative: daprd's default 60 s).
    pub fn reconcile_interval(&self) -> Result<Duration, FlagError> {
        let v = &self.hot_reload_reconcile_interval;
        let d = parse_std(v, BareInteger::Rejected).map_err(|e| FlagError::Size { flag: "hot-reload-reconcile-interval", value: v.clone(), reason: e.to_string() })?;
        Ok(d.filter(|d| !d.is_zero()).unwrap_or(DEFAULT_RECONCILE))
    }

    /// Checks what daprd parses (durations, the init endpoint names) and says which flags have
    /// nothing to act on in rapr yet.
    pub(super) fn validate(&self, warnings: &mut Vec<Warning>) -> Result<(), FlagError> {
        self.init_endpoints_disabled()?;
        self.reconcile_interval()?;
        let dissemination = &self.actors_disseminate_timeout;
        let d = parse_std(dissemination, BareInteger::Rejected).map_err(|e| FlagError::Size { flag: "actors-disseminate-timeout", value: dissemination.clone(), reason: e.to_string() })?;
        if d.is_none_or(|d| d.is_zero()) {
            // daprd: "invalid value for 'actors-disseminate-timeout' option: must be positive".
            return Err(FlagError::Size { flag: "actors-disseminate-timeout", value: dissemination.clone(), reason: "must be positive".into() });
        }
        let v = &self.app_binding_options_timeout;
        parse_std(v, BareInteger::Rejected).map_err(|e| FlagError::Size { flag: "app-binding-options-timeout", value: v.clone(), reason: e.to_string() })?;
        if let Some(a) = &self.control_plane_address {
            warnings.push(format!("--control-plane-address {a}: used in kubernetes mode only, as in daprd"));
        }
        if self.disable_builtin_k8s_secret_store {
            warnings.push("--disable-builtin-k8s-secret-store: used in kubernetes mode only, as in daprd".into());
        }
        if !self.sentry_request_jwt_audiences.is_empty() {
            warnings.push("--sentry-request-jwt-audiences: not used, mTLS is off (rapr has no sentry client yet)".into());
        }
        for (flag, set) in [("reminders-service", self.reminders_service.is_some()), ("actors-service", self.actors_service.is_some())] {
            if set {
                warnings.push(format!("Flag --{flag} has been deprecated, flag no longer has any effect"));
            }
        }
        Ok(())
    }
}

impl SidecarArgs {
    /// daprd's one-shot commands, run before anything else; `Some(exit code)` when one ran.
    pub async fn one_shot(&self) -> Option<i32> {
        let d = &self.daprd;
        if d.version {
            println!("{}", env!("CARGO_PKG_VERSION"));
            return Some(0);
        }
        if d.build_info {
            println!("Version: {}\nGit Commit: {}\nGit Version: {}", env!("CARGO_PKG_VERSION"), option_env!("RAPR_GIT_COMMIT").unwrap_or(""), option_env!("RAPR_GIT_VERSION").unwrap_or(""));
            return Some(0);
        }
        if d.wait {
            wait_outbound_ready(self.dapr_http_port).await;
            return Some(0);
        }
        None
    }
}

/// daprd's `WaitUntilDaprOutboundReady` (pkg/runtime/wait.go): polls
/// `http://localhost:<port>/v1.0/healthz/outbound` every 100 ms (500 ms per request) for at most
/// 60 s, printing its lines on stderr; always exits 0, as daprd does, even after the timeout.
async fn wait_outbound_ready(port: u16) {
    let url = format!("http://localhost:{port}/v1.0/healthz/outbound");
    eprintln!("Waiting for Dapr to be outbound ready (timeout: 60 seconds): url={url}\n");
    let client = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap_or_default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut next_print = tokio::time::Instant::now();
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => {
                eprintln!("Dapr is outbound ready!");
                return;
            }
            Ok(r) => last = format!("HTTP status code {} indicates dapr outbound not ready", r.status().as_u16()),
            Err(e) => last = e.to_string(),
        }
        if tokio::time::Instant::now() >= next_print {
            next_print = tokio::time::Instant::now() + Duration::from_secs(1);
            eprintln!("Dapr outbound NOT ready yet: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("timeout waiting for Dapr to become outbound ready. Last error: {last}");
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        d: DaprdArgs,
    }

    fn parse(args: &[&str]) -> DaprdArgs {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).unwrap().d
    }

    #[test]
    fn init_endpoints_as_daprd_reads_them() {
        let d = parse(&["--disable-init-endpoints", " Subscribe ,,config"]);
        assert_eq!(d.init_endpoints_disabled().unwrap(), vec!["subscribe", "config"]);
        assert!(!d.programmatic_subscriptions());
        assert!(parse(&[]).programmatic_subscriptions());
        assert!(parse(&["--disable-init-endpoints", "bindings"]).init_endpoints_disabled().is_err());
    }

    #[test]
    fn reconcile_interval_zero_is_the_default() {
        assert_eq!(parse(&[]).reconcile_interval().unwrap(), DEFAULT_RECONCILE);
        assert_eq!(parse(&["--hot-reload-reconcile-interval", "2s"]).reconcile_interval().unwrap(), Duration::from_secs(2));
        assert!(parse(&["--hot-reload-reconcile-interval", "often"]).reconcile_interval().is_err());
    }
}
