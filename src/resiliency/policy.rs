//! `Policy`: the timeout, retry and circuit breaker that apply to one target, and `run`, which
//! drives an operation through them.
//!
//! Layering is daprd's: every attempt gets the timeout; the circuit breaker wraps each attempt (a
//! timed-out attempt is a breaker failure); the retry policy repeats failed attempts with its
//! backoff. A breaker that rejects a call ends the run at once (no retry), as does an error the
//! operation marks permanent. A policy with nothing configured calls the operation once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::breaker::{BreakerEvent, BreakerState, Rejection, SharedBreaker, Verdict};
use super::retry::RetrySpec;
use crate::runtime::metrics::{PolicyKind, PolicyMetrics};

/// An attempt's failure, saying whether another attempt may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptError<E> {
    /// A transient failure: retried when the policy has retries.
    Retriable(E),
    /// A failure no retry can fix (an ETag mismatch, a bad request): ends the run.
    Permanent(E),
}

impl<E> AttemptError<E> {
    /// The error inside.
    pub fn into_inner(self) -> E {
        match self {
            AttemptError::Retriable(e) | AttemptError::Permanent(e) => e,
        }
    }

    fn is_retriable(&self) -> bool {
        matches!(self, AttemptError::Retriable(_))
    }
}

/// Why a run gave up.
///
/// The messages are daprd's (Go's context and gobreaker errors), because daprd puts them into
/// the API error message, e.g. `fail to get k from state store s: context deadline exceeded`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError<E> {
    /// The operation's own error, from the last attempt.
    #[error("{0}")]
    Operation(E),
    /// The last attempt did not finish within the policy timeout.
    #[error("context deadline exceeded")]
    Timeout(Duration),
    /// The target's circuit breaker is open: the call failed fast.
    #[error("circuit breaker is open")]
    CircuitBreakerOpen {
        /// Breaker instance name.
        breaker: String,
    },
    /// The breaker is half-open and already has its probe calls in flight.
    #[error("too many requests")]
    CircuitBreakerTooManyRequests {
        /// Breaker instance name.
        breaker: String,
    },
}

impl<E> PolicyError<E> {
    /// Whether the circuit breaker rejected the call.
    pub fn is_circuit_breaker(&self) -> bool {
        matches!(self, PolicyError::CircuitBreakerOpen { .. } | PolicyError::CircuitBreakerTooManyRequests { .. })
    }

    /// Maps the operation error.
    pub fn map_operation<F>(self, f: impl FnOnce(E) -> F) -> PolicyError<F> {
        match self {
            PolicyError::Operation(e) => PolicyError::Operation(f(e)),
            PolicyError::Timeout(d) => PolicyError::Timeout(d),
            PolicyError::CircuitBreakerOpen { breaker } => PolicyError::CircuitBreakerOpen { breaker },
            PolicyError::CircuitBreakerTooManyRequests { breaker } => PolicyError::CircuitBreakerTooManyRequests { breaker },
        }
    }
}

/// The resiliency policy of one target. Cheap to clone; clones share the breaker instance.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    name: Arc<str>,
    timeout: Option<Duration>,
    retry: Option<Arc<RetrySpec>>,
    breaker: Option<Arc<SharedBreaker>>,
    /// Where the policy's metrics go (`dapr_resiliency_*`), when recorded.
    metrics: Option<Arc<PolicyMetrics>>,
}

impl Policy {
    /// A policy from its parts; `name` is for logs (`component[orders] output`).
    pub fn new(name: impl Into<Arc<str>>, timeout: Option<Duration>, retry: Option<Arc<RetrySpec>>, breaker: Option<Arc<SharedBreaker>>) -> Self {
        Self { name: name.into(), timeout: timeout.filter(|t| !t.is_zero()), retry, breaker, metrics: None }
    }

    /// Reports to `metrics`: counts this lookup now (daprd counts each part of a policy when a
    /// call looks it up), and activations as the policy runs.
    pub fn with_metrics(mut self, metrics: Option<PolicyMetrics>) -> Self {
        if let Some(m) = metrics.filter(|_| !self.is_noop()) {
            if self.timeout.is_some() {
                m.executed(PolicyKind::Timeout, "");
            }
            if self.retry.is_some() {
                m.executed(PolicyKind::Retry, "");
            }
            if let Some(b) = &self.breaker {
                m.executed(PolicyKind::CircuitBreaker, b.state().as_str());
            }
            self.metrics = Some(Arc::new(m));
        }
        self
    }

    /// No timeout, no retry, no breaker.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether nothing is configured.
    pub fn is_noop(&self) -> bool {
        self.timeout.is_none() && self.retry.is_none() && self.breaker.is_none()
    }

    /// The per-attempt timeout.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The retry policy.
    pub fn retry(&self) -> Option<&RetrySpec> {
        self.retry.as_deref()
    }

    /// The breaker's current state, when there is one.
    pub fn breaker_state(&self) -> Option<BreakerState> {
        self.breaker.as_ref().map(|b| b.state())
    }

    /// Runs `op` under the policy. `op` is called once per attempt and classifies its own error.
    ///
    /// A run dropped mid-attempt (the caller went away) counts as a breaker failure, so a
    /// half-open breaker never waits forever for a probe's outcome.
    pub async fn run<T, E, F, Fut>(&self, mut op: F) -> Result<T, PolicyError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AttemptError<E>>>,
    {
        if self.is_noop() {
            return op().await.map_err(|e| PolicyError::Operation(e.into_inner()));
        }
        let start = Instant::now();
        let mut backoff = self.retry.as_deref().map(RetrySpec::backoff);
        let mut retried = false;
        let mut timed_out = false;
        loop {
            let (error, retriable) = match self.attempt(&mut op).await {
                Ok(v) => {
                    if retried {
                        tracing::info!(policy = %self.name, "recovered processing operation");
                    }
                    return Ok(v);
                }
                Err(e) => e,
            };
            let delay = match backoff.as_mut() {
                Some(b) if retriable => b.next(start.elapsed(), random_unit()),
                _ => None,
            };
            if let Some(m) = &self.metrics {
                // daprd reports a timeout once per call.
                if matches!(error, PolicyError::Timeout(_)) && !std::mem::replace(&mut timed_out, true) {
                    m.activated(PolicyKind::Timeout, "");
                }
            }
            let Some(delay) = delay else { return Err(error) };
            if let Some(m) = &self.metrics {
                m.activated(PolicyKind::Retry, "");
            }
            if !retried {
                tracing::info!(policy = %self.name, "error processing operation; retrying");
                retried = true;
            }
            tracing::debug!(policy = %self.name, error = %ErrorKind(&error), delay = ?delay, "attempt failed");
            tokio::time::sleep(delay).await;
        }
    }

    /// One attempt through the breaker and the timeout; the flag says whether to retry.
    async fn attempt<T, E, F, Fut>(&self, op: &mut F) -> Result<T, (PolicyError<E>, bool)>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AttemptError<E>>>,
    {
        let before = self.metrics.as_ref().and(self.breaker.as_ref()).map(|b| b.state());
        let mut ticket = match &self.breaker {
            None => None,
            Some(b) => match b.apply(BreakerEvent::Request).verdict {
                Verdict::Admitted { generation } => Some(Ticket { breaker: b, generation, done: false }),
                Verdict::Rejected(Rejection::Open) => return Err((PolicyError::CircuitBreakerOpen { breaker: b.name().to_string() }, false)),
                Verdict::Rejected(Rejection::TooManyRequests) => {
                    return Err((PolicyError::CircuitBreakerTooManyRequests { breaker: b.name().to_string() }, false))
                }
                Verdict::Recorded => None,
            },
        };
        let result = match self.timeout {
            None => op().await.map_err(|e| {
                let retriable = e.is_retriable();
                (PolicyError::Operation(e.into_inner()), retriable)
            }),
            Some(t) => match tokio::time::timeout(t, op()).await {
                Ok(r) => r.map_err(|e| {
                    let retriable = e.is_retriable();
                    (PolicyError::Operation(e.into_inner()), retriable)
                }),
                Err(_) => Err((PolicyError::Timeout(t), true)),
            },
        };
        if let Some(t) = ticket.as_mut() {
            t.finish(result.is_ok());
        }
        if let (Some(m), Some(b), Some(before)) = (&self.metrics, &self.breaker, before) {
            let now = b.state();
            if now != before {
                m.activated(PolicyKind::CircuitBreaker, now.as_str());
            }
        }
        result
    }
}

/// An admitted call's pending outcome; dropping it unfinished records a failure.
struct Ticket<'a> {
    breaker: &'a SharedBreaker,
    generation: u64,
    done: bool,
}

impl Ticket<'_> {
    fn finish(&mut self, success: bool) {
        self.done = true;
        let generation = self.generation;
        self.breaker.apply(if success { BreakerEvent::Success { generation } } else { BreakerEvent::Failure { generation } });
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.apply(BreakerEvent::Failure { generation: self.generation });
        }
    }
}

/// Logs what kind of failure an attempt had without requiring `E: Display`.
struct ErrorKind<'a, E>(&'a PolicyError<E>);

impl<E> std::fmt::Display for ErrorKind<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            PolicyError::Operation(_) => "operation error",
            PolicyError::Timeout(_) => "context deadline exceeded",
            PolicyError::CircuitBreakerOpen { .. } => "circuit breaker is open",
            PolicyError::CircuitBreakerTooManyRequests { .. } => "too many requests",
        })
    }
}

/// A uniform number in `[0, 1)` for backoff jitter (53 random bits from a v4 UUID).
fn random_unit() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::resiliency::breaker::BreakerSpec;
    use crate::resiliency::retry::BackoffPolicy;
    use crate::resiliency::trip::TripExpr;

    fn constant(interval_ms: u64, max_retries: Option<u64>) -> Option<Arc<RetrySpec>> {
        Some(Arc::new(RetrySpec {
            backoff: BackoffPolicy::Constant { interval: Duration::from_millis(interval_ms) },
            max_retries,
            ..Default::default()
        }))
    }

    fn breaker(trip: &str, timeout_s: u64) -> Option<Arc<SharedBreaker>> {
        let spec = BreakerSpec { timeout: Duration::from_secs(timeout_s), trip: TripExpr::parse(trip).unwrap(), ..Default::default() };
        Some(Arc::new(SharedBreaker::new("cb-target".into(), Arc::new(spec))))
    }

    /// An operation failing its first `n` attempts.
    async fn flaky(calls: &AtomicU32, n: u32) -> Result<u32, AttemptError<String>> {
        let i = calls.fetch_add(1, Ordering::SeqCst);
        if i < n {
            Err(AttemptError::Retriable(format!("failure {i}")))
        } else {
            Ok(i)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_with_the_backoff_until_success() {
        let p = Policy::new("t", None, constant(100, Some(5)), None);
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        assert_eq!(p.run(|| flaky(&calls, 3)).await, Ok(3));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(start.elapsed(), Duration::from_millis(300), "three waits of 100ms");
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_retries_with_the_last_error() {
        let p = Policy::new("t", None, constant(100, Some(2)), None);
        let calls = AtomicU32::new(0);
        assert_eq!(p.run(|| flaky(&calls, 10)).await, Err(PolicyError::Operation("failure 2".to_string())));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let calls = AtomicU32::new(0);
        assert!(Policy::none().run(|| flaky(&calls, 1)).await.is_err(), "no policy, no retry");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let p = Policy::new("t", None, constant(100, None), None);
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = p
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(AttemptError::Permanent("etag mismatch"))
            })
            .await;
        assert_eq!(r, Err(PolicyError::Operation("etag mismatch")));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn each_attempt_gets_the_timeout_and_timeouts_are_retried() {
        let p = Policy::new("t", Some(Duration::from_secs(1)), constant(500, Some(1)), None);
        let start = Instant::now();
        let calls = AtomicU32::new(0);
        let r: Result<(), PolicyError<()>> = p
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                std::future::pending().await
            })
            .await;
        assert_eq!(r, Err(PolicyError::Timeout(Duration::from_secs(1))));
        assert_eq!(PolicyError::<String>::Timeout(Duration::from_secs(1)).to_string(), "context deadline exceeded");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(start.elapsed(), Duration::from_millis(2500));
    }

    #[tokio::test(start_paused = true)]
    async fn open_breaker_fails_fast_without_retrying_then_half_opens() {
        let p = Policy::new("t", None, None, breaker("consecutiveFailures >= 2", 10));
        let calls = AtomicU32::new(0);
        for _ in 0..2 {
            assert!(matches!(p.run(|| flaky(&calls, 100)).await, Err(PolicyError::Operation(_))));
        }
        assert_eq!(p.breaker_state(), Some(BreakerState::Open));
        let with_retry = Policy { retry: constant(1, None), ..p.clone() };
        let r = with_retry.run(|| flaky(&calls, 100)).await.unwrap_err();
        assert_eq!(r, PolicyError::CircuitBreakerOpen { breaker: "cb-target".into() });
        assert_eq!(r.to_string(), "circuit breaker is open");
        assert!(r.is_circuit_breaker());
        assert_eq!(calls.load(Ordering::SeqCst), 2, "the open breaker never called the operation");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(p.breaker_state(), Some(BreakerState::HalfOpen));
        assert_eq!(p.run(|| async { Ok::<_, AttemptError<String>>(7) }).await, Ok(7));
        assert_eq!(p.breaker_state(), Some(BreakerState::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_count_as_breaker_failures_and_abandoned_probes_release_the_half_open_slot() {
        let p = Policy::new("t", Some(Duration::from_millis(100)), None, breaker("consecutiveFailures >= 1", 5));
        let r: Result<(), PolicyError<()>> = p.run(std::future::pending).await;
        assert_eq!(r, Err(PolicyError::Timeout(Duration::from_millis(100))));
        assert_eq!(p.breaker_state(), Some(BreakerState::Open));
        tokio::time::advance(Duration::from_secs(5)).await;
        // A probe whose caller gives up (the future is dropped) counts as a failure: re-open.
        let probe = p.run(std::future::pending::<Result<(), AttemptError<()>>>);
        assert!(tokio::time::timeout(Duration::from_millis(10), probe).await.is_err());
        assert_eq!(p.breaker_state(), Some(BreakerState::Open));
    }
}
