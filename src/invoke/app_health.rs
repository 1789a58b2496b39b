//! `AppHealthMonitor`: watches the local app and publishes whether it can be called.
//!
//! ```text
//! RuntimeRoot
//! └── AppHealthMonitor     one per sidecar with --app-port; linked to the root (a failure stops the
//!                          sidecar, as any runtime process's does); dies with the root
//! ```
//! Two phases, as daprd: first it dials the app's port every 100 ms until a TCP connection is
//! accepted (`/v1.0/healthz` stays not-ready until then); then, with `--enable-app-health-check`,
//! it probes the app every `--app-health-probe-interval` (HTTP `GET <path>`, 2xx is healthy; gRPC
//! `AppCallbackHealthCheck/HealthCheck`; over TLS for `https`/`grpcs`, as the app channel). One
//! success makes the app healthy; `--app-health-threshold` consecutive failures make it unhealthy.
//! Like daprd, the app starts unhealthy until a probe succeeds. The status goes out through a
//! `watch` channel that `AppChannel` reads on every call, so no request ever waits in this
//! process's mailbox. Probes are awaited in the handler: the only other message is `Inspect`, which
//! may wait at most one probe timeout.

use std::time::Duration;

use axum::body::Body;
use http::{Request, Uri};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rapr_proto::app::app_callback_health_check_client::AppCallbackHealthCheckClient;
use tokio::sync::watch;
use tonic::transport::Channel;

use super::app_channel::{AppProtocol, AppTransport};
use super::tls::HttpClient;

/// daprd's error for calls while the app is unhealthy (sent as gRPC `Internal`).
pub const APP_UNHEALTHY: &str = "app is not in a healthy state";
const DIAL_EVERY: Duration = Duration::from_millis(100);
const DIAL_TIMEOUT: Duration = Duration::from_millis(500);

/// `--enable-app-health-check` and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppHealthConfig {
    /// Path probed on HTTP apps.
    pub path: String,
    /// Time between probes.
    pub interval: Duration,
    /// Deadline of one probe.
    pub timeout: Duration,
    /// Consecutive failures before the app is unhealthy.
    pub threshold: u32,
}

/// What the sidecar knows of its app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppStatus {
    /// The app's port has accepted a connection once.
    pub port_open: bool,
    /// Calls may go to the app.
    pub healthy: bool,
    /// A health probe has succeeded once (always true without health checks, once the port opened).
    pub ever_healthy: bool,
}

/// Read side of the app's status, shared by the app channel and the health API.
#[derive(Clone)]
pub struct AppHealthHandle {
    rx: watch::Receiver<AppStatus>,
}

impl AppHealthHandle {
    /// A handle and the sender the monitor publishes through. With `checks`, the app starts
    /// unhealthy (daprd's initial state); without, it is always callable.
    pub fn new(checks: bool) -> (watch::Sender<AppStatus>, Self) {
        let (tx, rx) = watch::channel(AppStatus { port_open: false, healthy: !checks, ever_healthy: false });
        (tx, Self { rx })
    }

    /// The current status.
    pub fn status(&self) -> AppStatus {
        *self.rx.borrow()
    }

    /// Whether calls may go to the app.
    pub fn is_healthy(&self) -> bool {
        self.rx.borrow().healthy
    }

    /// Resolves once calls may go to the app (at once when they may; also when the monitor is
    /// gone, as nothing will gate calls then): pub/sub deliveries wait here.
    pub async fn until_healthy(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|s| s.healthy).await;
    }

    /// Resolves once calls may no longer go to the app (never without health checks, or when the
    /// monitor is gone): `--dapr-block-shutdown-duration` ends its wait here.
    pub async fn until_unhealthy(&self) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|s| !s.healthy).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves once the app's port has accepted a connection (subscriptions start then).
    pub async fn until_port_open(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|s| s.port_open).await;
    }

    /// Whether the sidecar may report ready: the port opened and, with checks, the app was healthy once.
    pub fn is_ready(&self) -> bool {
        let s = self.status();
        s.port_open && s.ever_healthy
    }
}

/// How to reach the app.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    /// Protocol, and whether over TLS.
    pub transport: AppTransport,
    /// `host:port`.
    pub authority: String,
}

/// Messages of the monitor (built only here).
pub enum AppHealthMsg {
    /// Time for the next dial or probe.
    Tick,
    /// The current status.
    Inspect(RpcReplyPort<AppStatus>),
}

// A local message only (ractor's `cluster` feature, on with ractor_cluster, wants it said).
impl ractor::Message for AppHealthMsg {}

/// Arguments of the monitor.
pub struct AppHealthArgs {
    /// The app.
    pub target: ProbeTarget,
    /// Health checks (none: only wait for the port).
    pub checks: Option<AppHealthConfig>,
    /// Where the status is published.
    pub publish: watch::Sender<AppStatus>,
    /// Where probes are counted (`dapr_http_healthprobes_*`, `dapr_grpc_io_healthprobes_*`).
    pub metrics: Option<crate::runtime::metrics::Metrics>,
}

enum Prober {
    Http { client: Box<HttpClient>, uri: Uri },
    Grpc(AppCallbackHealthCheckClient<Channel>),
}

impl Prober {
    fn new(target: &ProbeTarget, path: &str) -> Result<Self, String> {
        if target.transport.protocol == AppProtocol::Grpc {
            let ch: Channel = target.transport.grpc_channel(&target.authority)?;
            return Ok(Prober::Grpc(AppCallbackHealthCheckClient::new(ch)));
        }
        let client = target.transport.http_client().map_err(|e| e.to_string())?;
        let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
        let uri = format!("{}://{}{path}", client.scheme(), target.authority).parse().map_err(|e: http::uri::InvalidUri| e.to_string())?;
        Ok(Prober::Http { client: Box::new(client), uri })
    }

    /// One probe, bounded by `timeout`; counted in `metrics` as daprd counts it (HTTP: the app's
    /// status, 500 for a network error or timeout; gRPC: the call's code).
    async fn probe(&self, timeout: Duration, metrics: Option<&crate::runtime::metrics::Metrics>) -> Result<(), String> {
        let started = std::time::Instant::now();
        let timed_out = || format!("timed out after {timeout:?}");
        match self {
            Prober::Http { client, uri } => {
                let req = Request::get(uri.clone()).body(Body::empty()).map_err(|e| e.to_string())?;
                let resp = match tokio::time::timeout(timeout, client.request(req)).await {
                    Ok(r) => r.map_err(|e| super::tls::error_chain(&e)),
                    Err(_) => Err(timed_out()),
                };
                if let Some(m) = metrics {
                    m.app_http_probe(resp.as_ref().map_or(500, |r| r.status().as_u16()), started);
                }
                let resp = resp?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("status {}", resp.status().as_u16()))
                }
            }
            Prober::Grpc(client) => {
                let r = match tokio::time::timeout(timeout, client.clone().health_check(())).await {
                    Ok(r) => r.map(|_| ()).map_err(|s| (s.code(), s.message().to_string())),
                    Err(_) => Err((tonic::Code::DeadlineExceeded, timed_out())),
                };
                if let Some(m) = metrics {
                    m.app_grpc_probe(r.as_ref().err().map_or(tonic::Code::Ok, |e| e.0), started);
                }
                r.map_err(|e| e.1)
            }
        }
    }
}

/// The monitor process.
pub struct AppHealthMonitor;

/// Its state.
pub struct AppHealthState {
    target: ProbeTarget,
    checks: Option<(AppHealthConfig, Prober)>,
    publish: watch::Sender<AppStatus>,
    metrics: Option<crate::runtime::metrics::Metrics>,
    status: AppStatus,
    failures: u32,
}

impl AppHealthState {
    fn set(&mut self, status: AppStatus) {
        if status != self.status {
            self.status = status;
            self.publish.send_replace(status);
        }
    }

    /// One probe's outcome, daprd's rule: a success heals at once, `threshold` failures in a row sicken.
    fn record(&mut self, outcome: Result<(), String>, threshold: u32) {
        let mut s = self.status;
        match outcome {
            Ok(()) => {
                self.failures = 0;
                if !s.healthy {
                    tracing::info!(app = %self.target.authority, "the app entered healthy status");
                }
                s.healthy = true;
                s.ever_healthy = true;
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                tracing::debug!(app = %self.target.authority, error = %e, failures = self.failures, "app health probe failed");
                if self.failures >= threshold.max(1) && s.healthy {
                    tracing::warn!(app = %self.target.authority, error = %e, "the app entered unhealthy status");
                    s.healthy = false;
                }
            }
        }
        self.set(s);
    }
}

impl Actor for AppHealthMonitor {
    type Msg = AppHealthMsg;
    type State = AppHealthState;
    type Arguments = AppHealthArgs;

    async fn pre_start(&self, me: ActorRef<Self::Msg>, a: Self::Arguments) -> Result<Self::State, ActorProcessingErr> {
        let checks = match a.checks {
            Some(c) => {
                let prober = Prober::new(&a.target, &c.path)?;
                Some((c, prober))
            }
            None => None,
        };
        let status = *a.publish.borrow();
        me.send_message(AppHealthMsg::Tick)?;
        Ok(AppHealthState { target: a.target, checks, publish: a.publish, metrics: a.metrics, status, failures: 0 })
    }

    async fn handle(&self, me: ActorRef<Self::Msg>, msg: Self::Msg, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        match msg {
            AppHealthMsg::Inspect(reply) => {
                let _ = reply.send(st.status);
            }
            AppHealthMsg::Tick if !st.status.port_open => {
                let open = matches!(tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect(&st.target.authority)).await, Ok(Ok(_)));
                if !open {
                    drop(me.send_after(DIAL_EVERY, || AppHealthMsg::Tick));
                    return Ok(());
                }
                tracing::info!(app = %st.target.authority, "application discovered on its port");
                let checks = st.checks.is_some();
                st.set(AppStatus { port_open: true, healthy: st.status.healthy, ever_healthy: !checks });
                if checks {
                    me.send_message(AppHealthMsg::Tick)?;
                }
            }
            AppHealthMsg::Tick => {
                let Some((cfg, prober)) = &st.checks else { return Ok(()) };
                let (interval, threshold) = (cfg.interval, cfg.threshold);
                let outcome = prober.probe(cfg.timeout, st.metrics.as_ref()).await;
                st.record(outcome, threshold);
                drop(me.send_after(interval, || AppHealthMsg::Tick));
            }
        }
        Ok(())
    }
}

impl AppHealthConfig {
    /// From daprd's flags; `None` unless `--enable-app-health-check`.
    pub fn from_flags(f: &crate::config::SidecarArgs) -> Option<Self> {
        f.enable_app_health_check.then(|| Self {
            path: f.app_health_check_path.clone(),
            interval: Duration::from_secs(f.app_health_probe_interval.max(1)),
            timeout: Duration::from_millis(f.app_health_probe_timeout.max(1)),
            threshold: f.app_health_threshold.max(1),
        })
    }
}

/// The app's health wiring before the monitor starts: the read handle and the monitor's arguments.
pub struct AppHealthSetup {
    /// Read side, for the app channel and `/v1.0/healthz`.
    pub handle: AppHealthHandle,
    args: AppHealthArgs,
}

impl AppHealthSetup {
    /// Wiring for the app at `target`, probed with `checks` when given.
    pub fn new(target: ProbeTarget, checks: Option<AppHealthConfig>) -> Self {
        let (publish, handle) = AppHealthHandle::new(checks.is_some());
        Self { handle, args: AppHealthArgs { target, checks, publish, metrics: None } }
    }

    /// Counts the probes in `metrics`.
    pub fn with_metrics(mut self, metrics: &crate::runtime::metrics::Metrics) -> Self {
        self.args.metrics = Some(metrics.clone()).filter(crate::runtime::metrics::Metrics::enabled);
        self
    }

    /// Spawns `AppHealthMonitor` linked to `supervisor`.
    pub async fn spawn(self, name: String, supervisor: ractor::ActorCell) -> Result<(ActorRef<AppHealthMsg>, AppHealthHandle), ractor::SpawnErr> {
        let (me, _) = Actor::spawn_linked(Some(name), AppHealthMonitor, self.args, supervisor).await?;
        Ok((me, self.handle))
    }
}

/// Go's `time.Duration.String()` for whole milliseconds (`500ms`, `5s`, `1.5s`, `1m30s`), as daprd
/// reports probe settings in `/v1.0/metadata`.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s, frac) = (ms / 3_600_000, (ms / 60_000) % 60, (ms / 1000) % 60, ms % 1000);
    let secs = if frac == 0 { format!("{s}s") } else { format!("{s}.{}s", format!("{frac:03}").trim_end_matches('0')) };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(checks: bool) -> AppHealthState {
        let (tx, _) = AppHealthHandle::new(checks);
        let status = *tx.borrow();
        AppHealthState { target: ProbeTarget { transport: AppTransport { protocol: AppProtocol::Http, tls: false }, authority: "127.0.0.1:1".into() }, checks: None, publish: tx, metrics: None, status, failures: 0 }
    }

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_secs(5)), "5s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
    }

    #[test]
    fn one_success_heals_threshold_failures_sicken() {
        let mut st = state(true);
        assert!(!st.status.healthy, "unhealthy until a probe succeeds");
        st.record(Ok(()), 2);
        assert!(st.status.healthy && st.status.ever_healthy);
        st.record(Err("x".into()), 2);
        assert!(st.status.healthy, "one failure is under the threshold");
        st.record(Err("x".into()), 2);
        assert!(!st.status.healthy);
        st.record(Ok(()), 2);
        assert!(st.status.healthy);
    }
}
