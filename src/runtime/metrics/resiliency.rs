//! Resiliency metrics: daprd's `resiliency/*` views (pkg/diagnostics/resiliency_monitoring.go).
//!
//! - `dapr_resiliency_loaded{app_id,name,namespace}`: one per Resiliency resource loaded.
//! - `dapr_resiliency_count{...,policy,flow_direction,target,status}`: each time a call looks up
//!   a policy with a timeout, retry or circuit breaker part (one sample per part; `status` is the
//!   breaker's state for the breaker part, empty otherwise).
//! - `dapr_resiliency_activations_total{...}`: a timeout fired (once per call), a retry was
//!   scheduled, or a breaker changed state (`status`: the new state).
//! - `dapr_resiliency_cb_state{...}`: a gauge per breaker state, 1 for the current one.
//!
//! `target` is daprd's: `app_<id>`, `<Kind>_<component>` (`Statestore_store`), `actor_<type>`.
//! `name` is the last loaded resource's name (daprd keeps one name for all merged resources) and
//! `namespace` its `metadata.namespace` (empty in standalone mode).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{Count, Labels, Metrics};

/// daprd's breaker states, in its order.
const CB_STATES: [&str; 4] = ["closed", "half-open", "open", "unknown"];

/// The resiliency families of one sidecar's registry.
#[derive(Default)]
pub(super) struct ResiliencyFamilies {
    loaded: Family<Labels, Count>,
    count: Family<Labels, Count>,
    activations: Family<Labels, Counter>,
    cb_state: Family<Labels, Gauge>,
}

impl ResiliencyFamilies {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register("dapr_resiliency_loaded", "Number of resiliency policies loaded.", self.loaded.clone());
        r.register("dapr_resiliency_count", "Number of times a resiliency policyKey has been applied to a building block.", self.count.clone());
        r.register(
            "dapr_resiliency_activations",
            "Number of times a resiliency policyKey has been activated in a building block after a failure or after a state change.",
            self.activations.clone(),
        );
        r.register(
            "dapr_resiliency_cb_state",
            "A resiliency policy's current CircuitBreakerState state. 0 is closed, 1 is half-open, 2 is open, and -1 is unknown.",
            self.cb_state.clone(),
        );
    }
}

/// The part of a policy a sample is about (daprd's `policy` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// `timeout`.
    Timeout,
    /// `retry`.
    Retry,
    /// `circuitbreaker`.
    CircuitBreaker,
}

impl PolicyKind {
    fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Timeout => "timeout",
            PolicyKind::Retry => "retry",
            PolicyKind::CircuitBreaker => "circuitbreaker",
        }
    }
}

/// What one looked-up policy reports to: its resource, direction and target.
#[derive(Debug, Clone)]
pub struct PolicyMetrics {
    metrics: Metrics,
    name: String,
    namespace: String,
    /// `outbound` or `inbound`.
    direction: &'static str,
    target: String,
}

impl PolicyMetrics {
    fn labels(&self, kind: PolicyKind, status: &str) -> Labels {
        self.metrics.labels(&[
            ("name", &self.name),
            ("policy", kind.as_str()),
            ("namespace", &self.namespace),
            ("flow_direction", self.direction),
            ("target", &self.target),
            ("status", status),
        ])
    }

    /// A call looked the policy up; `status` is the breaker's state for the breaker part.
    pub fn executed(&self, kind: PolicyKind, status: &str) {
        let f = &self.metrics.0.f.resiliency;
        f.count.get_or_create(&self.labels(kind, status)).0.inc();
        if kind == PolicyKind::CircuitBreaker {
            for s in CB_STATES {
                f.cb_state.get_or_create(&self.labels(kind, s)).set(i64::from(s == status));
            }
        }
    }

    /// The part acted: a timeout fired, a retry was scheduled, a breaker changed state.
    pub fn activated(&self, kind: PolicyKind, status: &str) {
        self.metrics.0.f.resiliency.activations.get_or_create(&self.labels(kind, status)).inc();
    }
}

impl Metrics {
    /// A Resiliency resource was loaded.
    pub fn resiliency_loaded(&self, name: &str, namespace: &str) {
        if self.0.enabled {
            let l = self.labels(&[("name", name), ("namespace", namespace)]);
            self.0.f.resiliency.loaded.get_or_create(&l).0.inc();
        }
    }

    /// The reporter of a policy of resource `name` for `target` (`None` when metrics are off).
    pub fn resiliency_policy(&self, name: &str, namespace: &str, outbound: bool, target: String) -> Option<PolicyMetrics> {
        self.0.enabled.then(|| PolicyMetrics {
            metrics: self.clone(),
            name: name.to_string(),
            namespace: namespace.to_string(),
            direction: if outbound { "outbound" } else { "inbound" },
            target,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_samples_carry_daprds_labels() {
        let m = Metrics::new("app", true, true);
        m.resiliency_loaded("res", "");
        let p = m.resiliency_policy("res", "", true, "app_orders".into()).unwrap();
        p.executed(PolicyKind::Retry, "");
        p.executed(PolicyKind::CircuitBreaker, "closed");
        p.activated(PolicyKind::CircuitBreaker, "open");
        let text = m.encode();
        assert!(text.contains("dapr_resiliency_loaded{app_id=\"app\",name=\"res\",namespace=\"\"} 1"), "{text}");
        let l = |policy: &str, status: &str| format!("{{app_id=\"app\",flow_direction=\"outbound\",name=\"res\",namespace=\"\",policy=\"{policy}\",status=\"{status}\",target=\"app_orders\"}}");
        assert!(text.contains(&format!("dapr_resiliency_count{} 1", l("retry", ""))), "{text}");
        assert!(text.contains(&format!("dapr_resiliency_activations_total{} 1", l("circuitbreaker", "open"))), "{text}");
        assert!(text.contains("# TYPE dapr_resiliency_activations_total counter"), "{text}");
        assert!(text.contains(&format!("dapr_resiliency_cb_state{} 1", l("circuitbreaker", "closed"))), "{text}");
        assert!(text.contains(&format!("dapr_resiliency_cb_state{} 0", l("circuitbreaker", "half-open"))), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_policy_reports_retries_timeouts_and_breaker_changes() {
        use crate::resiliency::breaker::{BreakerSpec, SharedBreaker};
        use crate::resiliency::retry::{BackoffPolicy, RetrySpec};
        use crate::resiliency::{AttemptError, Policy};
        use std::sync::Arc;
        use std::time::Duration;
        let m = Metrics::new("app", true, true);
        let retry = Arc::new(RetrySpec { backoff: BackoffPolicy::Constant { interval: Duration::from_millis(10) }, max_retries: Some(2), ..Default::default() });
        let breaker = Arc::new(SharedBreaker::new("cb".into(), Arc::new(BreakerSpec::default())));
        let reporter = || m.resiliency_policy("res", "", false, "Pubsub_ps".into());
        let policy = Policy::new("p", Some(Duration::from_millis(50)), Some(retry), Some(Arc::clone(&breaker))).with_metrics(reporter());
        // Three attempts, each timing out: two retries, one timeout report, and the breaker
        // (gobreaker's default trips after more than 5 consecutive failures) stays closed.
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<(), AttemptError<()>>(())
        };
        assert!(policy.run(slow).await.is_err());
        let fail = || async { Err::<(), _>(AttemptError::Retriable(())) };
        let again = Policy::new("p", None, None, Some(breaker)).with_metrics(reporter());
        for _ in 0..3 {
            let _ = again.run(fail).await;
        }
        let text = m.encode();
        let l = |policy: &str, status: &str| format!("{{app_id=\"app\",flow_direction=\"inbound\",name=\"res\",namespace=\"\",policy=\"{policy}\",status=\"{status}\",target=\"Pubsub_ps\"}}");
        assert!(text.contains(&format!("dapr_resiliency_activations_total{} 2\n", l("retry", ""))), "{text}");
        assert!(text.contains(&format!("dapr_resiliency_activations_total{} 1\n", l("timeout", ""))), "{text}");
        assert!(text.contains(&format!("dapr_resiliency_activations_total{} 1\n", l("circuitbreaker", "open"))), "{text}");
        assert!(text.contains(&format!("dapr_resiliency_count{} 1\n", l("timeout", ""))), "{text}");
        assert!(text.contains(&format!("dapr_resiliency_count{} 2\n", l("circuitbreaker", "closed"))), "{text}");
    }
}
