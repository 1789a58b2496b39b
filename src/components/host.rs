//! `ComponentHost`: the one process that owns the lifecycle of one component instance, whatever
//! its category (docs/architecture.md §1.3).
//!
//! Lifecycle only: init in `pre_start` (the registry's factory under `initTimeout`; a failure is
//! a spawn error the supervisor retries with backoff), a health probe every
//! `--component-health-probe-interval`, reconnect in place, drain and close in `post_stop`.
//! Requests never pass through its mailbox: the facades call the instance's trait object from
//! the directory snapshot through the category's per-call wrapper, which holds a token of the
//! instance's in-flight tracker so draining waits for it.
//!
//! After `--component-health-threshold` consecutive failed probes the component is reported
//! failing (metadata shows it; health does not change, as daprd never flips healthz after
//! start). While failing, a probe that fails again builds a fresh instance from the same spec;
//! once it initialises, the supervisor publishes it, and only then is the old one drained and
//! closed, so calls already running on it finish there.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::category::Instance;
use super::registry::{ComponentError, Registry};
use super::supervisor::HostEvents;
use crate::config::ComponentSpec;

/// How the host probes its component after start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthProbe {
    /// Time between probes; zero turns probing off.
    pub interval: Duration,
    /// Consecutive failures before the component is reported failing.
    pub threshold: u32,
}

impl Default for HealthProbe {
    fn default() -> Self {
        Self { interval: Duration::from_secs(5), threshold: 3 }
    }
}

/// One live instance: the trait object and the tracker its in-flight calls hold tokens of.
#[derive(Clone)]
pub struct Live {
    /// The initialised component.
    pub instance: Instance,
    /// Calls running on it (the per-call wrappers take a token).
    pub in_flight: TaskTracker,
    /// Fired when the instance is retired, before draining: subscriptions on it stop taking
    /// messages (the deliveries subscribe again on the next instance).
    pub retired: CancellationToken,
}

impl Live {
    fn new(instance: Instance) -> Self {
        Self { instance, in_flight: TaskTracker::new(), retired: CancellationToken::new() }
    }

    /// Waits (at most `deadline`) for the calls running on this instance, then closes it.
    async fn drain_and_close(self, deadline: Duration) {
        self.retired.cancel();
        self.in_flight.close();
        // Callers gave up at their own deadline; a backend that never answers must not hold the
        // shutdown forever.
        if tokio::time::timeout(deadline, self.in_flight.wait()).await.is_err() {
            tracing::warn!(pending = self.in_flight.len(), "component calls still pending when closing; abandoned");
        }
        self.instance.close().await;
    }
}

/// Messages of `ComponentHost`; built only in this file and by `ComponentHostClient`.
pub enum ComponentHostMsg {
    /// The current instance.
    Current(RpcReplyPort<Live>),
    /// Time to probe.
    Probe,
    /// A probe (and maybe a rebuild) finished.
    Probed(Outcome),
}

// A local message only (ractor's `cluster` feature, on with ractor_cluster, wants it said).
impl ractor::Message for ComponentHostMsg {}

/// What a probe found.
pub enum Outcome {
    /// The backend answered.
    Healthy,
    /// The backend did not answer (and, while failing, no fresh instance could be built).
    Unhealthy(String),
    /// While failing, a fresh instance initialised: it replaces the live one.
    Rebuilt(Instance),
}

/// Arguments of a host: the resolved spec and where to report.
pub struct ComponentHostArgs {
    /// The component definition, its `secretKeyRef`s already resolved.
    pub spec: ComponentSpec,
    /// Where implementations are looked up.
    pub registry: Arc<Registry>,
    /// Health probing.
    pub probe: HealthProbe,
    /// The component call deadline: bounds a probe, and how long a replaced instance drains.
    pub call_timeout: Duration,
    /// Where health changes and replacements are reported (the supervisor).
    pub events: HostEvents,
}

/// The process owning one component instance.
pub struct ComponentHost;

/// Host state.
pub struct ComponentHostState {
    id: ActorId,
    args: ComponentHostArgs,
    live: Live,
    failures: u32,
    failing: bool,
    probing: bool,
    timer: Option<tokio::task::JoinHandle<()>>,
}

async fn init(spec: &ComponentSpec, registry: &Registry) -> Result<Instance, ComponentError> {
    fail::fail_point!("component:init", |arg: Option<String>| Err(ComponentError::Init {
        name: spec.name.clone(),
        reason: format!("failpoint component:init ({})", arg.unwrap_or_default()),
    }));
    let timeout = spec.init_timeout;
    tokio::time::timeout(timeout, registry.build(spec)).await.map_err(|_| ComponentError::InitTimeout(timeout))?
}

impl ComponentHostState {
    /// Probes on a task, so a hanging backend never holds the mailbox (stop stays prompt).
    fn probe(&mut self, me: &ActorRef<ComponentHostMsg>) {
        if self.probing {
            return;
        }
        self.probing = true;
        let instance = self.live.instance.clone();
        let rebuild = self.failing.then(|| (self.args.spec.clone(), Arc::clone(&self.args.registry)));
        // A probe slower than the interval is a failed probe (and never longer than a call).
        let timeout = self.args.probe.interval.min(self.args.call_timeout);
        let me = me.clone();
        tokio::spawn(async move {
            let pinged = match tokio::time::timeout(timeout, instance.ping()).await {
                Ok(r) => r,
                Err(_) => Err(format!("the health probe got no answer within {timeout:?}")),
            };
            let outcome = match (pinged, rebuild) {
                (Ok(()), _) => Outcome::Healthy,
                (Err(e), None) => Outcome::Unhealthy(e),
                (Err(e), Some((spec, registry))) => match init(&spec, &registry).await {
                    Ok(fresh) => Outcome::Rebuilt(fresh),
                    Err(rebuild) => {
                        tracing::debug!(component = %spec.name, error = %rebuild, "reconnect attempt failed");
                        Outcome::Unhealthy(e)
                    }
                },
            };
            if let Err(ractor::MessagingErr::SendErr(ComponentHostMsg::Probed(Outcome::Rebuilt(fresh)))) = me.send_message(ComponentHostMsg::Probed(outcome)) {
                // The host stopped meanwhile: nobody will use the fresh instance.
                fresh.close().await;
            }
        });
    }

    fn probed(&mut self, outcome: Outcome) {
        self.probing = false;
        let name = self.args.spec.name.clone();
        match outcome {
            Outcome::Healthy => {
                self.failures = 0;
                if std::mem::take(&mut self.failing) {
                    tracing::info!(component = %name, "component backend answers again");
                    self.args.events.health(self.id, None);
                }
            }
            Outcome::Unhealthy(e) => {
                self.failures = self.failures.saturating_add(1);
                tracing::warn!(component = %name, failures = self.failures, error = %e, "component health probe failed");
                if self.failures >= self.args.probe.threshold.max(1) && !self.failing {
                    self.failing = true;
                    tracing::error!(component = %name, error = %e, "component is failing; reconnecting in place");
                    self.args.events.health(self.id, Some(e));
                }
            }
            Outcome::Rebuilt(fresh) => {
                let old = std::mem::replace(&mut self.live, Live::new(fresh));
                self.failures = 0;
                self.failing = false;
                tracing::info!(component = %name, "component reconnected with a fresh instance");
                let (events, live, deadline, id) = (self.args.events.clone(), self.live.clone(), self.args.call_timeout, self.id);
                // Published first, drained after: a request that took the old instance from the
                // snapshot finishes on it; none takes it once the new snapshot is out.
                tokio::spawn(async move {
                    events.replaced(id, live).await;
                    old.drain_and_close(deadline).await;
                });
            }
        }
    }
}

impl Actor for ComponentHost {
    type Msg = ComponentHostMsg;
    type State = ComponentHostState;
    type Arguments = ComponentHostArgs;

    async fn pre_start(&self, me: ActorRef<Self::Msg>, args: Self::Arguments) -> Result<Self::State, ActorProcessingErr> {
        let instance = init(&args.spec, &args.registry).await?;
        Ok(ComponentHostState { id: me.get_id(), args, live: Live::new(instance), failures: 0, failing: false, probing: false, timer: None })
    }

    async fn post_start(&self, me: ActorRef<Self::Msg>, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        if !st.args.probe.interval.is_zero() {
            st.timer = Some(me.send_interval(st.args.probe.interval, || ComponentHostMsg::Probe));
        }
        Ok(())
    }

    async fn handle(&self, me: ActorRef<Self::Msg>, msg: Self::Msg, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        match msg {
            ComponentHostMsg::Current(reply) => {
                let _ = reply.send(st.live.clone());
            }
            ComponentHostMsg::Probe => st.probe(&me),
            ComponentHostMsg::Probed(outcome) => st.probed(outcome),
        }
        Ok(())
    }

    async fn post_stop(&self, _me: ActorRef<Self::Msg>, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        if let Some(t) = st.timer.take() {
            t.abort();
        }
        st.live.clone().drain_and_close(DRAIN_DEADLINE).await;
        Ok(())
    }
}

/// The longest a stopping host waits for its in-flight calls.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// Asks a freshly spawned host for its instance.
pub async fn current(host: &ActorRef<ComponentHostMsg>, timeout: Duration) -> Result<Live, String> {
    crate::runtime::call::call(host, ComponentHostMsg::Current, timeout).await.map_err(|e| format!("the component host did not answer: {e}"))
}
