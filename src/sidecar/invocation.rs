//! Wiring of service invocation for one sidecar: its app channel, name resolution (register
//! this sidecar, resolve others), the outbound invoker, and the internal gRPC server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::api::invoke::InvokeApi;
use crate::config::SidecarArgs;
use crate::invoke::app_channel::{AppChannel, AppProtocol, AppTransport};
use crate::invoke::app_health::{AppHealthConfig, AppHealthHandle, AppHealthSetup, ProbeTarget};
use crate::invoke::internal::InternalService;
use crate::invoke::nameres::{NameResolverConfig, Registration, SqliteNameResolver};
use crate::invoke::proxy::{GrpcProxy, ProxySetup};
use crate::invoke::remote::RemoteInvoker;
use crate::resiliency::Resiliency;
use crate::runtime::metrics::Metrics;

/// What the root keeps of invocation.
pub struct Invocation {
    /// The facade for the API adapters.
    pub api: InvokeApi,
    /// The internal gRPC router (served on the internal port).
    pub internal: axum::Router,
    /// The channel to the app (`None` without `--app-port`); pub/sub delivers through it.
    pub app: Option<Arc<AppChannel>>,
    resolver: Option<Arc<SqliteNameResolver>>,
    app_health: Option<AppHealthSetup>,
}

/// Errors setting invocation up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvocationError(String);

/// The name resolution database: the Configuration's, else `$RAPR_HOME/nameresolution.db`.
pub fn resolver_path(configured: Option<PathBuf>) -> PathBuf {
    configured.unwrap_or_else(|| crate::config::rapr_home().join("nameresolution.db"))
}

impl Invocation {
    /// Builds the app channel, resolver and invoker from the flags.
    pub async fn build(flags: &SidecarArgs, resolver_db: PathBuf, max_body: usize, resiliency: Resiliency, metrics: &Metrics) -> Result<Self, InvocationError> {
        let token = std::env::var("APP_API_TOKEN").ok();
        let (app, app_health, app_grpc) = if flags.app_port != 0 {
            let transport = AppTransport::parse(&flags.app_protocol).map_err(InvocationError)?;
            let authority = format!("{}:{}", flags.app_channel_address, flags.app_port);
            let target = ProbeTarget { transport, authority: authority.clone() };
            let health = AppHealthSetup::new(target, AppHealthConfig::from_flags(flags)).with_metrics(metrics);
            let ch = AppChannel::new(transport, &flags.app_channel_address, flags.app_port, flags.app_max_concurrency, token.clone()).map_err(|e| InvocationError(e.to_string()))?;
            // The proxy's own channel to a gRPC app: TLS for `grpcs`, the app's certificate
            // unchecked as daprd does (`tls.rs`).
            let app_grpc = match transport.protocol {
                AppProtocol::Grpc => Some(transport.grpc_channel(&authority).map_err(InvocationError)?),
                _ => None,
            };
            (Some(Arc::new(ch.with_health(health.handle.clone()).with_metrics(metrics.clone()))), Some(health), app_grpc)
        } else {
            (None, None, None)
        };
        let resolver = match SqliteNameResolver::open(&NameResolverConfig::at(resolver_db.clone())).await {
            Ok(r) => Some(Arc::new(r)),
            Err(e) => {
                tracing::error!(db = %resolver_db.display(), error = %e, "name resolution unavailable; only self-invocation works");
                None
            }
        };
        let remote = Arc::new(RemoteInvoker::new(max_body).with_metrics(metrics.clone()));
        let proxy = Arc::new(GrpcProxy::new(ProxySetup {
            app_id: flags.app_id.clone(),
            app: app_grpc,
            resolver: resolver.clone(),
            remote: Arc::clone(&remote),
            app_token: token,
            resiliency: resiliency.clone(),
            metrics: metrics.clone(),
            max_message: max_body,
        }));
        let app_channel = app.clone();
        let api = InvokeApi::new(&flags.app_id, app.clone(), resolver.clone(), remote, resiliency).with_proxy(Arc::clone(&proxy));
        // A call carrying `dapr-app-id` is another sidecar's proxied gRPC call for this app; the
        // internal protocol itself never sends that header.
        let internal = tonic::service::Routes::new(InternalService::new(app).with_metrics(metrics.clone()).into_server(max_body)).into_axum_router().layer(axum::middleware::from_fn_with_state(proxy, deliver_proxied));
        Ok(Self { api, internal, app: app_channel, resolver, app_health })
    }

    /// Starts `AppHealthMonitor` (with `--app-port`) under `supervisor`; returns the read handle
    /// for `/v1.0/healthz`.
    pub async fn start_app_health(&mut self, runtime_id: &str, supervisor: ractor::ActorCell) -> Result<Option<AppHealthHandle>, ractor::SpawnErr> {
        match self.app_health.take() {
            Some(setup) => Ok(Some(setup.spawn(format!("{runtime_id}/app-health"), supervisor).await?.1)),
            None => Ok(None),
        }
    }

    /// Registers this sidecar's internal address (`DAPR_HOST_IP`, else the listen address, else
    /// loopback) so others can call it.
    pub async fn register(&self, app_id: &str, listen: &[String], internal: &[SocketAddr]) -> Option<Registration> {
        let (resolver, port) = (self.resolver.as_ref()?, internal.first()?.port());
        if app_id.is_empty() {
            return None;
        }
        let address = advertised_address(listen, port);
        match resolver.register(app_id, &address).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, "registering with name resolution failed; other apps cannot call this one");
                None
            }
        }
    }
}

/// This sidecar's internal address as others are given it (name resolution, placement's host
/// name): `DAPR_HOST_IP`, else the first specific listen address, else loopback.
pub fn advertised_address(listen: &[String], port: u16) -> String {
    let host = std::env::var("DAPR_HOST_IP")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| listen.iter().find(|a| !matches!(a.as_str(), "0.0.0.0" | "::" | "[::]")).cloned())
        .unwrap_or_else(|| "127.0.0.1".into());
    let host = host.trim_matches(|c| c == '[' || c == ']');
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Internal port: proxied gRPC calls go to the app, everything else to `ServiceInvocation`. The
/// answer is marked so the metrics count it as daprd does (a client RPC of this sidecar).
async fn deliver_proxied(axum::extract::State(proxy): axum::extract::State<Arc<GrpcProxy>>, req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    if crate::invoke::proxy::target_of(req.headers()).is_none() {
        return next.run(req).await;
    }
    let mut resp = match proxy.deliver(req).await {
        Ok(resp) => resp,
        Err(e) => crate::api::errors::invoke::proxy_error(e).into_http::<axum::body::Body>().into_response(),
    };
    resp.extensions_mut().insert(crate::runtime::metrics::ProxiedDelivery);
    resp
}
