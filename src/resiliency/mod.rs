//! Resiliency: Dapr's `Resiliency` resources (timeouts, retries, circuit breakers) and the policy
//! engine that applies them to calls.
//!
//! ```text
//! resources path ──> config::resources (collects Resiliency documents)
//!                      └─> load::load (scope filter, spec::parse, merge, target checks)
//!                            └─> Resiliency (shared, immutable policies + breaker instances)
//!                                  ├─ for_component_outbound(name, kind) -> Policy   state, secrets, publish
//!                                  ├─ for_component_inbound(name, kind)  -> Policy   deliveries
//!                                  ├─ for_endpoint(app_id, endpoint)     -> Policy   invocation
//!                                  └─ built_in(BuiltIn::..)              -> Policy   daprd's built-in retries
//! Policy::run(|| async { .. }) : breaker -> timeout -> operation, repeated by the retry backoff
//! ```
//! Pure cores: `trip` (CEL trip expression), `retry` (backoff schedule), `breaker` (state
//! machine). As in daprd, all loaded resources merge into one set of named policies (a later
//! resource's policy of the same name wins) and targets look policies up by name. A target that
//! names an unknown policy keeps its target (so daprd's built-in service retries stay off for it)
//! but gets nothing for that part, as daprd (rapr also reports it at load; daprd is silent).
//! Without a target, daprd's default policies apply when defined (`DefaultRetryPolicy`,
//! `DefaultAppTimeoutPolicy`, `DefaultStatestoreComponentOutboundCircuitBreakerPolicy`...);
//! otherwise the policy is empty: no timeout, no retry, no breaker.
//!
//! Breaker instances are daprd's: one per component (and direction's policy) for components; for
//! service invocation one per app *and endpoint* (`<app>:<method>`, daprd's `EndpointPolicy`
//! key), kept in a per-app cache of `circuitBreakerCacheSize` (default 100) that forgets the
//! least recently used, so one failing method never trips a whole app.
//!
//! Built-in policies (`BuiltIn`) are retry policies daprd uses where no user policy is named:
//! `DaprBuiltInServiceRetries` (3 retries 1 s apart), `DaprBuiltInInitializationRetries`... A
//! resource may redefine one under its name, but never below 3 retries (raised, with a warning);
//! `DaprBuiltInActorNotFoundRetries` cannot be redefined.

pub mod breaker;
pub mod builtin;
mod endpoints;
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
use self::endpoints::EndpointBreakers;
use self::retry::RetrySpec;
use self::spec::{ActorPolicyNames, ComponentPolicyNames, PolicyNames};
use crate::config::ResourceError;

pub use self::builtin::BuiltIn;
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
    /// `targets.apps.<id>.circuitBreakerCacheSize`, when set.
    pub(crate) app_cache_sizes: HashMap<String, usize>,
    pub(crate) components: HashMap<String, ComponentPolicyNames>,
    pub(crate) actors: HashMap<String, ActorPolicyNames>,
    /// Whether any policy is named `Default...`, so untargeted calls skip the lookup otherwise.
    pub(crate) has_defaults: bool,
    /// Component breaker instances by `component/<name>/<direction>`, created on first use.
    instances: DashMap<String, Arc<SharedBreaker>>,
    /// Invocation breaker instances: per app, one per endpoint.
    app_breakers: DashMap<String, Arc<EndpointBreakers>>,
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

    /// The policy for service invocation of `endpoint` on app `app_id`
    /// (`targets.apps.<app_id>`, else the `DefaultApp*Policy` / `Default*Policy` defaults).
    /// `endpoint` is daprd's breaker key, `<id>:<method>` as the caller wrote the id (see
    /// `endpoint_key`): each endpoint has its own breaker.
    ///
    /// Service invocation classifies its own failures: the `matching` codes of the retry policy
    /// (`policy.retry().map(|r| &r.matching)`) say which HTTP statuses / gRPC codes are
    /// `AttemptError::Retriable`.
    pub fn for_endpoint(&self, app_id: &str, endpoint: &str) -> Policy {
        let names = match self.inner.apps.get(app_id) {
            Some(n) => n.clone(),
            None => self.defaults(&["App"]),
        };
        let p = &self.inner;
        let timeout = names.timeout.as_ref().and_then(|n| p.timeouts.get(n)).copied();
        let retry = names.retry.as_ref().and_then(|n| p.retries.get(n)).cloned();
        let breaker = names.circuit_breaker.as_ref().and_then(|n| p.breakers.get(n)).map(|spec| {
            let cache = match p.app_breakers.get(app_id) {
                Some(c) => Arc::clone(c.value()),
                None => {
                    let size = p.app_cache_sizes.get(app_id).copied().unwrap_or(endpoints::DEFAULT_CACHE_SIZE);
                    Arc::clone(p.app_breakers.entry(app_id.to_string()).or_insert_with(|| Arc::new(EndpointBreakers::new(size))).value())
                }
            };
            cache.get(endpoint, spec)
        });
        if timeout.is_none() && retry.is_none() && breaker.is_none() {
            return Policy::none();
        }
        let policy = Policy::new(format!("endpoint[{app_id}, {endpoint}]"), timeout, retry, breaker);
        self.observed(policy, true, || format!("app_{app_id}"))
    }

    /// A resource's redefinition of a built-in policy, if any (retries only).
    pub fn built_in_override(&self, which: BuiltIn) -> Option<Policy> {
        self.inner.retries.get(which.name()).map(|r| Policy::new(which.name(), None, Some(Arc::clone(r)), None))
    }

    /// A built-in retry policy (retries only): a resource's policy of that name, else daprd's.
    pub fn built_in(&self, which: BuiltIn) -> Policy {
        let retry = self.inner.retries.get(which.name()).cloned().unwrap_or_else(|| Arc::new(which.default_spec()));
        Policy::new(which.name(), None, Some(retry), None)
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

    /// The timeout of `name`'s outbound policy, if any: without building the policy (no breaker
    /// instance), for component clients whose own deadline yields to it.
    pub fn component_outbound_timeout(&self, name: &str, kind: ComponentKind) -> Option<Duration> {
        let names = match self.inner.components.get(name) {
            Some(c) => c.outbound.timeout.clone(),
            None if !self.inner.has_defaults => None,
            None => self.defaults(&[&format!("{}ComponentOutbound", kind.as_str()), "ComponentOutbound", "Component"]).timeout,
        };
        names.and_then(|n| self.inner.timeouts.get(&n)).copied().filter(|t| !t.is_zero())
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
mod tests;
