//! `ApiGateway`: owns the HTTP, gRPC, internal and metrics listeners and their graceful drain.
//!
//! It binds in `pre_start` (a taken port fails the spawn, and so the sidecar, loudly) and serves
//! on tasks; requests never pass through this mailbox. `Drain` stops accepting, lets in-flight
//! requests finish within the deadline, and replies. Failure escalates to `RuntimeRoot`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::serve::ListenerExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Messages of `ApiGateway`.
pub enum ApiGatewayMsg {
    /// The bound addresses.
    Addresses(RpcReplyPort<BoundAddresses>),
    /// Stop accepting and wait for in-flight requests.
    Drain(RpcReplyPort<()>),
}

/// Where the listeners are bound (ports resolved when 0 was asked for).
#[derive(Debug, Clone, Default)]
pub struct BoundAddresses {
    /// HTTP API.
    pub http: Vec<SocketAddr>,
    /// gRPC API.
    pub grpc: Vec<SocketAddr>,
    /// Sidecar-to-sidecar gRPC.
    pub internal: Vec<SocketAddr>,
    /// Prometheus `/metrics` (empty when disabled or not bound).
    pub metrics: Vec<SocketAddr>,
}

/// Arguments: routers and where to bind them.
pub struct ApiGatewayArgs {
    /// HTTP API router.
    pub http: axum::Router,
    /// gRPC API router.
    pub grpc: axum::Router,
    /// Sidecar-to-sidecar gRPC router.
    pub internal: axum::Router,
    /// HTTP bind addresses.
    pub http_addrs: Vec<SocketAddr>,
    /// gRPC bind addresses.
    pub grpc_addrs: Vec<SocketAddr>,
    /// Internal gRPC bind addresses.
    pub internal_addrs: Vec<SocketAddr>,
    /// Prometheus `/metrics` router (none when metrics are disabled).
    pub metrics: Option<axum::Router>,
    /// Metrics bind addresses.
    pub metrics_addrs: Vec<SocketAddr>,
    /// How long a drain may take.
    pub drain_deadline: Duration,
}

/// The listener-owning process.
pub struct ApiGateway;

/// Gateway state.
pub struct ApiGatewayState {
    http_bound: Vec<SocketAddr>,
    grpc_bound: Vec<SocketAddr>,
    internal_bound: Vec<SocketAddr>,
    metrics_bound: Vec<SocketAddr>,
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

fn serve(tracker: &TaskTracker, stop: &CancellationToken, listener: TcpListener, router: axum::Router, what: &'static str) {
    let stop = stop.clone();
    tracker.spawn(async move {
        let addr = listener.local_addr().ok();
        // TCP_NODELAY on every accepted connection: an answer written in several segments (HTTP/2
        // HEADERS then DATA, or a head then a body) must not wait for the client's delayed ACK.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set");
            }
        });
        let res = axum::serve(listener, router.into_make_service()).with_graceful_shutdown(async move { stop.cancelled().await }).await;
        if let Err(e) = res {
            tracing::error!(api = what, addr = ?addr, error = %e, "API server failed");
        }
    });
}

/// How many streams a peer sidecar may reset before the internal server has accepted them
/// (h2's rapid-reset guard; its default is 20). A caller whose own clients give up cancels every
/// call it has queued on the one HTTP/2 connection it shares with this sidecar: past the default,
/// h2 answered with GOAWAY and tore that connection down, failing every other call in flight on it
/// ("operation was canceled", seen as 500s in the 10,000-connection test under CPU load). The
/// bound stays finite, and above the 200 streams a peer may have open at once.
const INTERNAL_PENDING_RESETS: usize = 4096;

/// The internal (sidecar-to-sidecar) server: as `serve`, but on a hyper builder whose HTTP/2
/// pending-accept reset limit is `INTERNAL_PENDING_RESETS` (axum's `serve` cannot set it).
fn serve_internal(tracker: &TaskTracker, stop: &CancellationToken, listener: TcpListener, router: axum::Router) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;
    let (stop, conns) = (stop.clone(), tracker.clone());
    tracker.spawn(async move {
        loop {
            let tcp = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        // Out of fds or a connection reset before accept: wait, as axum's serve does.
                        tracing::debug!(error = %e, "internal API accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set");
            }
            let (service, stop) = (TowerToHyperService::new(router.clone()), stop.clone());
            conns.spawn(async move {
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder.http2().max_pending_accept_reset_streams(INTERNAL_PENDING_RESETS);
                let conn = builder.serve_connection(TokioIo::new(tcp), service);
                tokio::pin!(conn);
                let res = tokio::select! {
                    r = conn.as_mut() => r,
                    _ = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = res {
                    tracing::debug!(error = %e, "internal API connection ended");
                }
            });
        }
    });
}

impl Actor for ApiGateway {
    type Msg = ApiGatewayMsg;
    type State = ApiGatewayState;
    type Arguments = ApiGatewayArgs;

    async fn pre_start(&self, _me: ActorRef<Self::Msg>, a: Self::Arguments) -> Result<Self::State, ActorProcessingErr> {
        let http = bind(&a.http_addrs, "HTTP").await?;
        let grpc = bind(&a.grpc_addrs, "gRPC").await?;
        let internal = bind(&a.internal_addrs, "internal gRPC").await?;
        let stop = CancellationToken::new();
        let servers = TaskTracker::new();
        let mut st = ApiGatewayState { http_bound: Vec::new(), grpc_bound: Vec::new(), internal_bound: Vec::new(), metrics_bound: Vec::new(), stop, servers, deadline: a.drain_deadline };
        for l in http {
            st.http_bound.push(l.local_addr()?);
            serve(&st.servers, &st.stop, l, a.http.clone(), "http");
        }
        for l in grpc {
            st.grpc_bound.push(l.local_addr()?);
            serve(&st.servers, &st.stop, l, a.grpc.clone(), "grpc");
        }
        for l in internal {
            st.internal_bound.push(l.local_addr()?);
            serve_internal(&st.servers, &st.stop, l, a.internal.clone());
        }
        tracing::info!(http = ?st.http_bound, grpc = ?st.grpc_bound, internal = ?st.internal_bound, "API servers listening");
        // A taken metrics port is logged, not fatal: metrics never keep a sidecar from serving.
        if let Some(router) = a.metrics {
            match bind(&a.metrics_addrs, "metrics").await {
                Ok(ls) => {
                    for l in ls {
                        st.metrics_bound.push(l.local_addr()?);
                        serve(&st.servers, &st.stop, l, router.clone(), "metrics");
                    }
                    tracing::info!(metrics = ?st.metrics_bound, "metrics server listening");
                }
                Err(e) => tracing::error!(error = %e, "metrics server not started"),
            }
        }
        Ok(st)
    }

    async fn handle(&self, _me: ActorRef<Self::Msg>, msg: Self::Msg, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        match msg {
            ApiGatewayMsg::Addresses(reply) => {
                let _ = reply.send(BoundAddresses { http: st.http_bound.clone(), grpc: st.grpc_bound.clone(), internal: st.internal_bound.clone(), metrics: st.metrics_bound.clone() });
            }
            ApiGatewayMsg::Drain(reply) => {
                st.stop.cancel();
                st.servers.close();
                if tokio::time::timeout(st.deadline, st.servers.wait()).await.is_err() {
                    tracing::warn!(deadline = ?st.deadline, "in-flight requests did not finish before the drain deadline");
                }
                let _ = reply.send(());
            }
        }
        Ok(())
    }
}
