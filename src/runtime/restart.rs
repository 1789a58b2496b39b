//! `RestartPolicy`: the one backoff rule every supervisor uses.

use std::time::Duration;

/// Exponential backoff between restarts, capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self { initial: Duration::from_millis(500), max: Duration::from_secs(30) }
    }
}

impl RestartPolicy {
    /// Delay before retry number `attempt` (1-based): initial × 2^(attempt-1), at most `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let p = RestartPolicy { initial: Duration::from_millis(100), max: Duration::from_secs(1) };
        assert_eq!(p.delay(1), Duration::from_millis(100));
        assert_eq!(p.delay(2), Duration::from_millis(200));
        assert_eq!(p.delay(4), Duration::from_millis(800));
        assert_eq!(p.delay(5), Duration::from_secs(1));
        assert_eq!(p.delay(100), Duration::from_secs(1));
    }
}
