//! Retry policies: the backoff schedule between attempts, as a pure iterator.
//!
//! The schedule follows what daprd gets from dapr/kit's retry config over cenkalti/backoff:
//! `constant` waits `duration` every time; `exponential` starts at 500ms, multiplies by 1.5 up to
//! `maxInterval` with ±50% jitter, and gives up once 15 minutes have elapsed; `maxRetries` caps
//! the number of retries (-1 = no cap). Randomness and the elapsed time are inputs, so the
//! schedule is tested without a clock.

use std::ops::RangeInclusive;
use std::time::Duration;

/// kit's default constant interval.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(5);
/// cenkalti's default first exponential interval.
pub const DEFAULT_INITIAL_INTERVAL: Duration = Duration::from_millis(500);
/// cenkalti's default jitter.
pub const DEFAULT_RANDOMIZATION_FACTOR: f64 = 0.5;
/// cenkalti's default growth.
pub const DEFAULT_MULTIPLIER: f64 = 1.5;
/// cenkalti's default interval cap.
pub const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(60);
/// cenkalti's default give-up time of an exponential schedule.
pub const DEFAULT_MAX_ELAPSED: Duration = Duration::from_secs(15 * 60);

/// How the wait between attempts evolves.
#[derive(Debug, Clone, PartialEq)]
pub enum BackoffPolicy {
    /// The same wait every time.
    Constant {
        /// The wait.
        interval: Duration,
    },
    /// A growing, jittered wait.
    Exponential {
        /// First wait (before jitter).
        initial_interval: Duration,
        /// Jitter: the wait is drawn from `interval * (1 ± factor)`.
        randomization_factor: f64,
        /// Growth per retry.
        multiplier: f64,
        /// Cap of the un-jittered interval.
        max_interval: Duration,
        /// The schedule stops once this much time has passed since the first attempt.
        max_elapsed: Option<Duration>,
    },
}

/// Status codes that make a service invocation retriable (`matching` of a retry policy).
///
/// An empty list means "every failure is retried", as in daprd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryMatching {
    /// HTTP status ranges (100-599).
    pub http_status_codes: Vec<RangeInclusive<u16>>,
    /// gRPC code ranges (0-16).
    pub grpc_status_codes: Vec<RangeInclusive<u16>>,
}

impl RetryMatching {
    /// Whether an HTTP response with this status should be retried.
    pub fn retries_http_status(&self, status: u16) -> bool {
        self.http_status_codes.is_empty() || self.http_status_codes.iter().any(|r| r.contains(&status))
    }

    /// Whether a gRPC failure with this code should be retried.
    pub fn retries_grpc_code(&self, code: u16) -> bool {
        self.grpc_status_codes.is_empty() || self.grpc_status_codes.iter().any(|r| r.contains(&code))
    }
}

/// One named retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySpec {
    /// The wait schedule.
    pub backoff: BackoffPolicy,
    /// Most retries after the first attempt; `None` retries until the schedule stops.
    pub max_retries: Option<u64>,
    /// Which invocation failures are retried (service invocation only).
    pub matching: RetryMatching,
}

impl Default for RetrySpec {
    /// kit's default: constant 5s, retry forever.
    fn default() -> Self {
        Self { backoff: BackoffPolicy::Constant { interval: DEFAULT_DURATION }, max_retries: None, matching: RetryMatching::default() }
    }
}

impl RetrySpec {
    /// A fresh schedule for one run.
    pub fn backoff(&self) -> Backoff<'_> {
        let current = match &self.backoff {
            BackoffPolicy::Constant { interval } => *interval,
            BackoffPolicy::Exponential { initial_interval, .. } => *initial_interval,
        };
        Backoff { spec: self, current, retries: 0 }
    }
}

/// The schedule of one run: yields the wait before each retry, or `None` to give up.
#[derive(Debug, Clone)]
pub struct Backoff<'a> {
    spec: &'a RetrySpec,
    current: Duration,
    retries: u64,
}

impl Backoff<'_> {
    /// The wait before the next retry. `elapsed` is the time since the first attempt started;
    /// `random` is uniform in `[0, 1)` and only used for jitter.
    pub fn next(&mut self, elapsed: Duration, random: f64) -> Option<Duration> {
        if self.spec.max_retries.is_some_and(|max| self.retries >= max) {
            return None;
        }
        self.retries += 1;
        match &self.spec.backoff {
            BackoffPolicy::Constant { interval } => Some(*interval),
            BackoffPolicy::Exponential { randomization_factor, multiplier, max_interval, max_elapsed, .. } => {
                let next = jittered(self.current, *randomization_factor, random);
                self.current = if self.current.as_secs_f64() >= max_interval.as_secs_f64() / multiplier {
                    *max_interval
                } else {
                    self.current.mul_f64(*multiplier)
                };
                if max_elapsed.is_some_and(|max| elapsed + next > max) {
                    return None;
                }
                Some(next)
            }
        }
    }

    /// Retries handed out so far.
    pub fn retries(&self) -> u64 {
        self.retries
    }
}

fn jittered(interval: Duration, factor: f64, random: f64) -> Duration {
    if factor <= 0.0 {
        return interval;
    }
    let nanos = interval.as_nanos() as f64;
    let delta = factor * nanos;
    let (min, max) = (nanos - delta, nanos + delta);
    Duration::from_nanos((min + random.clamp(0.0, 1.0) * (max - min + 1.0)).max(0.0) as u64)
}

/// Parses daprd's `matching` code list: comma-separated codes or `start-end` ranges inside
/// `valid`, e.g. `"429,500-599"`.
pub fn parse_code_ranges(patterns: &str, valid: RangeInclusive<u16>) -> Result<Vec<RangeInclusive<u16>>, String> {
    let mut out = Vec::new();
    for p in patterns.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut parts = p.split('-');
        let (start, end) = match (parts.next(), parts.next(), parts.next()) {
            (Some(s), None, _) => (s, s),
            (Some(s), Some(e), None) => (s, e),
            _ => return Err(format!("invalid pattern {p}, more than one '-' exists")),
        };
        let code = |s: &str| s.trim().parse::<u16>().ok().filter(|c| valid.contains(c));
        let (Some(start), Some(end)) = (code(start), code(end)) else {
            return Err(format!("invalid pattern {p}: codes must be within {}-{}", valid.start(), valid.end()));
        };
        if end < start {
            return Err(format!("invalid pattern {p}, start value should not be bigger than end value"));
        }
        out.push(start..=end);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exponential(max_retries: Option<u64>) -> RetrySpec {
        RetrySpec {
            backoff: BackoffPolicy::Exponential {
                initial_interval: DEFAULT_INITIAL_INTERVAL,
                randomization_factor: DEFAULT_RANDOMIZATION_FACTOR,
                multiplier: DEFAULT_MULTIPLIER,
                max_interval: Duration::from_secs(2),
                max_elapsed: Some(DEFAULT_MAX_ELAPSED),
            },
            max_retries,
            matching: RetryMatching::default(),
        }
    }

    #[test]
    fn constant_waits_the_same_and_honours_max_retries() {
        let spec = RetrySpec { backoff: BackoffPolicy::Constant { interval: Duration::from_millis(100) }, max_retries: Some(3), ..Default::default() };
        let mut b = spec.backoff();
        let waits: Vec<_> = std::iter::from_fn(|| b.next(Duration::ZERO, 0.3)).collect();
        assert_eq!(waits, vec![Duration::from_millis(100); 3]);
        let none = RetrySpec { max_retries: Some(0), ..spec.clone() };
        assert_eq!(none.backoff().next(Duration::ZERO, 0.5), None, "maxRetries 0 never retries");
        let forever = RetrySpec { max_retries: None, ..spec };
        let mut b = forever.backoff();
        assert!((0..10_000).all(|_| b.next(Duration::from_secs(86_400), 0.5).is_some()), "-1 retries forever");
    }

    #[test]
    fn exponential_grows_by_the_multiplier_up_to_the_cap() {
        let spec = exponential(None);
        let mut b = spec.backoff();
        // random 0.5 sits in the middle of the jitter window: the un-jittered interval.
        let waits: Vec<_> = (0..6).map(|_| b.next(Duration::ZERO, 0.5).unwrap().as_millis()).collect();
        assert_eq!(waits, vec![500, 750, 1125, 1687, 2000, 2000]);
    }

    #[test]
    fn exponential_jitter_spans_half_either_side() {
        let spec = exponential(None);
        assert_eq!(spec.backoff().next(Duration::ZERO, 0.0).unwrap(), Duration::from_millis(250));
        let hi = spec.backoff().next(Duration::ZERO, 0.999_999_999).unwrap();
        assert!(hi > Duration::from_millis(749) && hi <= Duration::from_millis(750), "{hi:?}");
    }

    #[test]
    fn exponential_stops_after_max_elapsed_and_max_retries() {
        let spec = exponential(None);
        let mut b = spec.backoff();
        assert_eq!(b.next(DEFAULT_MAX_ELAPSED, 0.5), None, "past 15 minutes");
        let spec = exponential(Some(2));
        let mut b = spec.backoff();
        assert!(b.next(Duration::ZERO, 0.5).is_some());
        assert!(b.next(Duration::ZERO, 0.5).is_some());
        assert_eq!(b.next(Duration::ZERO, 0.5), None);
        assert_eq!(b.retries(), 2);
    }

    #[test]
    fn matching_codes_parse_and_match() {
        let m = RetryMatching { http_status_codes: parse_code_ranges("429, 500-503", 100..=599).unwrap(), grpc_status_codes: parse_code_ranges("14", 0..=16).unwrap() };
        assert!(m.retries_http_status(429) && m.retries_http_status(502));
        assert!(!m.retries_http_status(404) && !m.retries_http_status(504));
        assert!(m.retries_grpc_code(14) && !m.retries_grpc_code(2));
        assert!(RetryMatching::default().retries_http_status(404), "no list retries everything");
        assert!(parse_code_ranges("600", 100..=599).unwrap_err().contains("600"));
        assert!(parse_code_ranges("1-2-3", 0..=16).unwrap_err().contains("more than one"));
        assert!(parse_code_ranges("503-500", 100..=599).unwrap_err().contains("bigger"));
        assert!(parse_code_ranges("abc", 100..=599).is_err());
    }
}
