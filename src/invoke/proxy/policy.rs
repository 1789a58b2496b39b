//! Resiliency of proxied gRPC calls: the target app's `targets.apps` policy, applied as daprd's
//! proxy handler applies it. daprd cannot tell a unary call from a stream (it has no protos), so
//! the caller says: metadata `dapr-stream: true` (any of Go's truthy spellings) marks a stream.
//!
//! - **Unary** (no `dapr-stream`): each attempt is the whole call. Its answer is read whole
//!   inside the attempt (`buffer.rs`, at most `--max-body-size`), so the timeout covers it and
//!   its `grpc-status` decides: OK succeeds; any other code is a breaker failure and is retried
//!   when the retry's `matching.gRPCStatusCodes` allows it (all codes when unset). The last
//!   failing answer passes through verbatim. With retries, the request's one message is kept to
//!   replay it; a call sending a second message fails with daprd's FAILED_PRECONDITION.
//! - **Streams** (`dapr-stream: true`): only the handshake (resolve the target, connect) runs
//!   under the policy; the stream itself is never timed out or replayed, and its failures reach
//!   the caller as they are.
//!
//! A timeout answers DEADLINE_EXCEEDED `context deadline exceeded`; an open breaker UNKNOWN
//! `circuit breaker is open` (daprd returns gobreaker's plain error, which grpc-go reports as
//! UNKNOWN). Each attempt is counted in the invocation metrics; an attempt the timeout abandons
//! counts as DEADLINE_EXCEEDED, as daprd's cancelled context reports it.

use std::time::{Duration, Instant};

use axum::body::Body;
use http::{HeaderMap, Request, Response};

use super::buffer::{one_message, Answer};
use super::{GrpcProxy, ProxyError, UNAVAILABLE};
use crate::resiliency::retry::RetryMatching;
use crate::resiliency::{AttemptError, Policy, PolicyError};
use crate::runtime::metrics::Metrics;

/// The metadata key that marks a proxied call as a stream.
pub const STREAM_KEY: &str = "dapr-stream";

/// gRPC DEADLINE_EXCEEDED and CANCELLED, for attempts that never saw their answer.
const DEADLINE_EXCEEDED: i32 = 4;
const CANCELLED: i32 = 1;

/// Whether the caller marked the call as a stream (Go's `utils.IsTruthy`, as daprd reads it).
pub fn is_stream(headers: &HeaderMap) -> bool {
    headers.get(STREAM_KEY).and_then(|v| v.to_str().ok()).is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "y" | "yes" | "true" | "t" | "on" | "1"))
}

/// Why one attempt failed.
enum Failure {
    /// No answer from the target.
    Proxy(ProxyError),
    /// The target answered with a failing status; kept to pass it through.
    Answer(Answer),
}

impl GrpcProxy {
    /// A stream under `policy`: the handshake is retried, timed and counted by the breaker; the
    /// stream is sent once, outside it.
    pub(super) async fn stream_under(&self, policy: &Policy, id: &str, target: &str, req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let route = policy
            .run(|| async move {
                let route = self.route(target).await.map_err(AttemptError::Retriable)?;
                if let Some(m) = &self.metrics {
                    m.invoke_sent(id, true);
                }
                Ok(route)
            })
            .await
            .map_err(gave_up)?;
        let started = Instant::now();
        self.send_via(&route, req).await.inspect_err(|_| {
            if let Some(m) = &self.metrics {
                m.proxy_answered(id, true, UNAVAILABLE, started);
            }
        })
    }

    /// A unary call under `policy` (see the module header).
    pub(super) async fn unary_under(&self, policy: &Policy, id: &str, target: &str, req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let (parts, body) = req.into_parts();
        // Without retries the call runs once: its body streams through instead of being kept.
        let (replay, mut once) = match policy.retry() {
            Some(_) => (Some(one_message(body, self.max_message).await?), None),
            None => (None, Some(body)),
        };
        let matching = policy.retry().map(|r| r.matching.clone());
        let (matching, timeout) = (&matching, policy.timeout());
        let result = policy
            .run(|| {
                let body = replay.clone().map(Body::from).or_else(|| once.take());
                let req = body.map(|b| rebuild(&parts, b));
                async move {
                    let req = req.ok_or_else(|| AttemptError::Permanent(Failure::Proxy(ProxyError::Unreachable("the request was already sent".into()))))?;
                    let route = self.route(target).await.map_err(|e| AttemptError::Retriable(Failure::Proxy(e)))?;
                    let mut attempt = Attempt::start(self.metrics.as_ref(), id, timeout);
                    let answer = match self.send_via(&route, req).await {
                        Ok(resp) => Answer::read(resp, self.max_message).await,
                        Err(e) => Err(e),
                    };
                    let answer = answer.map_err(|e| {
                        let code = if matches!(e, ProxyError::TooLarge { .. }) { 8 } else { UNAVAILABLE };
                        attempt.finish(code);
                        classify(matching, code, Failure::Proxy(e))
                    })?;
                    let code = answer.code();
                    attempt.finish(code);
                    if code == 0 {
                        Ok(answer)
                    } else {
                        Err(classify(matching, code, Failure::Answer(answer)))
                    }
                }
            })
            .await;
        match result {
            Ok(answer) | Err(PolicyError::Operation(Failure::Answer(answer))) => Ok(answer.into_response()),
            Err(e) => Err(gave_up(e.map_operation(|f| match f {
                Failure::Proxy(e) => e,
                Failure::Answer(_) => ProxyError::Unreachable(String::new()),
            }))),
        }
    }
}

/// Retriable when the retry policy's gRPC matching allows `code`.
fn classify(matching: &Option<RetryMatching>, code: i32, f: Failure) -> AttemptError<Failure> {
    let retries = matching.as_ref().is_none_or(|m| u16::try_from(code).is_ok_and(|c| m.retries_grpc_code(c)));
    if retries {
        AttemptError::Retriable(f)
    } else {
        AttemptError::Permanent(f)
    }
}

/// A run that gave up, as the caller sees it.
fn gave_up(e: PolicyError<ProxyError>) -> ProxyError {
    match e {
        PolicyError::Operation(e) => e,
        PolicyError::Timeout(_) => ProxyError::DeadlineExceeded,
        other => ProxyError::Breaker(other.to_string()),
    }
}

/// The request again, with `body`: every attempt sends the same method, path and metadata.
fn rebuild(parts: &http::request::Parts, body: Body) -> Request<Body> {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

/// Counts one unary attempt: sent at the start, answered with its code at the end, or, when
/// the policy's timeout drops it first, with DEADLINE_EXCEEDED.
struct Attempt<'a> {
    metrics: Option<&'a Metrics>,
    id: &'a str,
    started: Instant,
    timeout: Option<Duration>,
    done: bool,
}

impl<'a> Attempt<'a> {
    fn start(metrics: Option<&'a Metrics>, id: &'a str, timeout: Option<Duration>) -> Self {
        if let Some(m) = metrics {
            m.invoke_sent(id, false);
        }
        Self { metrics, id, started: Instant::now(), timeout, done: false }
    }

    fn finish(&mut self, code: i32) {
        self.done = true;
        if let Some(m) = self.metrics {
            m.proxy_answered(self.id, false, code, self.started);
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Dropped unfinished: the policy's timeout, or the caller went away.
            let code = if self.timeout.is_some() { DEADLINE_EXCEEDED } else { CANCELLED };
            self.finish(code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dapr_stream_is_read_as_go_reads_a_bool() {
        for (v, want) in [("true", true), ("1", true), (" Yes ", true), ("on", true), ("t", true), ("false", false), ("0", false), ("", false), ("maybe", false)] {
            let mut h = HeaderMap::new();
            h.insert(STREAM_KEY, http::HeaderValue::from_str(v).unwrap());
            assert_eq!(is_stream(&h), want, "{v:?}");
        }
        assert!(!is_stream(&HeaderMap::new()));
    }

    #[test]
    fn retry_matching_decides_what_is_retried() {
        let only_unavailable = Some(RetryMatching { grpc_status_codes: vec![14..=14], ..Default::default() });
        let f = || Failure::Proxy(ProxyError::DeadlineExceeded);
        assert!(matches!(classify(&only_unavailable, 14, f()), AttemptError::Retriable(_)));
        assert!(matches!(classify(&only_unavailable, 13, f()), AttemptError::Permanent(_)));
        assert!(matches!(classify(&None, 13, f()), AttemptError::Retriable(_)), "no matching: every code");
    }
}
