//! daprd's built-in retry policies (pkg/resiliency `BuiltInPolicy`): the retries daprd applies
//! where no user policy is named, each overridable by a retry policy of the same name.
//!
//! - `DaprBuiltInServiceRetries`: constant 1 s, 3 retries. Service invocation of another app
//!   with no `targets.apps` entry, on UNAVAILABLE / UNAUTHENTICATED (src/invoke).
//! - `DaprBuiltInInitializationRetries`: exponential from 500 ms (×1.5, ±50 %, at most 1 s, 10 s
//!   in all), 3 retries. Asking the app for its programmatic subscriptions.
//! - `DaprBuiltInActorRetries`, `DaprBuiltInActorReminderRetries`,
//!   `DaprBuiltInActorNotFoundRetries`: named for completeness (actor paths take them when they
//!   use resiliency).
//!
//! daprd's override rules: a redefinition below 3 retries (or retrying forever, -1) is raised to
//! 3 with a warning; `DaprBuiltInActorNotFoundRetries` is protected and cannot be redefined.

use std::time::Duration;

use super::retry::{BackoffPolicy, RetrySpec, DEFAULT_MAX_ELAPSED, DEFAULT_MAX_INTERVAL, DEFAULT_MULTIPLIER, DEFAULT_RANDOMIZATION_FACTOR};

/// A built-in policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltIn {
    /// `DaprBuiltInServiceRetries`.
    ServiceRetries,
    /// `DaprBuiltInActorRetries`.
    ActorRetries,
    /// `DaprBuiltInActorReminderRetries`.
    ActorReminderRetries,
    /// `DaprBuiltInInitializationRetries`.
    InitializationRetries,
    /// `DaprBuiltInActorNotFoundRetries`.
    ActorNotFoundRetries,
}

/// Every built-in policy.
pub const ALL: [BuiltIn; 5] = [BuiltIn::ServiceRetries, BuiltIn::ActorRetries, BuiltIn::ActorReminderRetries, BuiltIn::InitializationRetries, BuiltIn::ActorNotFoundRetries];

/// The fewest retries a redefinition may have.
const MIN_RETRIES: u64 = 3;

impl BuiltIn {
    /// daprd's name.
    pub fn name(self) -> &'static str {
        match self {
            BuiltIn::ServiceRetries => "DaprBuiltInServiceRetries",
            BuiltIn::ActorRetries => "DaprBuiltInActorRetries",
            BuiltIn::ActorReminderRetries => "DaprBuiltInActorReminderRetries",
            BuiltIn::InitializationRetries => "DaprBuiltInInitializationRetries",
            BuiltIn::ActorNotFoundRetries => "DaprBuiltInActorNotFoundRetries",
        }
    }

    /// The built-in policy a name denotes.
    pub fn from_name(name: &str) -> Option<Self> {
        ALL.into_iter().find(|b| b.name() == name)
    }

    /// daprd's definition.
    pub fn default_spec(self) -> RetrySpec {
        let constant = |retries| RetrySpec { backoff: BackoffPolicy::Constant { interval: Duration::from_secs(1) }, max_retries: Some(retries), ..Default::default() };
        match self {
            BuiltIn::ServiceRetries | BuiltIn::ActorRetries => constant(3),
            BuiltIn::ActorNotFoundRetries => constant(5),
            BuiltIn::ActorReminderRetries => RetrySpec {
                backoff: BackoffPolicy::Exponential {
                    initial_interval: Duration::from_millis(500),
                    randomization_factor: DEFAULT_RANDOMIZATION_FACTOR,
                    multiplier: DEFAULT_MULTIPLIER,
                    max_interval: DEFAULT_MAX_INTERVAL,
                    max_elapsed: Some(DEFAULT_MAX_ELAPSED),
                },
                max_retries: None,
                ..Default::default()
            },
            BuiltIn::InitializationRetries => RetrySpec {
                backoff: BackoffPolicy::Exponential {
                    initial_interval: Duration::from_millis(500),
                    randomization_factor: DEFAULT_RANDOMIZATION_FACTOR,
                    multiplier: DEFAULT_MULTIPLIER,
                    max_interval: Duration::from_secs(1),
                    max_elapsed: Some(Duration::from_secs(10)),
                },
                max_retries: Some(3),
                ..Default::default()
            },
        }
    }

    /// Whether a resource may not redefine it.
    pub fn is_protected(self) -> bool {
        self == BuiltIn::ActorNotFoundRetries
    }
}

/// A user's retry policy named `name`, as daprd keeps it: `None` when the name is protected
/// (the built-in stays), raised to 3 retries when it is a built-in name with fewer.
pub fn user_retry(resource: &str, name: &str, mut spec: RetrySpec) -> Option<RetrySpec> {
    let Some(b) = BuiltIn::from_name(name) else { return Some(spec) };
    if b.is_protected() {
        tracing::warn!(resiliency = %resource, policy = %name, "Attempted to override protected policy {name} which is not allowed. Ignoring provided policy and using default.");
        return None;
    }
    if spec.max_retries.is_none_or(|n| n < MIN_RETRIES) {
        tracing::warn!(resiliency = %resource, policy = %name, "Attempted override of {name} did not meet minimum retry count, resetting to 3.");
        spec.max_retries = Some(MIN_RETRIES);
    }
    Some(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_defaults_are_daprds() {
        for b in ALL {
            assert_eq!(BuiltIn::from_name(b.name()), Some(b));
        }
        let s = BuiltIn::ServiceRetries.default_spec();
        assert_eq!((s.backoff, s.max_retries), (BackoffPolicy::Constant { interval: Duration::from_secs(1) }, Some(3)));
        let init = BuiltIn::InitializationRetries.default_spec();
        assert_eq!(init.max_retries, Some(3));
        let mut b = init.backoff();
        let waits: Vec<u128> = std::iter::from_fn(|| b.next(Duration::ZERO, 0.5)).map(|d| d.as_millis()).collect();
        assert_eq!(waits, vec![500, 750, 1000], "exponential, capped at 1 s, three retries");
    }

    #[test]
    fn overrides_keep_at_least_three_retries_and_protected_ones_are_refused() {
        let few = RetrySpec { max_retries: Some(1), ..Default::default() };
        assert_eq!(user_retry("r", "DaprBuiltInServiceRetries", few.clone()).unwrap().max_retries, Some(3));
        let forever = RetrySpec { max_retries: None, ..Default::default() };
        assert_eq!(user_retry("r", "DaprBuiltInServiceRetries", forever.clone()).unwrap().max_retries, Some(3), "-1 is below 3 for daprd too");
        let many = RetrySpec { max_retries: Some(7), ..Default::default() };
        assert_eq!(user_retry("r", "DaprBuiltInInitializationRetries", many).unwrap().max_retries, Some(7));
        assert_eq!(user_retry("r", "DaprBuiltInActorNotFoundRetries", few.clone()), None);
        assert_eq!(user_retry("r", "mine", few).unwrap().max_retries, Some(1), "other names are left alone");
        assert_eq!(user_retry("r", "mine", forever).unwrap().max_retries, None);
    }
}
