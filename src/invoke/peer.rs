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

/// How much of a request body is read at once before the call starts (one invocation chunk and
/// its framing): a bigger body streams as before.
const EAGER_LIMIT: usize = super::remote::CHUNK + 1024;

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
        let req = req.map(|b| tonic::body::Body::new(Eager::read(b, EAGER_LIMIT)));
        Box::pin(self.tx.send_request(req))
    }
}

/// What a request body had ready at once, as one frame, then the rest.
///
/// hyper's HTTP/2 pipe waits for send capacity before each frame it reads from a body, and
/// closes a stream with its own empty END_STREAM frame unless the body says it has ended right
/// after its data. tonic's encoder says so only once polled past its last message, so a call of
/// one message left in three writes (HEADERS, DATA, END_STREAM). Read eagerly, a body that is
/// complete at once becomes one DATA frame flagged as the end: two writes, and the peer sees the
/// request whole in its first read.
struct Eager {
    head: Option<bytes::Bytes>,
    /// A read error met while reading eagerly, given after `head`.
    err: Option<tonic::Status>,
    rest: Option<tonic::body::Body>,
}

impl Eager {
    /// Polls `body` without a waker until it ends, is not ready, or has buffered `limit` bytes.
    fn read(mut body: tonic::body::Body, limit: usize) -> Self {
        use hyper::body::Body as _;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut head = bytes::BytesMut::new();
        loop {
            if head.len() >= limit {
                return Self { head: Some(head.freeze()), err: None, rest: Some(body) };
            }
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(d) => head.extend_from_slice(&d),
                    // Requests carry no trailers; should one come, everything goes out as it is.
                    Err(_) => return Self { head: None, err: None, rest: Some(body) },
                },
                Poll::Ready(None) => return Self { head: (!head.is_empty()).then(|| head.freeze()), err: None, rest: None },
                // A failed read is given to the pipe after what was read before it.
                Poll::Ready(Some(Err(e))) => return Self { head: (!head.is_empty()).then(|| head.freeze()), err: Some(e), rest: None },
                Poll::Pending => return Self { head: (!head.is_empty()).then(|| head.freeze()), err: None, rest: Some(body) },
            }
        }
    }
}

impl hyper::body::Body for Eager {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if let Some(h) = self.head.take() {
            return Poll::Ready(Some(Ok(hyper::body::Frame::data(h))));
        }
        if let Some(e) = self.err.take() {
            return Poll::Ready(Some(Err(e)));
        }
        match self.rest.as_mut() {
            Some(r) => Pin::new(r).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.err.is_none() && self.rest.as_ref().is_none_or(hyper::body::Body::is_end_stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper::body::{Body as _, Frame};

    fn body(items: Vec<Result<&'static [u8], tonic::Status>>, then_pending: bool) -> tonic::body::Body {
        let frames = futures::stream::iter(items.into_iter().map(|r| r.map(|b| Frame::data(bytes::Bytes::from_static(b)))));
        let tail = futures::stream::unfold(then_pending, |p| async move {
            if p {
                std::future::pending::<()>().await;
            }
            None
        });
        tonic::body::Body::new(http_body_util::StreamBody::new(futures::StreamExt::chain(frames, tail)))
    }

    #[tokio::test]
    async fn a_body_complete_at_once_is_one_frame_marked_as_the_end() {
        let mut e = Eager::read(body(vec![Ok(b"ab"), Ok(b"cd")], false), 1024);
        assert!(!e.is_end_stream());
        let f = e.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&f[..], b"abcd");
        assert!(e.is_end_stream(), "hyper sends the DATA frame with END_STREAM");
    }

    #[tokio::test]
    async fn a_body_not_ready_keeps_its_rest_and_a_read_error_is_not_lost() {
        let mut e = Eager::read(body(vec![Ok(b"ab")], true), 1024);
        assert_eq!(&e.frame().await.unwrap().unwrap().into_data().unwrap()[..], b"ab");
        assert!(!e.is_end_stream(), "the rest is still to come");
        let mut e = Eager::read(body(vec![Ok(b"ab"), Err(tonic::Status::internal("cut"))], false), 1024);
        assert_eq!(&e.frame().await.unwrap().unwrap().into_data().unwrap()[..], b"ab");
        assert_eq!(e.frame().await.unwrap().unwrap_err().message(), "cut");
        let mut e = Eager::read(body(vec![Ok(b"abcdef"), Ok(b"gh")], false), 4);
        assert_eq!(&e.frame().await.unwrap().unwrap().into_data().unwrap()[..], b"abcdef", "stops at the limit");
        assert_eq!(&e.frame().await.unwrap().unwrap().into_data().unwrap()[..], b"gh");
    }
}
