//! `PeerConn`: one HTTP/2 connection to another sidecar's internal port, driven by hyper's
//! connection-level client, as the `tower::Service` tonic's generated client and the gRPC proxy
//! send through.
//!
//! Why not tonic's `Channel`: a `Channel` puts a `tower::Buffer` in front of the connection, so
//! every call is handed to a buffer worker task before hyper's own client task: one more task
//! hop (and, on a busy core, one more wake-up) per call for nothing a single connection needs.
//! hyper's `http2::SendRequest` is already a cheap clonable handle to the connection task.
//!
//! The connection is made once per peer address (remote.rs caches it) and reused by every call;
//! a closed one is replaced on the next call (`is_closed`). Requests get the peer's scheme and
//! authority here, so callers may build path-only URIs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

/// How long a connection attempt may take (tonic's `connect_timeout` that rapr used before).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to one peer sidecar.
#[derive(Clone, Debug)]
pub struct PeerConn {
    tx: SendRequest<tonic::body::Body>,
    authority: Authority,
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The address is not `host:port`.
    #[error("invalid address {0:?}")]
    Address(String),
    /// TCP connect failed or timed out.
    #[error("transport error: {0}")]
    Tcp(String),
    /// The HTTP/2 handshake failed.
    #[error("transport error: http2 handshake: {0}")]
    Handshake(#[from] hyper::Error),
}

impl PeerConn {
    /// Connects to `addr` (`host:port`) and starts the connection task.
    pub async fn connect(addr: &str) -> Result<Self, ConnectError> {
        let authority: Authority = addr.parse().map_err(|_| ConnectError::Address(addr.to_string()))?;
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ConnectError::Tcp(e.to_string())),
            Err(_) => return Err(ConnectError::Tcp("connection timed out".into())),
        };
        // Small frames go out at once (tonic's `tcp_nodelay(true)`, which rapr set before).
        stream.set_nodelay(true).map_err(|e| ConnectError::Tcp(e.to_string()))?;
        let (tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new()).timer(TokioTimer::new()).handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "peer sidecar connection ended");
            }
        });
        Ok(Self { tx, authority })
    }

    /// Whether the connection is gone (the next call reconnects).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for PeerConn {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tx.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        // Invariant: scheme, authority and path are all set, which is all `from_parts` checks.
        #[allow(clippy::unwrap_used)]
        let uri = http::Uri::from_parts(parts).unwrap();
        *req.uri_mut() = uri;
        Box::pin(self.tx.send_request(req))
    }
}
