//! `ApiGateway`: owns the HTTP, gRPC, internal, public and metrics listeners and their graceful
//! drain. Each server binds its own flag's address, as daprd's: the APIs `--dapr-listen-addresses`
//! (or only Unix sockets with `--unix-domain-socket`), the internal server
//! `--dapr-internal-grpc-listen-address`, metrics `--metrics-listen-address`, the public server
//! `--dapr-public-listen-address`.
//!
//! It binds in `pre_start` (a taken port fails the spawn, and so the sidecar, loudly) and serves
//! on tasks; requests never pass through this mailbox. `Drain` stops accepting, lets in-flight
//! requests finish within the deadline, and replies. Failure escalates to `RuntimeRoot`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::serve::ListenerExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::serve::{serve, ConnLimits};

/// Messages of `ApiGateway`.
pub enum ApiGatewayMsg {
    /// The bound addresses.
    Addresses(RpcReplyPort<BoundAddresses>),
    /// Stop accepting and wait for in-flight requests.
    Drain(RpcReplyPort<()>),
}

// A local message only (ractor's `cluster` feature, on with ractor_cluster, wants it said).
impl ractor::Message for ApiGatewayMsg {}

/// Where the listeners are bound (ports resolved when 0 was asked for).
#[derive(Debug, Clone, Default)]
pub struct BoundAddresses {
    /// HTTP API (empty with `--unix-domain-socket`).
    pub http: Vec<SocketAddr>,
    /// gRPC API (empty with `--unix-domain-socket`).
    pub grpc: Vec<SocketAddr>,
    /// Sidecar-to-sidecar gRPC.
    pub internal: Vec<SocketAddr>,
    /// Prometheus `/metrics` (empty when disabled or not bound).
    pub metrics: Vec<SocketAddr>,
    /// Public health/metadata server (`--dapr-public-port`).
    pub public: Vec<SocketAddr>,
    /// The HTTP and gRPC API sockets (`--unix-domain-socket`).
    pub sockets: Vec<PathBuf>,
}

/// Where the HTTP and gRPC APIs listen.
pub enum ApiListen {
    /// TCP on each of `--dapr-listen-addresses`.
    Tcp {
        /// HTTP API addresses.
        http: Vec<SocketAddr>,
        /// gRPC API addresses.
        grpc: Vec<SocketAddr>,
    },
    /// Unix sockets only, as daprd with `--unix-domain-socket`.
    Unix {
        /// HTTP API socket.
        http: PathBuf,
        /// gRPC API socket.
        grpc: PathBuf,
    },
}

/// Arguments: routers and where to bind them.
pub struct ApiGatewayArgs {
    /// HTTP API router.
    pub http: axum::Router,
    /// gRPC API router.
    pub grpc: axum::Router,
    /// Sidecar-to-sidecar gRPC router.
    pub internal: axum::Router,
    /// Public router (health and metadata), when `--dapr-public-port` is given.
    pub public: Option<(axum::Router, SocketAddr)>,
    /// Prometheus `/metrics` router (none when metrics are disabled).
    pub metrics: Option<axum::Router>,
    /// Where the APIs listen.
    pub api: ApiListen,
    /// Internal gRPC bind address (`--dapr-internal-grpc-listen-address`).
    pub internal_addr: SocketAddr,
    /// Metrics bind address (`--metrics-listen-address`).
    pub metrics_addr: SocketAddr,
    /// `--read-buffer-size` in bytes.
    pub read_buffer: usize,
    /// How long a drain may take.
    pub drain_deadline: Duration,
}

/// The listener-owning process.
pub struct ApiGateway;

/// Gateway state.
pub struct ApiGatewayState {
    bound: BoundAddresses,
    stop: CancellationToken,
    servers: TaskTracker,
    deadline: Duration,
}

/// Pending connections the kernel queues per listener (tokio's default is 1,024): bursts of
/// thousands of new connections must wait in the queue, not be dropped.
const LISTEN_BACKLOG: u32 = 8192;

async fn bind(addrs: &[SocketAddr], what: &str) -> Result<Vec<TcpListener>, ActorProcessingErr> {
    let mut out = Vec::new();
    for a in addrs {
        let err = |e: std::io::Error| format!("cannot listen for the {what} API on {a}: {e}");
        let socket = if a.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }.map_err(err)?;
        socket.set_reuseaddr(true).map_err(err)?;
        socket.bind(*a).map_err(err)?;
        out.push(socket.listen(LISTEN_BACKLOG).map_err(err)?);
    }
    Ok(out)
}

/// Binds a Unix socket; as daprd, an existing file at the path is an error, not replaced.
fn bind_unix(path: &Path, what: &str) -> Result<UnixListener, ActorProcessingErr> {
    UnixListener::bind(path).map_err(|e| format!("cannot listen for the {what} API on {}: {e}", path.display()).into())
}

fn serve_tcp(st: &mut ApiGatewayState, listener: TcpListener, router: axum::Router, limits: ConnLimits) {
    // TCP_NODELAY on every accepted connection: an answer written in several segments (HTTP/2
    // HEADERS then DATA, or a head then a body) must not wait for the client's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    st.servers.spawn(serve(listener, router, st.stop.clone(), limits));
}

impl Actor for ApiGateway {
    type Msg = ApiGatewayMsg;
    type State = ApiGatewayState;
    type Arguments = ApiGatewayArgs;

    async fn pre_start(&self, _me: ActorRef<Self::Msg>, a: Self::Arguments) -> Result<Self::State, ActorProcessingErr> {
        let (http_limits, grpc_limits) = (ConnLimits::http(a.read_buffer), ConnLimits::grpc(a.read_buffer));
        let mut st = ApiGatewayState { bound: BoundAddresses::default(), stop: CancellationToken::new(), servers: TaskTracker::new(), deadline: a.drain_deadline };
        match &a.api {
            ApiListen::Tcp { http, grpc } => {
                let (http, grpc) = (bind(http, "HTTP").await?, bind(grpc, "gRPC").await?);
                for l in http {
                    st.bound.http.push(l.local_addr()?);
                    serve_tcp(&mut st, l, a.http.clone(), http_limits);
                }
                for l in grpc {
                    st.bound.grpc.push(l.local_addr()?);
                    serve_tcp(&mut st, l, a.grpc.clone(), grpc_limits);
                }
            }
            ApiListen::Unix { http, grpc } => {
                let hl = bind_unix(http, "HTTP")?;
                let gl = match bind_unix(grpc, "gRPC") {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = std::fs::remove_file(http);
                        return Err(e);
                    }
                };
                st.bound.sockets = vec![http.clone(), grpc.clone()];
                st.servers.spawn(serve(hl, a.http.clone(), st.stop.clone(), http_limits));
                st.servers.spawn(serve(gl, a.grpc.clone(), st.stop.clone(), grpc_limits));
            }
        }
        for l in bind(&[a.internal_addr], "internal gRPC").await? {
            st.bound.internal.push(l.local_addr()?);
            serve_tcp(&mut st, l, a.internal.clone(), ConnLimits::internal(a.read_buffer));
        }
        if let Some((router, addr)) = a.public {
            for l in bind(&[addr], "public HTTP").await? {
                st.bound.public.push(l.local_addr()?);
                serve_tcp(&mut st, l, router.clone(), http_limits);
            }
        }
        let b = &st.bound;
        tracing::info!(http = ?b.http, grpc = ?b.grpc, sockets = ?b.sockets, internal = ?b.internal, public = ?b.public, "API servers listening");
        // A taken metrics port is logged, not fatal: metrics never keep a sidecar from serving.
        if let Some(router) = a.metrics {
            match bind(&[a.metrics_addr], "metrics").await {
                Ok(ls) => {
                    for l in ls {
                        st.bound.metrics.push(l.local_addr()?);
                        serve_tcp(&mut st, l, router.clone(), http_limits);
                    }
                    tracing::info!(metrics = ?st.bound.metrics, "metrics server listening");
                }
                Err(e) => tracing::error!(error = %e, "metrics server not started"),
            }
        }
        Ok(st)
    }

    async fn handle(&self, _me: ActorRef<Self::Msg>, msg: Self::Msg, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        match msg {
            ApiGatewayMsg::Addresses(reply) => {
                let _ = reply.send(st.bound.clone());
            }
            ApiGatewayMsg::Drain(reply) => {
                st.stop.cancel();
                st.servers.close();
                if tokio::time::timeout(st.deadline, st.servers.wait()).await.is_err() {
                    tracing::warn!(deadline = ?st.deadline, "in-flight requests did not finish before the drain deadline");
                }
                // daprd's cleanSockets: the socket files go with the servers.
                for s in &st.bound.sockets {
                    if let Err(e) = std::fs::remove_file(s) {
                        tracing::warn!(socket = %s.display(), error = %e, "cannot remove the API socket");
                    }
                }
                let _ = reply.send(());
            }
        }
        Ok(())
    }
}
