//! Circuit breakers: a pure state machine (`Breaker::apply(event, now)`) and the shared instance
//! one target's calls go through (`SharedBreaker`).
//!
//! Semantics are daprd's (sony/gobreaker underneath): closed counts requests and outcomes, and a
//! failure that makes `trip` true opens it; `interval` (when non-zero) clears the closed counts
//! periodically; open rejects every call until `timeout` has passed, then half-open admits
//! `maxRequests` probes: that many consecutive successes close it, one failure re-opens it.
//! Each state change starts a new generation, and outcomes of calls admitted in an older
//! generation are ignored.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use super::trip::{Counts, TripExpr};

/// gobreaker's default open period.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// One named circuit breaker policy: a template for the instances of each target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerSpec {
    /// Probes admitted while half-open (at least 1).
    pub max_requests: u32,
    /// Period after which closed counts reset; zero never resets.
    pub interval: Duration,
    /// How long the breaker stays open before probing.
    pub timeout: Duration,
    /// When a failure opens the breaker.
    pub trip: TripExpr,
}

impl Default for BreakerSpec {
    fn default() -> Self {
        Self { max_requests: 1, interval: Duration::ZERO, timeout: DEFAULT_TIMEOUT, trip: TripExpr::default() }
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// A limited number of probe calls pass.
    HalfOpen,
    /// Calls fail fast.
    Open,
}

impl BreakerState {
    /// The name daprd logs.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half-open",
            BreakerState::Open => "open",
        }
    }
}

/// What happens to a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerEvent {
    /// A call asks to pass.
    Request,
    /// A call admitted in `generation` succeeded.
    Success {
        /// From `Verdict::Admitted`.
        generation: u64,
    },
    /// A call admitted in `generation` failed.
    Failure {
        /// From `Verdict::Admitted`.
        generation: u64,
    },
}

/// Why a call was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The breaker is open.
    Open,
    /// The breaker is half-open and its probes are all in flight.
    TooManyRequests,
}

/// The answer to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The call may proceed; report its outcome with this generation.
    Admitted {
        /// Generation the call belongs to.
        generation: u64,
    },
    /// The call must fail fast.
    Rejected(Rejection),
    /// An outcome was recorded (or ignored, being from an older generation).
    Recorded,
}

/// The result of `Breaker::apply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The answer.
    pub verdict: Verdict,
    /// State after the event.
    pub state: BreakerState,
    /// State before the event, when it changed.
    pub changed_from: Option<BreakerState>,
}

/// The state machine of one breaker instance.
#[derive(Debug, Clone)]
pub struct Breaker {
    spec: Arc<BreakerSpec>,
    state: BreakerState,
    generation: u64,
    counts: Counts,
    expiry: Option<Instant>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(spec: Arc<BreakerSpec>, now: Instant) -> Self {
        let mut b = Self { spec, state: BreakerState::Closed, generation: 0, counts: Counts::default(), expiry: None };
        b.new_generation(now);
        b
    }

    /// The state as of `now` (an elapsed open period reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        let mut b = self.clone();
        b.tick(now);
        b.state
    }

    /// Counts of the current generation.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Applies one event at `now`.
    pub fn apply(&mut self, event: BreakerEvent, now: Instant) -> Step {
        let before = self.state;
        self.tick(now);
        let verdict = match event {
            BreakerEvent::Request => match self.state {
                BreakerState::Open => Verdict::Rejected(Rejection::Open),
                BreakerState::HalfOpen if self.counts.requests >= u64::from(self.spec.max_requests.max(1)) => {
                    Verdict::Rejected(Rejection::TooManyRequests)
                }
                _ => {
                    self.counts.requests += 1;
                    Verdict::Admitted { generation: self.generation }
                }
            },
            BreakerEvent::Success { generation } => {
                if generation == self.generation {
                    self.counts.on_success();
                    if self.state == BreakerState::HalfOpen && self.counts.consecutive_successes >= u64::from(self.spec.max_requests.max(1)) {
                        self.set_state(BreakerState::Closed, now);
                    }
                }
                Verdict::Recorded
            }
            BreakerEvent::Failure { generation } => {
                if generation == self.generation {
                    match self.state {
                        BreakerState::Closed => {
                            self.counts.on_failure();
                            if self.spec.trip.eval(&self.counts) {
                                self.set_state(BreakerState::Open, now);
                            }
                        }
                        BreakerState::HalfOpen => self.set_state(BreakerState::Open, now),
                        BreakerState::Open => {}
                    }
                }
                Verdict::Recorded
            }
        };
        Step { verdict, state: self.state, changed_from: (before != self.state).then_some(before) }
    }

    /// Moves time forward: clears closed counts each interval, half-opens after the open period.
    fn tick(&mut self, now: Instant) {
        match (self.state, self.expiry) {
            (BreakerState::Closed, Some(e)) if e <= now => self.new_generation(now),
            (BreakerState::Open, Some(e)) if e <= now => self.set_state(BreakerState::HalfOpen, now),
            _ => {}
        }
    }

    fn set_state(&mut self, state: BreakerState, now: Instant) {
        if self.state != state {
            self.state = state;
            self.new_generation(now);
        }
    }

    fn new_generation(&mut self, now: Instant) {
        self.generation += 1;
        self.counts = Counts::default();
        self.expiry = match self.state {
            BreakerState::Closed => (!self.spec.interval.is_zero()).then(|| now + self.spec.interval),
            BreakerState::Open => Some(now + self.spec.timeout),
            BreakerState::HalfOpen => None,
        };
    }
}

/// One target's breaker, shared by all of its concurrent calls.
///
/// Updates are lock-free read-copy-update swaps of the small `Breaker` value, so a call never
/// waits on another and no mailbox sits on the request path.
#[derive(Debug)]
pub struct SharedBreaker {
    name: String,
    cell: ArcSwap<Breaker>,
}

impl SharedBreaker {
    /// A closed breaker named for logs (`<policy>-<target>`, as daprd names its instances).
    pub fn new(name: String, spec: Arc<BreakerSpec>) -> Self {
        Self { name, cell: ArcSwap::from_pointee(Breaker::new(spec, Instant::now())) }
    }

    /// The instance name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.cell.load().state(Instant::now())
    }

    /// Applies an event now and logs a state change.
    pub fn apply(&self, event: BreakerEvent) -> Step {
        let now = Instant::now();
        let mut step = None;
        self.cell.rcu(|current| {
            let mut next = Breaker::clone(current);
            step = Some(next.apply(event, now));
            next
        });
        // rcu runs its closure at least once.
        let step = step.unwrap_or(Step { verdict: Verdict::Recorded, state: BreakerState::Closed, changed_from: None });
        if let Some(from) = step.changed_from {
            tracing::info!(circuit_breaker = %self.name, from = from.as_str(), to = step.state.as_str(), "circuit breaker changed state");
        }
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(max_requests: u32, interval: Duration, trip: &str) -> Arc<BreakerSpec> {
        Arc::new(BreakerSpec { max_requests, interval, timeout: Duration::from_secs(30), trip: TripExpr::parse(trip).unwrap() })
    }

    fn admit(b: &mut Breaker, now: Instant) -> u64 {
        match b.apply(BreakerEvent::Request, now).verdict {
            Verdict::Admitted { generation } => generation,
            v => panic!("expected admission, got {v:?}"),
        }
    }

    fn fail(b: &mut Breaker, now: Instant) -> Step {
        let generation = admit(b, now);
        b.apply(BreakerEvent::Failure { generation }, now)
    }

    fn succeed(b: &mut Breaker, now: Instant) -> Step {
        let generation = admit(b, now);
        b.apply(BreakerEvent::Success { generation }, now)
    }

    #[test]
    fn trips_open_then_half_opens_after_timeout_and_closes_on_success() {
        let t0 = Instant::now();
        let mut b = Breaker::new(spec(1, Duration::ZERO, "consecutiveFailures >= 3"), t0);
        assert_eq!(fail(&mut b, t0).state, BreakerState::Closed);
        assert_eq!(fail(&mut b, t0).state, BreakerState::Closed);
        let step = fail(&mut b, t0);
        assert_eq!((step.state, step.changed_from), (BreakerState::Open, Some(BreakerState::Closed)));
        let t1 = t0 + Duration::from_secs(29);
        assert_eq!(b.apply(BreakerEvent::Request, t1).verdict, Verdict::Rejected(Rejection::Open));
        let t2 = t0 + Duration::from_secs(30);
        assert_eq!(b.state(t2), BreakerState::HalfOpen);
        let probe = admit(&mut b, t2);
        assert_eq!(b.apply(BreakerEvent::Request, t2).verdict, Verdict::Rejected(Rejection::TooManyRequests), "one probe at a time");
        let step = b.apply(BreakerEvent::Success { generation: probe }, t2);
        assert_eq!((step.state, step.changed_from), (BreakerState::Closed, Some(BreakerState::HalfOpen)));
        assert_eq!(b.counts(), Counts::default(), "a new generation starts with clear counts");
    }

    #[test]
    fn a_failed_probe_reopens_for_another_timeout() {
        let t0 = Instant::now();
        let mut b = Breaker::new(spec(1, Duration::ZERO, "consecutiveFailures > 0"), t0);
        fail(&mut b, t0);
        let t1 = t0 + Duration::from_secs(30);
        let step = fail(&mut b, t1);
        assert_eq!((step.state, step.changed_from), (BreakerState::Open, Some(BreakerState::HalfOpen)));
        assert_eq!(b.state(t1 + Duration::from_secs(29)), BreakerState::Open);
        assert_eq!(b.state(t1 + Duration::from_secs(30)), BreakerState::HalfOpen);
    }

    #[test]
    fn half_open_needs_max_requests_consecutive_successes() {
        let t0 = Instant::now();
        let mut b = Breaker::new(spec(3, Duration::ZERO, "consecutiveFailures > 0"), t0);
        fail(&mut b, t0);
        let t1 = t0 + Duration::from_secs(30);
        let probes: Vec<u64> = (0..3).map(|_| admit(&mut b, t1)).collect();
        assert_eq!(b.apply(BreakerEvent::Request, t1).verdict, Verdict::Rejected(Rejection::TooManyRequests));
        assert_eq!(b.apply(BreakerEvent::Success { generation: probes[0] }, t1).state, BreakerState::HalfOpen);
        assert_eq!(b.apply(BreakerEvent::Success { generation: probes[1] }, t1).state, BreakerState::HalfOpen);
        assert_eq!(b.apply(BreakerEvent::Success { generation: probes[2] }, t1).state, BreakerState::Closed);
    }

    #[test]
    fn successes_reset_consecutive_failures_and_interval_clears_counts() {
        let t0 = Instant::now();
        let mut b = Breaker::new(spec(1, Duration::from_secs(10), "consecutiveFailures >= 2"), t0);
        fail(&mut b, t0);
        succeed(&mut b, t0);
        assert_eq!(fail(&mut b, t0).state, BreakerState::Closed, "the success broke the streak");
        // The interval elapses: counts clear, so the next failure is the first again.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(fail(&mut b, t1).state, BreakerState::Closed);
        assert_eq!(b.counts().total_failures, 1);
        assert_eq!(fail(&mut b, t1).state, BreakerState::Open);
    }

    #[test]
    fn outcomes_from_an_older_generation_are_ignored() {
        let t0 = Instant::now();
        let mut b = Breaker::new(spec(1, Duration::ZERO, "consecutiveFailures >= 1"), t0);
        let slow = admit(&mut b, t0);
        fail(&mut b, t0);
        let t1 = t0 + Duration::from_secs(30);
        let probe = admit(&mut b, t1);
        // The slow call from the closed generation finally fails: the half-open probe decides.
        assert_eq!(b.apply(BreakerEvent::Failure { generation: slow }, t1).state, BreakerState::HalfOpen);
        assert_eq!(b.apply(BreakerEvent::Success { generation: probe }, t1).state, BreakerState::Closed);
    }

    #[test]
    fn default_trips_after_more_than_five_consecutive_failures() {
        let t0 = Instant::now();
        let mut b = Breaker::new(Arc::new(BreakerSpec::default()), t0);
        for _ in 0..5 {
            assert_eq!(fail(&mut b, t0).state, BreakerState::Closed);
        }
        assert_eq!(fail(&mut b, t0).state, BreakerState::Open);
        assert_eq!(b.state(t0 + DEFAULT_TIMEOUT), BreakerState::HalfOpen);
    }

    #[test]
    fn shared_instance_applies_events() {
        let b = SharedBreaker::new("cb-store".into(), spec(1, Duration::ZERO, "consecutiveFailures >= 1"));
        let Verdict::Admitted { generation } = b.apply(BreakerEvent::Request).verdict else { panic!("closed admits") };
        assert_eq!(b.apply(BreakerEvent::Failure { generation }).state, BreakerState::Open);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.apply(BreakerEvent::Request).verdict, Verdict::Rejected(Rejection::Open));
        assert_eq!(b.name(), "cb-store");
    }
}
