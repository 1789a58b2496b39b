//! `RemoteInvoker`: the caller side of the sidecar-to-sidecar protocol.
//!
//! One HTTP/2 connection per target address ([`PeerConn`], hyper's own client with no buffer task
//! in front), reused by every call (a copy-on-write map behind `arc-swap`: readers never lock,
//! new targets are rare). Bodies are streamed in chunks over `CallLocalStream` in both
//! directions; a body of known length up to one chunk rides in the lead frame instead, so the
//! whole call (HEADERS, one DATA frame, END_STREAM) leaves in one write and the target sees it
//! complete at once (daprd reads a payload from the lead frame too). A call is one attempt: a failed connection is
//! `InvokeError::Unavailable`, and the caller (api/invoke.rs) decides whether to retry it, with
//! daprd's built-in service retries or the user's policy, never both.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use rapr_proto::common::v1 as common;
use rapr_proto::internals::v1 as internals;
use rapr_proto::internals::v1::service_invocation_client::ServiceInvocationClient;
use super::message::{header_map, CALLEE, CALLER};
use super::peer::PeerConn;
use crate::runtime::metrics::Metrics;
use super::InvokeError;

/// Largest chunk of a streamed body.
pub const CHUNK: usize = 64 * 1024;

/// Calls other sidecars.
pub struct RemoteInvoker {
    channels: ArcSwap<HashMap<String, PeerConn>>,
    max_message: usize,
    metrics: Option<Metrics>,
}

impl RemoteInvoker {
    /// An invoker whose messages may be up to `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self { channels: ArcSwap::from_pointee(HashMap::new()), max_message, metrics: None }
    }

    /// Counts calls in `metrics` (`dapr_runtime_service_invocation_*`, `dapr_grpc_io_client_*`).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn sent(&self, req: &internals::InternalInvokeRequest, streaming: bool) -> Option<(Metrics, String, Instant)> {
        let m = self.metrics.clone().filter(Metrics::enabled)?;
        let target = req.metadata.get(CALLEE).and_then(|v| v.values.first()).cloned().unwrap_or_default();
        m.invoke_sent(&target, streaming);
        Some((m, target, Instant::now()))
    }

    /// The (cached) connection to the sidecar at `addr`; one connection attempt, no retry. A
    /// connection that closed is replaced.
    pub(crate) async fn channel(&self, addr: &str) -> Result<PeerConn, InvokeError> {
        if let Some(c) = self.channels.load().get(addr).filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        match PeerConn::connect(addr).await {
            Ok(ch) => {
                self.channels.rcu(|m| {
                    let mut m = (**m).clone();
                    m.insert(addr.to_string(), ch.clone());
                    m
                });
                Ok(ch)
            }
            Err(e) => Err(InvokeError::Unavailable(format!("rpc error: code = Unavailable desc = connection error: {e}"))),
        }
    }

    /// Forgets the connection to `addr` (it failed).
    pub(crate) fn evict(&self, addr: &str) {
        self.channels.rcu(|m| {
            let mut m = (**m).clone();
            m.remove(addr);
            m
        });
    }

    fn client(&self, ch: PeerConn) -> ServiceInvocationClient<PeerConn> {
        ServiceInvocationClient::new(ch).max_decoding_message_size(self.max_message.max(CHUNK * 2)).max_encoding_message_size(self.max_message.max(CHUNK * 2))
    }

    fn status_error(&self, addr: &str, s: tonic::Status) -> InvokeError {
        // A status carrying a source was made here from a transport failure (the connection
        // closed or reset before an answer), never sent by the target: grpc-go reports those
        // as UNAVAILABLE, and so does rapr.
        let transport = std::error::Error::source(&s).is_some() && s.code() != tonic::Code::DeadlineExceeded;
        if transport || matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unauthenticated) {
            self.evict(addr);
            return InvokeError::Unavailable(format!("rpc error: code = Unavailable desc = {}", s.message()));
        }
        if s.code() == tonic::Code::Unknown {
            self.evict(addr);
            return InvokeError::Unreachable(s.message().to_string());
        }
        InvokeError::App(s.message().to_string())
    }

    /// A whole-message call (used by gRPC `InvokeService`).
    pub async fn call_unary(&self, addr: &str, req: internals::InternalInvokeRequest) -> Result<internals::InternalInvokeResponse, InvokeError> {
        let sent = self.sent(&req, false);
        // daprd's unary client interceptor records the message sizes (the answer's only on success).
        let req_size = sent.as_ref().map_or(0, |_| prost::Message::encoded_len(&req) as u64);
        let ch = self.channel(addr).await?;
        let res = self.client(ch).call_local(with_trace_headers(&req.metadata, req.clone())).await.map(|r| r.into_inner());
        if let Some((m, target, started)) = sent {
            let (code, status, res_size) = match &res {
                Ok(r) => (tonic::Code::Ok, r.status.as_ref().map_or(0, |s| s.code), prost::Message::encoded_len(r) as u64),
                Err(s) => (s.code(), s.code() as i32, 0),
            };
            m.invoke_answered(&target, false, "/dapr.proto.internals.v1.ServiceInvocation/CallLocal", code, status, started, Some((req_size, res_size)));
        }
        res.map_err(|s| self.status_error(addr, s))
    }

    /// A streamed call: `req` first, then `body` in chunks; the answer's body streams back.
    pub async fn call_stream(&self, addr: &str, req: internals::InternalInvokeRequest, body: Body) -> Result<Response<Body>, InvokeError> {
        let sent = self.sent(&req, true);
        let res = self.call_stream_inner(addr, req, body).await;
        if let Some((m, target, started)) = sent {
            let (code, status) = match &res {
                Ok(r) => (tonic::Code::Ok, i32::from(r.status().as_u16())),
                Err(InvokeError::Unreachable(_) | InvokeError::Unavailable(_)) => (tonic::Code::Unavailable, tonic::Code::Unavailable as i32),
                Err(_) => (tonic::Code::Internal, tonic::Code::Internal as i32),
            };
            // A stream: daprd's stream client interceptor records no sizes.
            m.invoke_answered(&target, true, "/dapr.proto.internals.v1.ServiceInvocation/CallLocalStream", code, status, started, None);
        }
        res
    }

    async fn call_stream_inner(&self, addr: &str, req: internals::InternalInvokeRequest, body: Body) -> Result<Response<Body>, InvokeError> {
        use axum::body::HttpBody as _;
        let trace = with_trace_headers(&req.metadata, ());
        // A small body of known length is read first and sent in the lead frame: the request then
        // ends with its first DATA frame, and hyper writes it whole (no separate END_STREAM).
        let small = body.size_hint().exact().is_some_and(|n| n <= CHUNK as u64);
        let (frames, body_failed) = if small {
            let data = collect(body).await?;
            let payload = (!data.is_empty()).then(|| common::StreamPayload { data: data.to_vec(), seq: 0 });
            let lead = internals::InternalInvokeRequestStream { request: Some(req), payload };
            (futures::future::Either::Left(futures::stream::iter([lead])), None)
        } else {
            // A caller's body that fails (over the size limit, or cut) must not reach the target
            // as a shorter, complete request: the call is dropped instead (the target sees it
            // cancelled) and the caller gets the body's error, as daprd's failed read answers.
            let (body, body_failed) = watch_body(body);
            (futures::future::Either::Right(request_frames(req, body)), Some(body_failed))
        };
        let ch = self.channel(addr).await?;
        let mut call = tonic::Request::new(frames);
        *call.metadata_mut() = trace.into_parts().0;
        let lead = async {
            let resp = self.client(ch).call_local_stream(call).await.map_err(|s| self.status_error(addr, s))?;
            let mut stream = resp.into_inner();
            let lead = stream.message().await.map_err(|s| self.status_error(addr, s))?;
            Ok::<_, InvokeError>((lead, stream))
        };
        let failed = async {
            match body_failed {
                Some(rx) => rx.await.ok(),
                None => None,
            }
        };
        let (lead, stream) = tokio::select! {
            r = lead => r?,
            Some(e) = failed => return Err(body_error(e)),
        };
        let lead = lead.ok_or_else(|| InvokeError::Unreachable("the target closed the stream without answering".into()))?;
        let meta = lead.response.ok_or_else(|| InvokeError::Unreachable("response does not contain the required fields in the leading chunk".into()))?;
        let code = meta.status.as_ref().map(|s| s.code).unwrap_or(200);
        let first = lead.payload.map(|p| Bytes::from(p.data));
        let body = match body_after_lead(first.clone(), stream, |f| f.payload.map(|p| p.data)).await {
            Ok(b) => b,
            // The target failed after its lead: the caller's body ends with the error.
            Err(e) => Body::from_stream(futures::stream::iter(first.filter(|b| !b.is_empty()).map(Ok).into_iter().chain([Err(e)]))),
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = StatusCode::from_u16(u16::try_from(code).unwrap_or(500)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        *resp.headers_mut() = header_map(&meta.headers);
        if let Some(ct) = meta.message.as_ref().map(|m| m.content_type.clone()).filter(|c| !c.is_empty()) {
            if let Ok(v) = ct.parse() {
                resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
            }
        }
        Ok(resp)
    }
}

/// Headers the target sidecar's server reads from the transport too: the trace context (its
/// server span is a child of this hop's) and the caller's id.
const TRANSPORT_HEADERS: &[&str] = &["traceparent", "tracestate", CALLER];

/// `msg` as a request whose gRPC metadata repeats the call's `TRANSPORT_HEADERS`, the trace
/// context also as `grpc-trace-bin` (daprd's `SpanContextToGRPCMetadata` sends both).
fn with_trace_headers<T>(metadata: &super::message::Metadata, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    for k in TRANSPORT_HEADERS {
        if let Some(v) = metadata.get(*k).and_then(|v| v.values.first()).and_then(|v| v.parse().ok()) {
            r.metadata_mut().insert(*k, v);
        }
    }
    let binary = metadata.get("traceparent").and_then(|v| v.values.first()).and_then(|v| crate::runtime::trace_context::parse_traceparent(v)).and_then(|sc| crate::runtime::trace_context::to_binary(&sc));
    if let Some(b) = binary {
        r.metadata_mut().insert_bin(crate::runtime::trace_context::GRPC_TRACE_BIN, tonic::metadata::MetadataValue::from_bytes(&b));
    }
    r
}

/// The lead frame, then `body` as numbered payload frames of at most `CHUNK` bytes. The stream is
/// read by the call itself as HTTP/2 flow control allows: no task and no channel per call. A body
/// that fails mid-way ends the frames there, as a client that hangs up does.
pub fn request_frames(req: internals::InternalInvokeRequest, body: Body) -> impl futures::Stream<Item = internals::InternalInvokeRequestStream> + Send + 'static {
    let lead = internals::InternalInvokeRequestStream { request: Some(req), payload: None };
    let payloads = chunk_frames(body, |data, seq| internals::InternalInvokeRequestStream { request: None, payload: Some(common::StreamPayload { data, seq }) }).filter_map(|f| std::future::ready(f.ok()));
    futures::stream::once(std::future::ready(lead)).chain(payloads)
}

/// `body` cut into frames of at most `CHUNK` bytes, numbered from 0 by `make`; a body error is
/// the last item.
pub fn chunk_frames<F: Send + 'static>(body: Body, make: fn(Vec<u8>, u64) -> F) -> impl futures::Stream<Item = Result<F, axum::Error>> + Send + 'static {
    body.into_data_stream()
        .scan((0u64, false), move |(seq, failed), chunk| {
            if *failed {
                return std::future::ready(None);
            }
            let items: Vec<Result<F, axum::Error>> = match chunk {
                Ok(c) => c
                    .chunks(CHUNK)
                    .map(|piece| {
                        let f = make(piece.to_vec(), *seq);
                        *seq += 1;
                        Ok(f)
                    })
                    .collect(),
                Err(e) => {
                    *failed = true;
                    vec![Err(e)]
                }
            };
            std::future::ready(Some(futures::stream::iter(items)))
        })
        .flatten()
}

/// Drains what is left of an HTTP/2 stream when its reader is dropped early.
///
/// HTTP servers and clients stop reading a body once its `content-length` is met, dropping the
/// gRPC stream before its trailers: h2 then resets the stream, and past 1,024 such resets it
/// tears down the one connection every call to that peer shares (`too_many_internal_resets`).
/// Reading to the end instead ends each stream cleanly.
struct DrainOnDrop<T: Send + 'static>(Option<tonic::Streaming<T>>);

impl<T: Send + 'static> Drop for DrainOnDrop<T> {
    fn drop(&mut self) {
        let Some(mut s) = self.0.take() else { return };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { while let Ok(Some(_)) = s.message().await {} });
        }
    }
}

/// The payload bytes of a stream of invocation frames, draining the stream if dropped early.
pub fn payloads<T: Send + 'static>(stream: tonic::Streaming<T>, payload: fn(T) -> Option<Vec<u8>>) -> impl futures::Stream<Item = Result<Bytes, tonic::Status>> + Send {
    futures::stream::unfold(DrainOnDrop(Some(stream)), move |mut guard| async move {
        loop {
            let s = guard.0.as_mut()?;
            match s.message().await {
                Ok(Some(frame)) => match payload(frame) {
                    Some(data) => return Some((Ok(Bytes::from(data)), guard)),
                    None => continue,
                },
                Ok(None) => {
                    // Ended cleanly: nothing left to drain.
                    drop(guard.0.take());
                    return None;
                }
                Err(e) => {
                    drop(guard.0.take());
                    return Some((Err(e), guard));
                }
            }
        }
    })
}

/// The body of a streamed call whose lead frame came with `first` (its payload, if it carried
/// one), the rest read from `stream`. A lead carrying the payload is (from rapr) the whole body:
/// the stream is read on to its end here, so the body has a known length and the stream ends
/// cleanly, with no drain task when the reader stops at the content-length. Used by both sides
/// of `CallLocalStream`.
pub async fn body_after_lead<T: Send + 'static>(first: Option<Bytes>, mut stream: tonic::Streaming<T>, payload: fn(T) -> Option<Vec<u8>>) -> Result<Body, tonic::Status> {
    let carried = first.is_some();
    let first = first.filter(|b| !b.is_empty());
    let prefix = |second: Option<Bytes>| futures::stream::iter(first.clone().into_iter().chain(second).map(Ok::<_, tonic::Status>));
    if !carried {
        return Ok(Body::from_stream(prefix(None).chain(payloads(stream, payload))));
    }
    match stream.message().await? {
        None => Ok(Body::from(first.clone().unwrap_or_default())),
        Some(frame) => {
            let second = payload(frame).map(Bytes::from).filter(|b| !b.is_empty());
            Ok(Body::from_stream(prefix(second).chain(payloads(stream, payload))))
        }
    }
}

/// Reads a body to the end (for whole-message calls).
pub async fn collect(body: Body) -> Result<Bytes, InvokeError> {
    body.collect().await.map(|c| c.to_bytes()).map_err(body_error)
}

/// A caller's body error: over `--max-body-size` is daprd's `stream too large`.
pub fn body_error(e: axum::Error) -> InvokeError {
    // Each body adapter may wrap the error in one more `axum::Error`: unwrap them all.
    let mut inner = e.into_inner();
    loop {
        if inner.is::<http_body_util::LengthLimitError>() {
            return InvokeError::TooLarge;
        }
        match inner.downcast::<axum::Error>() {
            Ok(wrapped) => inner = wrapped.into_inner(),
            Err(other) => return InvokeError::InvalidRequest(other.to_string()),
        }
    }
}

/// `body`, and a receiver told of its error; after an error the body never ends (its reader is
/// to be dropped).
fn watch_body(body: Body) -> (Body, tokio::sync::oneshot::Receiver<axum::Error>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let stream = futures::stream::unfold((body.into_data_stream(), Some(tx)), |(mut s, mut tx)| async move {
        match s.next().await {
            Some(Ok(chunk)) => Some((Ok::<Bytes, axum::Error>(chunk), (s, tx))),
            Some(Err(e)) => {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(e);
                }
                futures::future::pending().await
            }
            None => None,
        }
    });
    (Body::from_stream(stream), rx)
}

/// Shared handle.
pub type SharedInvoker = Arc<RemoteInvoker>;
