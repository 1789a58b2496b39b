//! `AppConnections`: the keep-alive HTTP/1.1 connections to a plain `http` app, held by the app
//! channel itself.
//!
//! Why not hyper-util's pooled client: for a sidecar that only ever talks to one address it does
//! work per request that buys nothing here (parsing an absolute URI, a pool keyed by scheme and
//! authority behind a lock, a connector service per checkout, a checkout future racing a connect
//! future): ~13,000 instructions per call on the app's sidecar (docs/benchmarks.md, round 2).
//!
//! What is kept from it: a request goes out on an idle connection when there is one, else on a
//! new one; a connection goes back to the idle set only once its response body has been read to
//! the end (HTTP/1.1 serves one request at a time); and a request that hyper hands back unsent,
//! because the app had just closed that idle connection, is sent again on another (the pooled
//! client's `retry_canceled_requests`). A request that was written is never resent.
//!
//! The idle set is a bounded lock-free queue (`MAX_IDLE`): a burst opens as many connections as
//! it needs, and what does not fit back in the set afterwards is closed. A connection idle for
//! longer than `IDLE_TIMEOUT` (hyper-util's default) is closed when next taken.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use crossbeam_queue::ArrayQueue;
use http::{HeaderValue, Request, Response};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::OwnedSemaphorePermit;

/// How many idle connections are kept per app.
const MAX_IDLE: usize = 64;
/// An idle connection older than this is closed instead of used (hyper-util's pool default).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a call to the app failed.
#[derive(Debug, thiserror::Error)]
pub enum AppConnError {
    /// No connection could be made.
    #[error("dial tcp {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    /// The HTTP exchange failed (hyper's error and its causes).
    #[error("{0}")]
    Http(String),
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

/// The idle connections to one app and how to open more.
pub struct AppConnections {
    /// `host:port`, dialled and sent as `Host` when the caller sent none.
    authority: String,
    host: HeaderValue,
    idle: Arc<ArrayQueue<Idle>>,
}

impl AppConnections {
    /// Nothing is connected until the first call.
    pub fn new(authority: String) -> Self {
        let host = HeaderValue::from_str(&authority).unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Self { authority, host, idle: Arc::new(ArrayQueue::new(MAX_IDLE)) }
    }

    /// Sends `req` (origin-form URI) and returns the app's response; its body holds the
    /// connection (and `permit`) until read to the end or dropped.
    pub async fn send(&self, mut req: Request<Body>, permit: Option<OwnedSemaphorePermit>) -> Result<Response<Body>, AppConnError> {
        if !req.headers().contains_key(http::header::HOST) {
            req.headers_mut().insert(http::header::HOST, self.host.clone());
        }
        while let Some(Idle { mut sender, since }) = self.idle.pop() {
            if since.elapsed() > IDLE_TIMEOUT || sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.answer(resp, sender, permit)),
                Err(mut e) => match e.take_message() {
                    // Never written: the app had closed this connection; try the next.
                    Some(unsent) => req = unsent,
                    None => return Err(AppConnError::Http(super::tls::error_chain(&e.into_error()))),
                },
            }
        }
        let mut sender = self.connect().await?;
        let resp = sender.send_request(req).await.map_err(|e| AppConnError::Http(super::tls::error_chain(&e)))?;
        Ok(self.answer(resp, sender, permit))
    }

    async fn connect(&self) -> Result<SendRequest<Body>, AppConnError> {
        let failed = |source| AppConnError::Connect { addr: self.authority.clone(), source };
        let tcp = tokio::net::TcpStream::connect(&self.authority).await.map_err(failed)?;
        // Without TCP_NODELAY a request written in two segments (head, then body) waits for the
        // app's delayed ACK before its second part leaves.
        tcp.set_nodelay(true).map_err(failed)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| AppConnError::Http(super::tls::error_chain(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "app connection closed");
            }
        });
        Ok(sender)
    }

    fn answer(&self, resp: Response<Incoming>, sender: SendRequest<Body>, permit: Option<OwnedSemaphorePermit>) -> Response<Body> {
        let (parts, inner) = resp.into_parts();
        let body = AppBody { inner, conn: Some((Arc::clone(&self.idle), sender)), _permit: permit };
        Response::from_parts(parts, Body::new(body))
    }

    /// How many connections are idle now (tests).
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.len()
    }
}

/// The app's response body. It hands its connection back to the idle set once the body has been
/// read to the end, and holds an `--app-max-concurrency` permit until dropped. Its size hint and
/// end pass through, so a small answer of known length rides in the internal reply's lead frame.
struct AppBody {
    inner: Incoming,
    conn: Option<(Arc<ArrayQueue<Idle>>, SendRequest<Body>)>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl AppBody {
    fn release(&mut self) {
        if let Some((idle, sender)) = self.conn.take() {
            // A full set closes the connection (dropping its sender ends its task).
            let _ = idle.push(Idle { sender, since: Instant::now() });
        }
    }
}

impl hyper::body::Body for AppBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            // A failed body leaves the connection in an unknown state: it is not reused.
            Poll::Ready(Some(Err(_))) => self.conn = None,
            _ => {}
        }
        polled.map(|f| f.map(|r| r.map_err(axum::Error::new)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AppBody {
    fn drop(&mut self) {
        // An answer with no body (or one read to its end without the last poll) is complete; one
        // dropped part-way is not, and hyper closes its connection.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
#[path = "app_conns_tests.rs"]
mod tests;
