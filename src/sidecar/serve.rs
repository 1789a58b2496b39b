//! The accept loop behind every listener of the gateway: TCP or Unix socket, HTTP/1.1 and
//! HTTP/2 (h2c) on the same port, with daprd's header limit and a graceful drain.
//!
//! `axum::serve` hides hyper's connection builder, and `--read-buffer-size` needs it: Go's
//! `http.Server.MaxHeaderBytes` is daprd's limit on a request head (Go reads up to that plus
//! 4 KiB before answering 431), which is hyper's HTTP/1 read buffer limit here (its minimum,
//! 8 KiB, is daprd's default of 4 KiB plus Go's 4 KiB). The gRPC servers take daprd's
//! `MaxHeaderListSize(ReadBufferSize << 10)` for HTTP/2 instead.

use std::time::Duration;

use axum::serve::Listener;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;

use crate::runtime::span_attrs::PeerAddr;

/// How a listener's connections are served.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// HTTP/1 read buffer (request head) limit in bytes; at least hyper's 8 KiB.
    pub h1_max_buf: usize,
    /// HTTP/2 header list limit in bytes, when set.
    pub h2_max_header_list: Option<u32>,
    /// HTTP/2 streams a peer may reset before they are accepted, when not h2's default of 20.
    pub h2_pending_resets: Option<usize>,
}

/// How many streams a peer sidecar may reset before the internal server has accepted them
/// (h2's rapid-reset guard; its default is 20). A caller whose own clients give up cancels every
/// call it has queued on the one HTTP/2 connection it shares with this sidecar: past the default,
/// h2 answered with GOAWAY and tore that connection down, failing every other call in flight on it
/// ("operation was canceled", seen as 500s in the 10,000-connection test under CPU load). The
/// bound stays finite, and above the 200 streams a peer may have open at once.
const INTERNAL_PENDING_RESETS: usize = 4096;

impl ConnLimits {
    /// An HTTP API server with daprd's `MaxHeaderBytes = read_buffer`.
    pub fn http(read_buffer: usize) -> Self {
        Self { h1_max_buf: read_buffer.saturating_add(4096).max(8192), h2_max_header_list: None, h2_pending_resets: None }
    }

    /// A gRPC server: daprd's `MaxHeaderListSize(ReadBufferSize << 10)`.
    pub fn grpc(read_buffer: usize) -> Self {
        let list = u32::try_from(read_buffer.saturating_mul(1024)).unwrap_or(u32::MAX);
        Self { h1_max_buf: Self::http(read_buffer).h1_max_buf, h2_max_header_list: Some(list), h2_pending_resets: None }
    }

    /// The internal (sidecar-to-sidecar) server: gRPC's, tolerating a peer's cancelled calls.
    pub fn internal(read_buffer: usize) -> Self {
        Self { h2_pending_resets: Some(INTERNAL_PENDING_RESETS), ..Self::grpc(read_buffer) }
    }
}

fn builder(limits: ConnLimits) -> Builder<TokioExecutor> {
    let mut b = Builder::new(TokioExecutor::new());
    // Go's ReadHeaderTimeout of 10 s on daprd's HTTP servers.
    b.http1().max_buf_size(limits.h1_max_buf).timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
    if let Some(list) = limits.h2_max_header_list {
        b.http2().max_header_list_size(list);
    }
    if let Some(n) = limits.h2_pending_resets {
        b.http2().max_pending_accept_reset_streams(n);
    }
    b
}

/// Serves `router` on `listener` until `stop`, then waits for the open connections to finish
/// their requests (the gateway bounds that wait with its drain deadline).
pub async fn serve<L: Listener>(mut listener: L, router: axum::Router, stop: CancellationToken, limits: ConnLimits)
where
    L::Addr: 'static,
{
    let builder = builder(limits);
    let graceful = GracefulShutdown::new();
    loop {
        let (io, addr) = tokio::select! {
            conn = listener.accept() => conn,
            _ = stop.cancelled() => break,
        };
        // The caller's TCP address rides on each request, as Go's `Request.RemoteAddr` (spans'
        // `server.address` / `server.port`); a Unix socket peer has none.
        let peer = (&addr as &dyn std::any::Any).downcast_ref::<std::net::SocketAddr>().copied().map(PeerAddr);
        let svc = TowerToHyperService::new(tower::ServiceExt::map_request(router.clone(), move |mut r: http::Request<hyper::body::Incoming>| {
            if let Some(p) = peer {
                r.extensions_mut().insert(p);
            }
            r
        }));
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
