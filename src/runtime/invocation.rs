//! Wiring of service invocation for one sidecar: its app channel, name resolution (register
//! this sidecar, resolve others), the outbound invoker, and the internal gRPC server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::api::invoke::InvokeApi;
use crate::config::SidecarArgs;
use crate::invoke::app_channel::{AppChannel, AppProtocol};
use crate::invoke::internal::InternalService;
use crate::invoke::nameres::{NameResolverConfig, Registration, SqliteNameResolver};
use crate::invoke::remote::RemoteInvoker;

/// What the root keeps of invocation.
pub struct Invocation {
    /// The facade for the API adapters.
    pub api: InvokeApi,
    /// The internal gRPC router (served on the internal port).
    pub internal: axum::Router,
    resolver: Option<Arc<SqliteNameResolver>>,
}

/// Errors setting invocation up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvocationError(String);

/// The name resolution database: the Configuration's, else `$RAPR_HOME/nameresolution.db`.
pub fn resolver_path(configured: Option<PathBuf>) -> PathBuf {
    configured.unwrap_or_else(|| crate::cli::init::rapr_home().join("nameresolution.db"))
}

impl Invocation {
    /// Builds the app channel, resolver and invoker from the flags.
    pub async fn build(flags: &SidecarArgs, resolver_db: PathBuf, max_body: usize) -> Result<Self, InvocationError> {
        let app = if flags.app_port != 0 {
            let protocol = AppProtocol::parse(&flags.app_protocol).map_err(InvocationError)?;
            let token = std::env::var("APP_API_TOKEN").ok();
            let ch = AppChannel::new(protocol, &flags.app_channel_address, flags.app_port, flags.app_max_concurrency, token).map_err(|e| InvocationError(e.to_string()))?;
            Some(Arc::new(ch))
        } else {
            None
        };
        let resolver = match SqliteNameResolver::open(&NameResolverConfig::at(resolver_db.clone())).await {
            Ok(r) => Some(Arc::new(r)),
            Err(e) => {
                tracing::error!(db = %resolver_db.display(), error = %e, "name resolution unavailable; only self-invocation works");
                None
            }
        };
        let remote = Arc::new(RemoteInvoker::new(max_body));
        let api = InvokeApi::new(&flags.app_id, app.clone(), resolver.clone(), remote);
        let internal = tonic::service::Routes::new(InternalService::new(app).into_server(max_body)).into_axum_router();
        Ok(Self { api, internal, resolver })
    }

    /// Registers this sidecar's internal address (`DAPR_HOST_IP`, else the listen address, else
    /// loopback) so others can call it.
    pub async fn register(&self, app_id: &str, listen: &[String], internal: &[SocketAddr]) -> Option<Registration> {
        let (resolver, port) = (self.resolver.as_ref()?, internal.first()?.port());
        if app_id.is_empty() {
            return None;
        }
        let host = std::env::var("DAPR_HOST_IP")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| listen.iter().find(|a| !matches!(a.as_str(), "0.0.0.0" | "::" | "[::]")).cloned())
            .unwrap_or_else(|| "127.0.0.1".into());
        let host = host.trim_matches(|c| c == '[' || c == ']');
        let address = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        match resolver.register(app_id, &address).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, "registering with name resolution failed; other apps cannot call this one");
                None
            }
        }
    }
}
