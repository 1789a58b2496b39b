//! The one place control-plane connections are made: a sidecar dialling placement, placement
//! listening for sidecars. Plain TCP (h2c) today, as daprd without mTLS; sentry's mTLS (a later
//! issue) goes in here, the listener wrapped in rustls and the dial given a client TLS config,
//! with nothing else to change. The node-to-node raft sessions are ractor_cluster's, which
//! brings its own TLS option.

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Channel;

/// Dials placement at `address` (`host:port`, or a URI), within `timeout`.
pub async fn dial(address: &str, timeout: Duration) -> Result<Channel, String> {
    let uri = if address.contains("://") { address.to_string() } else { format!("http://{address}") };
    let endpoint = tonic::transport::Endpoint::from_shared(uri).map_err(|e| e.to_string())?.connect_timeout(timeout);
    tokio::time::timeout(timeout, endpoint.connect()).await.map_err(|_| "dial timed out".to_string())?.map_err(|e| e.to_string())
}

/// Listens for `what` (for the error) on `addr`.
pub async fn listen(what: &str, addr: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| format!("cannot listen for {what} on {addr}: {e}"))
}

/// The connections a gRPC server takes from `listener`.
pub fn incoming(listener: TcpListener) -> tokio_stream::wrappers::TcpListenerStream {
    tokio_stream::wrappers::TcpListenerStream::new(listener)
}
