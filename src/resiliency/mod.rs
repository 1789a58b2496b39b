//! Resiliency: Dapr's `Resiliency` resources (timeouts, retries, circuit breakers) and the policy
//! engine that applies them to calls.
//!
//! ```text
//! resources path ──> config::resources (collects Resiliency documents)
//!                      └─> load::load (scope filter, spec::parse, merge, target checks)
//!                            └─> Resiliency (shared, immutable policies + breaker instances)
//!                                  ├─ for_component_outbound(name, kind) -> Policy   state facade
//!                                  ├─ for_component_inbound(name, kind)  -> Policy   deliveries
//!                                  └─ for_app(app_id)                    -> Policy   invocation
//! Policy::run(|| async { .. }) : breaker -> timeout -> operation, repeated by the retry backoff
//! ```
//! Pure cores: `trip` (expression evaluator), `retry` (backoff schedule), `breaker` (state
//! machine). As in daprd, all loaded resources merge into one set of named policies (a later
//! resource's policy of the same name wins) and targets look policies up by name; a target that
//! names an unknown policy is a load error and that target is dropped. Without a target, daprd's
//! default policies apply when defined (`DefaultRetryPolicy`, `DefaultAppTimeoutPolicy`,
//! `DefaultStatestoreComponentOutboundCircuitBreakerPolicy`...); otherwise the policy is empty: no
//! timeout, no retry, no breaker. Each target has one breaker instance, shared by its calls.

pub mod breaker;
pub mod load;
pub mod policy;
pub mod retry;
pub mod spec;
pub mod trip;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use self::breaker::{BreakerSpec, SharedBreaker};
use self::retry::RetrySpec;
use self::spec::{ActorPolicyNames, ComponentPolicyNames, PolicyNames};
use crate::config::ResourceError;

pub use self::policy::{AttemptError, Policy, PolicyError};

/// The component categories daprd names in its default policy names
/// (`Default<Kind>ComponentOutboundRetryPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentKind {
    /// `state.*`
    StateStore,
    /// `pubsub.*`
    PubSub,
    /// `bindings.*`
    Binding,
    /// `secretstores.*`
    SecretStore,
    /// `configuration.*`
    Configuration,
    /// `lock.*`
    Lock,
    /// `crypto.*`
    Crypto,
}

impl ComponentKind {
    /// daprd's spelling in default policy names.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentKind::StateStore => "Statestore",
            ComponentKind::PubSub => "Pubsub",
            ComponentKind::Binding => "Binding",
            ComponentKind::SecretStore => "Secretstore",
            ComponentKind::Configuration => "Configuration",
            ComponentKind::Lock => "Lock",
            ComponentKind::Crypto => "Crypto",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "Inbound",
            Direction::Outbound => "Outbound",
        }
    }
}

/// All loaded resiliency policies of a sidecar. Cheap to clone; clones share breaker state.
#[derive(Clone, Default)]
pub struct Resiliency {
    inner: Arc<Policies>,
    /// Where policies report (`dapr_resiliency_*`), once `with_metrics` is called.
    metrics: Option<crate::runtime::metrics::Metrics>,
}

/// The merged contents of every loaded resource.
#[derive(Default)]
pub(crate) struct Policies {
    pub(crate) resources: Vec<String>,
    pub(crate) timeouts: HashMap<String, Duration>,
    pub(crate) retries: HashMap<String, Arc<RetrySpec>>,
    pub(crate) breakers: HashMap<String, Arc<BreakerSpec>>,
    pub(crate) apps: HashMap<String, PolicyNames>,
    pub(crate) components: HashMap<String, ComponentPolicyNames>,
    pub(crate) actors: HashMap<String, ActorPolicyNames>,
    /// Whether any policy is named `Default...`, so untargeted calls skip the lookup otherwise.
    pub(crate) has_defaults: bool,
    /// Breaker instances by target key (`app/<id>`, `component/<name>/<direction>`), created on
    /// first use.
    instances: DashMap<String, Arc<SharedBreaker>>,
}

impl Resiliency {
    /// No resources: every policy is empty.
    pub fn none() -> Self {
        Self::default()
    }

    /// Builds from `Resiliency` documents (file, YAML) as `config::load_resources` collects them,
    /// for `app_id`; bad documents and targets come back as errors, never fatal.
    pub fn load(documents: &[(PathBuf, yaml_serde::Value)], app_id: &str) -> (Self, Vec<ResourceError>) {
        let (policies, errors) = load::load(documents, app_id);
        (Self { inner: Arc::new(policies), metrics: None }, errors)
    }

    /// Reports to `metrics` from now on: each loaded resource counts once
    /// (`dapr_resiliency_loaded`), and every policy handed out records its lookups and
    /// activations (see `runtime::metrics::resiliency`).
    pub fn with_metrics(mut self, metrics: &crate::runtime::metrics::Metrics) -> Self {
        if metrics.enabled() {
            for name in &self.inner.resources {
                metrics.resiliency_loaded(name, "");
            }
            self.metrics = Some(metrics.clone());
        }
        self
    }

    /// `policy` reporting its metrics under daprd's `target` (`app_<id>`, `<Kind>_<name>`).
    fn observed(&self, policy: Policy, outbound: bool, target: impl FnOnce() -> String) -> Policy {
        match &self.metrics {
            Some(m) if !policy.is_noop() => {
                // daprd names every policy after the last resource it loaded.
                let name = self.inner.resources.last().map_or("", String::as_str);
                policy.with_metrics(m.resiliency_policy(name, "", outbound, target()))
            }
            _ => policy,
        }
    }

    /// Names of the resources loaded.
    pub fn resource_names(&self) -> &[String] {
        &self.inner.resources
    }

    /// Whether `targets.apps` names this app (daprd's `PolicyDefined`).
    pub fn has_app_target(&self, app_id: &str) -> bool {
        self.inner.apps.contains_key(app_id)
    }

    /// Whether `targets.components` names this component.
    pub fn has_component_target(&self, name: &str) -> bool {
        self.inner.components.contains_key(name)
    }

    /// The policy for service invocation of `app_id` (`targets.apps.<app_id>`, else the
    /// `DefaultApp*Policy` / `Default*Policy` defaults). One breaker instance per app id.
    ///
    /// Service invocation classifies its own failures: the `matching` codes of the retry policy
    /// (`policy.retry().map(|r| &r.matching)`) say which HTTP statuses / gRPC codes are
    /// `AttemptError::Retriable`.
    pub fn for_app(&self, app_id: &str) -> Policy {
        let names = match self.inner.apps.get(app_id) {
            Some(n) => n.clone(),
            None => self.defaults(&["App"]),
        };
        let policy = self.build(|| format!("endpoint[{app_id}]"), &names, || app_id.to_string(), || format!("app/{app_id}"));
        self.observed(policy, true, || format!("app_{app_id}"))
    }

    /// The policy for calls from the app into component `name` (state get/save, publish,
    /// output bindings...): `targets.components.<name>.outbound`, else the defaults for `kind`.
    pub fn for_component_outbound(&self, name: &str, kind: ComponentKind) -> Policy {
        self.for_component(name, kind, Direction::Outbound)
    }

    /// The policy for deliveries from component `name` to the app (subscriptions, input
    /// bindings): `targets.components.<name>.inbound`, else the defaults for `kind`.
    pub fn for_component_inbound(&self, name: &str, kind: ComponentKind) -> Policy {
        self.for_component(name, kind, Direction::Inbound)
    }

    fn for_component(&self, name: &str, kind: ComponentKind, dir: Direction) -> Policy {
        let names = match self.inner.components.get(name) {
            Some(c) if dir == Direction::Outbound => c.outbound.clone(),
            Some(c) => c.inbound.clone(),
            None => {
                let d = dir.as_str();
                self.defaults(&[&format!("{}Component{d}", kind.as_str()), &format!("Component{d}"), "Component"])
            }
        };
        let label = if dir == Direction::Outbound { "output" } else { "input" };
        let policy = self.build(
            || format!("component[{name}] {label}"),
            &names,
            || name.to_string(),
            || format!("component/{name}/{}", dir.as_str()),
        );
        self.observed(policy, dir == Direction::Outbound, || format!("{}_{name}", kind.as_str()))
    }

    /// daprd's default policies: for each of timeout, retry and breaker separately, the first of
    /// `Default<level>Policy` over `levels` (most specific first), then `Default<X>Policy`.
    fn defaults(&self, levels: &[&str]) -> PolicyNames {
        if !self.inner.has_defaults {
            return PolicyNames::default();
        }
        fn pick<V>(map: &HashMap<String, V>, levels: &[&str], what: &str) -> Option<String> {
            levels.iter().chain(std::iter::once(&"")).map(|l| format!("Default{l}{what}Policy")).find(|n| map.contains_key(n))
        }
        PolicyNames {
            timeout: pick(&self.inner.timeouts, levels, "Timeout"),
            retry: pick(&self.inner.retries, levels, "Retry"),
            circuit_breaker: pick(&self.inner.breakers, levels, "CircuitBreaker"),
        }
    }

    fn build(&self, name: impl FnOnce() -> String, names: &PolicyNames, target: impl FnOnce() -> String, key: impl FnOnce() -> String) -> Policy {
        let p = &self.inner;
        let timeout = names.timeout.as_ref().and_then(|n| p.timeouts.get(n)).copied();
        let retry = names.retry.as_ref().and_then(|n| p.retries.get(n)).cloned();
        let breaker = names.circuit_breaker.as_ref().and_then(|n| p.breakers.get(n).map(|spec| (n, spec))).map(|(cb, spec)| {
            let key = key();
            if let Some(b) = p.instances.get(&key) {
                return Arc::clone(b.value());
            }
            let instance_name = format!("{cb}-{}", target());
            Arc::clone(p.instances.entry(key).or_insert_with(|| Arc::new(SharedBreaker::new(instance_name, Arc::clone(spec)))).value())
        });
        if timeout.is_none() && retry.is_none() && breaker.is_none() {
            return Policy::none();
        }
        Policy::new(name(), timeout, retry, breaker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resiliency::breaker::BreakerState;

    fn load_one(text: &str, app_id: &str) -> (Resiliency, Vec<ResourceError>) {
        let v: yaml_serde::Value = yaml_serde::from_str(text).unwrap();
        Resiliency::load(&[(PathBuf::from("r.yaml"), v)], app_id)
    }

    const DOC: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: res
spec:
  policies:
    timeouts:
      fast: 1s
      DefaultTimeoutPolicy: 9s
    retries:
      three:
        duration: 10ms
        maxRetries: 3
      DefaultStatestoreComponentOutboundRetryPolicy:
        maxRetries: 1
    circuitBreakers:
      cb:
        trip: consecutiveFailures >= 1
  targets:
    apps:
      orders:
        timeout: fast
        retry: three
        circuitBreaker: cb
    components:
      store:
        outbound:
          retry: three
          circuitBreaker: cb
"#;

    #[test]
    fn targets_resolve_their_policies_and_share_one_breaker_per_target() {
        let (r, errors) = load_one(DOC, "me");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(r.resource_names(), ["res".to_string()]);
        let app = r.for_app("orders");
        assert_eq!(app.timeout(), Some(Duration::from_secs(1)));
        assert_eq!(app.retry().and_then(|r| r.max_retries), Some(3));
        assert_eq!(app.breaker_state(), Some(BreakerState::Closed));
        assert!(r.has_app_target("orders") && !r.has_app_target("other"));
        let out = r.for_component_outbound("store", ComponentKind::StateStore);
        assert_eq!(out.timeout(), None, "a target without timeout does not take the default");
        assert_eq!(out.retry().and_then(|r| r.max_retries), Some(3));
        assert!(r.for_component_inbound("store", ComponentKind::StateStore).is_noop());
        // Clones of the engine and later lookups share the same breaker instance.
        let again = r.clone().for_app("orders");
        let fail = || async { Err::<(), _>(AttemptError::Permanent(())) };
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            let _ = app.run(fail).await;
        });
        assert_eq!(again.breaker_state(), Some(BreakerState::Open));
        assert_eq!(out.breaker_state(), Some(BreakerState::Closed), "other targets have their own instance");
    }

    #[test]
    fn untargeted_calls_take_the_most_specific_default() {
        let (r, _) = load_one(DOC, "me");
        let other_store = r.for_component_outbound("other", ComponentKind::StateStore);
        assert_eq!(other_store.retry().and_then(|r| r.max_retries), Some(1));
        assert_eq!(other_store.timeout(), Some(Duration::from_secs(9)), "the top-level default");
        let pubsub = r.for_component_outbound("bus", ComponentKind::PubSub);
        assert!(pubsub.retry().is_none());
        assert_eq!(pubsub.timeout(), Some(Duration::from_secs(9)));
        assert_eq!(r.for_app("billing").timeout(), Some(Duration::from_secs(9)));
        assert!(Resiliency::none().for_app("x").is_noop());
    }
}
