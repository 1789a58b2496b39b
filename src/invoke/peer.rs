//! `PeerConn`: one HTTP/2 connection to another sidecar's internal port, spoken with `h2`
//! directly, as the `tower::Service` tonic's generated client and the gRPC proxy send through.
//!
//! Why not tonic's `Channel`: a `Channel` puts a `tower::Buffer` in front of the connection, so
//! every call is handed to a buffer worker task first. Why not hyper's `http2::SendRequest`
//! either: it hands each request to the connection task over a channel, and it spawns a task per
//! request to pipe the body (plus one holding the connection's reference), which then waits for
//! send capacity before its one frame (measured: two task spawns and ~3,400 instructions a call).
//! With `h2` the caller's own task opens the stream and queues HEADERS and DATA (a body complete
//! at once, as nearly every invocation is, goes as one DATA frame flagged END_STREAM, buffered by
//! h2 until the peer's window allows); only a body that is still streaming gets a pipe task.
//!
//! The connection is made once per peer address (remote.rs caches it) and reused by every call;
//! its task drives the socket. A closed one is replaced on the next call (`is_closed`). Requests
//! get the peer's scheme and authority here, so callers may build path-only URIs.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use hyper::body::{Body as _, Frame, SizeHint};

/// How much of a request body is read at once before the call starts (one invocation chunk and
/// its framing): a bigger body streams through a pipe task.
const EAGER_LIMIT: usize = super::remote::CHUNK + 1024;

/// How long a connection attempt may take (tonic's `connect_timeout` that rapr used before).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Flow-control windows as hyper's HTTP/2 client set them (5 MiB per connection, 2 MiB per
/// stream), so large bodies stream as fast as before.
const CONN_WINDOW: u32 = 5 * 1024 * 1024;
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;

/// Headers HTTP/2 forbids (RFC 9113 §8.2.2), removed as hyper's client removes them.
const CONNECTION_SPECIFIC: [&str; 4] = ["connection", "keep-alive", "proxy-connection", "upgrade"];

/// A connection to one peer sidecar.
#[derive(Clone, Debug)]
pub struct PeerConn {
    tx: h2::client::SendRequest<Bytes>,
    authority: Authority,
    closed: Arc<AtomicBool>,
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
    Handshake(#[from] h2::Error),
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
        let handshake = h2::client::Builder::new().initial_window_size(STREAM_WINDOW).initial_connection_window_size(CONN_WINDOW).handshake::<_, Bytes>(stream);
        let (tx, conn) = match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(r) => r?,
            Err(_) => return Err(ConnectError::Tcp("http2 handshake timed out".into())),
        };
        let closed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&closed);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "peer sidecar connection ended");
            }
            flag.store(true, Ordering::Release);
        });
        Ok(Self { tx, authority, closed })
    }

    /// Whether the connection is gone (the next call reconnects).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for PeerConn {
    type Response = http::Response<PeerBody>;
    type Error = h2::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tx.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        // Invariant: scheme, authority and path are all set, which is all `from_parts` checks.
        #[allow(clippy::unwrap_used)]
        let full = http::Uri::from_parts(uri).unwrap();
        parts.uri = full;
        for h in CONNECTION_SPECIFIC {
            parts.headers.remove(h);
        }
        parts.headers.remove(http::header::TRANSFER_ENCODING);
        if parts.headers.get(http::header::TE).is_some_and(|v| v != "trailers") {
            parts.headers.remove(http::header::TE);
        }
        let body = Eager::read(body, EAGER_LIMIT);
        let whole = body.err.is_none() && body.rest.is_none();
        let head = http::Request::from_parts(parts, ());
        let (response, mut stream) = match self.tx.send_request(head, whole && body.head.is_none()) {
            Ok(r) => r,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        if whole {
            if let Some(data) = body.head {
                // The whole body, buffered by h2 until the peer's window takes it.
                if let Err(e) = stream.send_data(data, true) {
                    return Box::pin(std::future::ready(Err(e)));
                }
            }
        } else {
            tokio::spawn(pipe(body, stream));
        }
        Box::pin(async move { response.await.map(|r| r.map(PeerBody::new)) })
    }
}

/// A [`PeerConn`] to one address, made on first use and made again once closed: the gRPC app's
/// connection (a plain `grpc` app; `grpcs` keeps tonic's TLS channel). Lock-free: the current
/// connection sits in an `ArcSwapOption`; two first calls racing may both connect, and the
/// later connection is kept (the other closes when its call ends).
#[derive(Debug)]
pub struct LazyPeer {
    addr: String,
    conn: arc_swap::ArcSwapOption<PeerConn>,
}

impl LazyPeer {
    /// Nothing is connected until the first call.
    pub fn new(addr: String) -> Self {
        Self { addr, conn: arc_swap::ArcSwapOption::empty() }
    }

    /// The live connection, connecting if there is none.
    pub async fn get(&self) -> Result<PeerConn, ConnectError> {
        if let Some(c) = self.conn.load().as_deref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = PeerConn::connect(&self.addr).await?;
        self.conn.store(Some(Arc::new(c.clone())));
        Ok(c)
    }
}

/// Sends the rest of a streaming request body, as the peer's window allows; stops when the peer
/// resets the stream, and resets it when the body fails.
async fn pipe(mut body: Eager, mut stream: h2::SendStream<Bytes>) {
    loop {
        let next = std::future::poll_fn(|cx| {
            if stream.poll_reset(cx).is_ready() {
                return Poll::Ready(None);
            }
            Pin::new(&mut body).poll_frame(cx).map(Some)
        })
        .await;
        let frame = match next {
            // The peer reset the stream: nothing more to send.
            None => return,
            Some(None) => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Some(Some(Err(_))) => {
                stream.send_reset(h2::Reason::CANCEL);
                return;
            }
            Some(Some(Ok(frame))) => frame,
        };
        match frame.into_data() {
            Ok(mut data) => {
                while !data.is_empty() {
                    stream.reserve_capacity(data.len());
                    match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
                        Some(Ok(0)) => continue,
                        Some(Ok(n)) => {
                            if stream.send_data(data.split_to(n.min(data.len())), false).is_err() {
                                return;
                            }
                        }
                        _ => return,
                    }
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = stream.send_trailers(trailers);
                }
                return;
            }
        }
    }
}

/// A peer's response body: DATA frames (their window given back as they are read), then the
/// trailers.
pub struct PeerBody {
    recv: h2::RecvStream,
    data_done: bool,
}

impl PeerBody {
    fn new(recv: h2::RecvStream) -> Self {
        Self { recv, data_done: false }
    }
}

impl hyper::body::Body for PeerBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match self.recv.poll_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(data))) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => self.data_done = true,
            }
        }
        match self.recv.poll_trailers(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(t))) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
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
    use hyper::body::Frame;

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
