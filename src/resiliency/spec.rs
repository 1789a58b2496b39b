//! One parsed `Resiliency` resource (apiVersion `dapr.io/v1alpha1`): its named policies and the
//! targets that name them.
//!
//! Parsing is strict about values (a duration that is not one, a bad trip expression, a bad
//! status-code pattern are errors naming the policy) and lenient about unknown fields, as daprd's
//! YAML decoding is. Whether target names resolve is checked when all resources are merged
//! (`super::load`), since a target may name a policy of another resource.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use yaml_serde::Value;

use super::breaker::{BreakerSpec, DEFAULT_TIMEOUT};
use super::retry::{
    parse_code_ranges, BackoffPolicy, RetryMatching, RetrySpec, DEFAULT_DURATION, DEFAULT_INITIAL_INTERVAL, DEFAULT_MAX_ELAPSED,
    DEFAULT_MAX_INTERVAL, DEFAULT_MULTIPLIER, DEFAULT_RANDOMIZATION_FACTOR,
};
use super::trip::TripExpr;

/// Policy names a target uses; `None` means "not configured".
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyNames {
    /// A name from `policies.timeouts`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// A name from `policies.retries`.
    #[serde(default)]
    pub retry: Option<String>,
    /// A name from `policies.circuitBreakers`.
    #[serde(default)]
    pub circuit_breaker: Option<String>,
}

/// A component target: policies for calls into the component and for deliveries from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ComponentPolicyNames {
    /// Calls from the app through the sidecar into the component (state get, publish...).
    #[serde(default)]
    pub outbound: PolicyNames,
    /// Deliveries from the component to the app (subscriptions, input bindings).
    #[serde(default)]
    pub inbound: PolicyNames,
}

/// An app target (`targets.apps.<id>`): its policies and how many endpoint breakers to keep.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppPolicyNames {
    /// The policy names.
    #[serde(flatten)]
    pub names: PolicyNames,
    /// Endpoint breakers kept for this app (daprd's default: 100).
    #[serde(default)]
    pub circuit_breaker_cache_size: Option<u64>,
}

/// An actor target (accepted and validated; not applied by rapr yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActorPolicyNames {
    /// The policy names.
    #[serde(flatten)]
    pub names: PolicyNames,
    /// `type`, `id` or `both`.
    #[serde(default)]
    pub circuit_breaker_scope: Option<String>,
    /// How many breaker instances to keep.
    #[serde(default)]
    pub circuit_breaker_cache_size: Option<u64>,
}

/// A parsed `Resiliency` resource.
#[derive(Debug, Clone, Default)]
pub struct ResiliencySpec {
    /// `metadata.name`.
    pub name: String,
    /// App ids allowed to load it; empty means all.
    pub scopes: Vec<String>,
    /// Named per-attempt timeouts.
    pub timeouts: BTreeMap<String, Duration>,
    /// Named retry policies.
    pub retries: BTreeMap<String, Arc<RetrySpec>>,
    /// Named circuit breaker templates.
    pub circuit_breakers: BTreeMap<String, Arc<BreakerSpec>>,
    /// `targets.apps`, by app id.
    pub apps: BTreeMap<String, AppPolicyNames>,
    /// `targets.components`, by component name.
    pub components: BTreeMap<String, ComponentPolicyNames>,
    /// `targets.actors`, by actor type.
    pub actors: BTreeMap<String, ActorPolicyNames>,
}

#[derive(Deserialize, Default)]
struct RawMeta {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawPolicies {
    #[serde(default)]
    timeouts: BTreeMap<String, Value>,
    #[serde(default)]
    retries: BTreeMap<String, RawRetry>,
    #[serde(default)]
    circuit_breakers: BTreeMap<String, RawBreaker>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawRetry {
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    duration: Option<Value>,
    #[serde(default)]
    max_interval: Option<Value>,
    #[serde(default)]
    max_retries: Option<Value>,
    #[serde(default)]
    matching: Option<RawMatching>,
}

#[derive(Deserialize, Default)]
struct RawMatching {
    #[serde(default, rename = "httpStatusCodes")]
    http: Option<Value>,
    #[serde(default, rename = "gRPCStatusCodes")]
    grpc: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawBreaker {
    #[serde(default)]
    max_requests: Option<Value>,
    #[serde(default)]
    interval: Option<Value>,
    #[serde(default)]
    timeout: Option<Value>,
    #[serde(default)]
    trip: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawTargets {
    #[serde(default)]
    apps: BTreeMap<String, AppPolicyNames>,
    #[serde(default)]
    components: BTreeMap<String, ComponentPolicyNames>,
    #[serde(default)]
    actors: BTreeMap<String, ActorPolicyNames>,
}

#[derive(Deserialize, Default)]
struct RawSpec {
    #[serde(default)]
    policies: RawPolicies,
    #[serde(default)]
    targets: RawTargets,
}

#[derive(Deserialize)]
struct RawResiliency {
    #[serde(default)]
    metadata: RawMeta,
    #[serde(default)]
    spec: RawSpec,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

/// The `metadata.name` and `scopes` of a document, read before (and whatever) the rest parses.
pub fn name_and_scopes(value: &Value) -> (String, Vec<String>) {
    let name = value.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or_default().to_string();
    let scopes = value
        .get("scopes")
        .and_then(Value::as_sequence)
        .map(|s| s.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    (name, scopes)
}

/// Parses one `Resiliency` document; the error names the policy at fault.
pub fn parse(value: Value) -> Result<ResiliencySpec, String> {
    let raw: RawResiliency = yaml_serde::from_value(value).map_err(|e| format!("invalid Resiliency: {e}"))?;
    if raw.metadata.name.trim().is_empty() {
        return Err("metadata.name is required".into());
    }
    let mut spec = ResiliencySpec { name: raw.metadata.name, scopes: raw.scopes.unwrap_or_default(), ..Default::default() };
    for (name, v) in raw.spec.policies.timeouts {
        let d = duration(&v).map_err(|e| format!("timeout policy {name}: {e}"))?;
        spec.timeouts.insert(name, d);
    }
    for (name, r) in raw.spec.policies.retries {
        let retry = retry(r).map_err(|e| format!("retry policy {name}: {e}"))?;
        spec.retries.insert(name, Arc::new(retry));
    }
    for (name, b) in raw.spec.policies.circuit_breakers {
        let breaker = breaker(b).map_err(|e| format!("circuit breaker policy {name}: {e}"))?;
        let unknown = breaker.trip.unknown_variables();
        if !unknown.is_empty() {
            tracing::warn!(resiliency = %spec.name, policy = %name, trip = %breaker.trip, variables = ?unknown, "the trip expression reads variables a circuit breaker does not have (it has requests, totalSuccesses, totalFailures, consecutiveSuccesses, consecutiveFailures): it never trips while they are read");
        }
        spec.circuit_breakers.insert(name, Arc::new(breaker));
    }
    spec.apps = raw.spec.targets.apps;
    spec.components = raw.spec.targets.components;
    spec.actors = raw.spec.targets.actors;
    Ok(spec)
}

fn retry(r: RawRetry) -> Result<RetrySpec, String> {
    let max_retries = match r.max_retries.as_ref().map(integer).transpose().map_err(|e| format!("maxRetries: {e}"))? {
        None => None,
        Some(n) if n < 0 => None,
        Some(n) => Some(n as u64),
    };
    let opt_duration = |v: &Option<Value>, field: &str, default: Duration| match v {
        None => Ok(default),
        Some(v) => duration(v).map_err(|e| format!("{field}: {e}")),
    };
    let backoff = match r.policy.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("" | "constant") => BackoffPolicy::Constant { interval: opt_duration(&r.duration, "duration", DEFAULT_DURATION)? },
        Some("exponential") => BackoffPolicy::Exponential {
            initial_interval: DEFAULT_INITIAL_INTERVAL,
            randomization_factor: DEFAULT_RANDOMIZATION_FACTOR,
            multiplier: DEFAULT_MULTIPLIER,
            max_interval: opt_duration(&r.max_interval, "maxInterval", DEFAULT_MAX_INTERVAL)?,
            max_elapsed: Some(DEFAULT_MAX_ELAPSED),
        },
        Some(other) => return Err(format!("unexpected back off policy type: {other}")),
    };
    let mut matching = RetryMatching::default();
    if let Some(m) = r.matching {
        if let Some(v) = m.http {
            matching.http_status_codes = parse_code_ranges(&code_list(&v)?, 100..=599).map_err(|e| format!("matching.httpStatusCodes: {e}"))?;
        }
        if let Some(v) = m.grpc {
            matching.grpc_status_codes = parse_code_ranges(&code_list(&v)?, 0..=16).map_err(|e| format!("matching.gRPCStatusCodes: {e}"))?;
        }
    }
    Ok(RetrySpec { backoff, max_retries, matching })
}

fn breaker(b: RawBreaker) -> Result<BreakerSpec, String> {
    let max_requests = match b.max_requests.as_ref().map(integer).transpose().map_err(|e| format!("maxRequests: {e}"))? {
        None | Some(0) => 1,
        Some(n) => u32::try_from(n).map_err(|_| format!("maxRequests: {n} is out of range"))?,
    };
    let interval = match &b.interval {
        None => Duration::ZERO,
        Some(v) => duration(v).map_err(|e| format!("interval: {e}"))?,
    };
    let timeout = match &b.timeout {
        None => DEFAULT_TIMEOUT,
        Some(v) => Some(duration(v).map_err(|e| format!("timeout: {e}"))?).filter(|d| !d.is_zero()).unwrap_or(DEFAULT_TIMEOUT),
    };
    let trip = match b.trip.as_deref().map(str::trim) {
        None | Some("") => TripExpr::default(),
        Some(src) => TripExpr::parse(src).map_err(|e| format!("trip: {e}"))?,
    };
    Ok(BreakerSpec { max_requests, interval, timeout, trip })
}

/// A code list as a YAML string (`"429,500-599"`), number or list of either.
fn code_list(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Sequence(items) => items.iter().map(code_list).collect::<Result<Vec<_>, _>>().map(|v| v.join(",")),
        Value::Null => Ok(String::new()),
        other => Err(format!("{other:?} is not a list of status codes")),
    }
}

fn integer(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| format!("{n} is not an integer")),
        Value::String(s) => s.trim().parse().map_err(|_| format!("{s:?} is not an integer")),
        other => Err(format!("{other:?} is not an integer")),
    }
}

/// A resiliency duration: a bare integer is milliseconds (daprd's timeouts and dapr/kit's config
/// decoder for retries and circuit breakers), anything else is a Go duration (`5s`, `1m30s`,
/// `1.5s`, `250ms`). Negative is refused.
pub fn duration(v: &Value) -> Result<Duration, String> {
    match v {
        Value::Number(n) => n.as_u64().map(Duration::from_millis).ok_or_else(|| format!("{n} is not a duration")),
        Value::String(s) => parse_duration(s).ok_or_else(|| format!("{s:?} is not a duration")),
        other => Err(format!("{other:?} is not a duration")),
    }
}

/// Parses `s` as an integer of milliseconds or a Go duration string; negative is invalid.
pub fn parse_duration(s: &str) -> Option<Duration> {
    crate::config::duration::parse_std(s, crate::config::duration::BareInteger::Milliseconds).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Value {
        yaml_serde::from_str(text).unwrap()
    }

    const FULL: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: myresiliency
scopes: [app1]
spec:
  policies:
    timeouts:
      general: 5s
      important: 60s
      largeResponse: 10s
      millis: 250
    retries:
      pubsubRetry:
        policy: constant
        duration: 5s
        maxRetries: 10
      retryForever:
        policy: exponential
        maxInterval: 15s
        maxRetries: -1
      defaults: {}
      important:
        policy: constant
        duration: 1s
        maxRetries: "3"
        matching:
          httpStatusCodes: 429,500-599
          gRPCStatusCodes: [1, "2-4"]
    circuitBreakers:
      simpleCB:
        maxRequests: 1
        timeout: 30s
        trip: consecutiveFailures >= 5
      pubsubCB:
        maxRequests: 2
        interval: 8s
        timeout: 45s
        trip: consecutiveFailures > 8
      bare: {}
  targets:
    apps:
      appB:
        timeout: general
        retry: important
        circuitBreaker: simpleCB
        circuitBreakerCacheSize: 7
    actors:
      myActorType:
        timeout: general
        retry: important
        circuitBreaker: simpleCB
        circuitBreakerScope: both
        circuitBreakerCacheSize: 5000
    components:
      statestore1:
        outbound:
          retry: retryForever
          circuitBreaker: simpleCB
      pubsub1:
        inbound:
          timeout: general
"#;

    #[test]
    fn parses_policies_with_daprs_defaults() {
        let s = parse(doc(FULL)).unwrap();
        assert_eq!(s.name, "myresiliency");
        assert_eq!(s.scopes, vec!["app1".to_string()]);
        assert_eq!(s.timeouts["general"], Duration::from_secs(5));
        assert_eq!(s.timeouts["millis"], Duration::from_millis(250));
        let r = &s.retries["pubsubRetry"];
        assert_eq!((r.backoff.clone(), r.max_retries), (BackoffPolicy::Constant { interval: Duration::from_secs(5) }, Some(10)));
        let r = &s.retries["retryForever"];
        assert_eq!(r.max_retries, None);
        let BackoffPolicy::Exponential { initial_interval, max_interval, multiplier, randomization_factor, .. } = r.backoff else { panic!("exponential") };
        assert_eq!((initial_interval, max_interval, multiplier, randomization_factor), (Duration::from_millis(500), Duration::from_secs(15), 1.5, 0.5));
        assert_eq!(*s.retries["defaults"].as_ref(), RetrySpec::default(), "constant 5s, forever");
        let m = &s.retries["important"].matching;
        assert_eq!(s.retries["important"].max_retries, Some(3));
        assert_eq!(m.http_status_codes, vec![429..=429, 500..=599]);
        assert_eq!(m.grpc_status_codes, vec![1..=1, 2..=4]);
        let cb = &s.circuit_breakers["pubsubCB"];
        assert_eq!((cb.max_requests, cb.interval, cb.timeout), (2, Duration::from_secs(8), Duration::from_secs(45)));
        assert_eq!(cb.trip.to_string(), "consecutiveFailures > 8");
        assert_eq!(*s.circuit_breakers["bare"].as_ref(), BreakerSpec::default());
        assert_eq!(s.apps["appB"].names.circuit_breaker.as_deref(), Some("simpleCB"));
        assert_eq!(s.apps["appB"].circuit_breaker_cache_size, Some(7));
        assert_eq!(s.components["statestore1"].outbound.retry.as_deref(), Some("retryForever"));
        assert_eq!(s.components["pubsub1"].inbound.timeout.as_deref(), Some("general"));
        assert_eq!(s.actors["myActorType"].circuit_breaker_scope.as_deref(), Some("both"));
        assert_eq!(s.actors["myActorType"].names.retry.as_deref(), Some("important"));
    }

    #[test]
    fn bad_values_name_the_policy() {
        let base = "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n";
        for (policies, want) in [
            ("    timeouts:\n      general: soon\n", "timeout policy general: \"soon\" is not a duration"),
            ("    retries:\n      r1:\n        policy: linear\n", "retry policy r1: unexpected back off policy type: linear"),
            ("    retries:\n      r1:\n        maxRetries: lots\n", "retry policy r1: maxRetries"),
            ("    retries:\n      r1:\n        matching:\n          httpStatusCodes: \"700\"\n", "retry policy r1: matching.httpStatusCodes"),
            ("    circuitBreakers:\n      cb:\n        trip: consecutiveFailures >> 3\n", "circuit breaker policy cb: trip: invalid CEL expression"),
            ("    circuitBreakers:\n      cb:\n        timeout: -5s\n", "circuit breaker policy cb: timeout"),
        ] {
            let err = parse(doc(&format!("{base}{policies}"))).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
        assert!(parse(doc("kind: Resiliency\nspec: {}\n")).unwrap_err().contains("metadata.name"));
    }

    #[test]
    fn go_durations() {
        for (s, want) in [
            ("5s", Duration::from_secs(5)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5s", Duration::from_millis(1500)),
            ("250ms", Duration::from_millis(250)),
            ("2h", Duration::from_secs(7200)),
            ("10us", Duration::from_micros(10)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("1500", Duration::from_millis(1500)),
        ] {
            assert_eq!(parse_duration(s), Some(want), "{s}");
        }
        for s in ["", "s", "5x", "-1s", "1.2.3s"] {
            assert_eq!(parse_duration(s), None, "{s}");
        }
    }

    #[test]
    fn name_and_scopes_are_read_even_from_a_bad_document() {
        let v = doc("metadata:\n  name: r\nscopes: [a, b]\nspec: [broken]\n");
        assert_eq!(name_and_scopes(&v), ("r".to_string(), vec!["a".to_string(), "b".to_string()]));
        assert!(parse(v).is_err());
    }
}
