//! What the proxy keeps of a call when a resiliency policy must see it end to end: the
//! request's one message (replayed by retries) and the answer read whole (so a timeout covers
//! it and its `grpc-status` can be judged before anything reaches the caller).
//!
//! Both are bounded by `--max-body-size`, checked on the gRPC framing (a 5-byte prefix: a flag
//! and the message length) so an oversized message is refused with grpc-go's words before it is
//! all read.

use std::convert::Infallible;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::ProxyError;
use crate::runtime::metrics::grpc_status;

/// Length of a gRPC message prefix.
const PREFIX: usize = 5;

/// The length a gRPC message prefix at the start of `buf` declares, when it is all there.
fn declared_len(buf: &[u8]) -> Option<usize> {
    let prefix: [u8; 4] = buf.get(1..PREFIX)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(prefix)).ok()
}

/// Reads a request that may hold one message only (a unary call under a retry policy). A second
/// message is daprd's FAILED_PRECONDITION, refused as soon as it starts arriving.
pub(super) async fn one_message(mut body: Body, max: usize) -> Result<Bytes, ProxyError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ProxyError::Unreachable(format!("reading the request: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        buf.extend_from_slice(&data);
        if let Some(len) = declared_len(&buf) {
            if len > max {
                return Err(ProxyError::TooLarge { verb: "trying to send", size: len, max });
            }
            if buf.len() > PREFIX + len {
                return Err(ProxyError::RetryOnStream);
            }
        }
    }
    Ok(buf.freeze())
}

/// The largest message in `buf` (a run of prefixed messages, the last possibly partial) when it
/// is over `max`.
fn oversized(buf: &[u8], max: usize) -> Option<usize> {
    let mut at = 0;
    while let Some(len) = buf.get(at..).and_then(declared_len) {
        if len > max {
            return Some(len);
        }
        at += PREFIX + len;
    }
    None
}

/// A target's answer, read whole.
pub(super) struct Answer {
    parts: http::response::Parts,
    data: Bytes,
    trailers: Option<HeaderMap>,
}

impl Answer {
    /// Reads `resp` to its end. Every message is held to `max`, and so is the whole answer: a
    /// stream that keeps answering is a call that should have said `dapr-stream: true`.
    pub(super) async fn read(resp: Response<Body>, max: usize) -> Result<Self, ProxyError> {
        let (parts, mut body) = resp.into_parts();
        let mut data = BytesMut::new();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ProxyError::Unreachable(format!("connection error: {e}")))?;
            match frame.into_data() {
                Ok(d) => {
                    data.extend_from_slice(&d);
                    if let Some(size) = oversized(&data, max) {
                        return Err(ProxyError::TooLarge { verb: "received", size, max });
                    }
                    if data.len() > max.saturating_add(PREFIX) {
                        return Err(ProxyError::TooLarge { verb: "received", size: data.len() - PREFIX, max });
                    }
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers = Some(t);
                    }
                }
            }
        }
        Ok(Self { parts, data: data.freeze(), trailers })
    }

    /// The call's gRPC status: the trailers', else a trailers-only answer's headers', else
    /// UNKNOWN (an answer that ended without one).
    pub(super) fn code(&self) -> i32 {
        self.trailers.as_ref().and_then(grpc_status).or_else(|| grpc_status(&self.parts.headers)).unwrap_or(2)
    }

    /// The answer as it came: headers, messages, trailers.
    pub(super) fn into_response(self) -> Response<Body> {
        let mut frames = Vec::with_capacity(2);
        if !self.data.is_empty() {
            frames.push(Ok::<_, Infallible>(Frame::data(self.data)));
        }
        if let Some(t) = self.trailers {
            frames.push(Ok(Frame::trailers(t)));
        }
        Response::from_parts(self.parts, Body::new(StreamBody::new(futures::stream::iter(frames))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(payload: &[u8]) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        m.extend_from_slice(payload);
        m
    }

    fn body(chunks: Vec<Vec<u8>>) -> Body {
        let frames = chunks.into_iter().map(|c| Ok::<_, Infallible>(Frame::data(Bytes::from(c))));
        Body::new(StreamBody::new(futures::stream::iter(frames.collect::<Vec<_>>())))
    }

    #[tokio::test]
    async fn one_message_is_kept_and_a_second_refused() {
        let m = msg(b"hello");
        let (a, b) = m.split_at(3);
        assert_eq!(one_message(body(vec![a.to_vec(), b.to_vec()]), 100).await.unwrap(), Bytes::from(m.clone()));
        let two = [msg(b"a"), msg(b"b")].concat();
        assert!(matches!(one_message(body(vec![two]), 100).await, Err(ProxyError::RetryOnStream)));
        let err = one_message(body(vec![msg(&[7; 50])]), 10).await.unwrap_err();
        assert_eq!(err.to_string(), "grpc: trying to send message larger than max (50 vs. 10)");
    }

    #[tokio::test]
    async fn answers_are_read_whole_and_bounded() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
        let frames = vec![Ok::<_, Infallible>(Frame::data(Bytes::from(msg(b"x")))), Ok(Frame::trailers(trailers))];
        let resp = Response::new(Body::new(StreamBody::new(futures::stream::iter(frames))));
        let a = Answer::read(resp, 100).await.unwrap();
        assert_eq!(a.code(), 14);
        let back = a.into_response().into_body().collect().await.unwrap();
        assert_eq!(back.trailers().and_then(grpc_status), Some(14));
        assert_eq!(back.to_bytes(), Bytes::from(msg(b"x")));

        let err = Answer::read(Response::new(body(vec![msg(&[1; 40])])), 16).await.err().unwrap();
        assert_eq!(err.to_string(), "grpc: received message larger than max (40 vs. 16)");
        let many = (0..10).map(|_| msg(b"0123456789")).collect::<Vec<_>>();
        assert!(matches!(Answer::read(Response::new(body(many)), 32).await, Err(ProxyError::TooLarge { .. })));
        assert_eq!(Answer::read(Response::new(Body::empty()), 8).await.unwrap().code(), 2, "no status: UNKNOWN");
    }
}
