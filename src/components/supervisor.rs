//! `ComponentSupervisor`: starts one host process per component instance and keeps them alive.
//!
//! ```text
//! ComponentSupervisor              restart policy: per child, RestartPolicy backoff; never escalates
//! └── ComponentHost (category/name)*  one per component instance, any category; secret stores
//!                                  first (the others resolve secretKeyRefs through them)
//! ```
//! Hosts report health changes and in-place replacements (`HostEvents`); the supervisor turns
//! every change into a new directory snapshot, filling each category's typed map from the
//! host's `Instance` (`Directory::insert_ready`, generated per category by `categories.rs`).
//! A failed init or a dead host marks the component failed in the directory and schedules a
//! retry (unless the error is permanent: unknown type, bad metadata). The sidecar never exits
//! because a component failed (DESIGN.md §5). Starts run on their own tasks (`starter.rs`), so a
//! slow server never holds up the others or this mailbox. Resources that fail outside any
//! component (load errors; an `HTTPEndpoint` whose secrets do not resolve) are published here as
//! failed entries too, so metadata and health show every resource failure in one place.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::category::{Category, EntryContext};
use super::directory::{ComponentState, ComponentStatus, Directory, DirectoryHandle};
use super::host::{ComponentHostArgs, HealthProbe, Live};
use super::registry::Registry;
use super::starter::{self, Running, StartFailure};
use crate::api::state_keys::KeyPrefix;
use crate::components::metadata::templates::Identity;
use crate::config::{ComponentSpec, ResourceError};
use crate::runtime::restart::RestartPolicy;

#[path = "supervisor_reconcile.rs"]
mod reconcile;

/// Messages of `ComponentSupervisor`.
pub enum ComponentSupervisorMsg {
    /// Start (or restart) a component by name.
    Start(String),
    /// A start attempt finished (`generation`: the child's, when it began).
    Started { name: String, generation: u64, result: Result<Running, StartFailure> },
    /// Hot reload: the components now on disk; replies once the changes are published.
    Reconcile { specs: Vec<ComponentSpec>, load_errors: Vec<ResourceError>, reply: RpcReplyPort<()> },
    /// A reloaded component's old host has stopped: start the new one.
    Retired { name: String, generation: u64 },
    /// Reply once every component's first attempt has finished.
    AwaitInitial(RpcReplyPort<()>),
    /// Stop every host, waiting for their in-flight work.
    StopAll(RpcReplyPort<()>),
    /// A resource that failed after loading (an `HTTPEndpoint` whose secrets did not resolve):
    /// shown as failed like the load errors; replies once published.
    ResourceFailed(ResourceError, RpcReplyPort<()>),
    /// A host's health probe changed its verdict: `Some(error)` failing, `None` healthy again.
    Health { host: ActorId, failing: Option<String> },
    /// A host replaced its instance in place; replies once the new one is published.
    Replaced { host: ActorId, live: Live, reply: RpcReplyPort<()> },
}

// A local message only (ractor's `cluster` feature, on with ractor_cluster, wants it said).
impl ractor::Message for ComponentSupervisorMsg {}

/// How a host reports to its supervisor (built by the supervisor, handed to each host).
#[derive(Clone)]
pub struct HostEvents {
    sup: ActorRef<ComponentSupervisorMsg>,
}

impl HostEvents {
    /// The host `host` is failing (`Some`) or healthy again (`None`).
    pub fn health(&self, host: ActorId, failing: Option<String>) {
        let _ = self.sup.send_message(ComponentSupervisorMsg::Health { host, failing });
    }

    /// The host `host` now serves `live`; returns once it is published (or the supervisor is gone).
    pub async fn replaced(&self, host: ActorId, live: Live) {
        let _ = self.sup.call(|reply| ComponentSupervisorMsg::Replaced { host, live, reply }, Some(Duration::from_secs(10))).await;
    }
}

/// Arguments of the supervisor.
pub struct ComponentSupervisorArgs {
    /// Runtime id, prefixing child names (several sidecars may share an OS process in tests).
    pub runtime_id: String,
    /// The app id (key prefixes).
    pub app_id: String,
    /// Components to run.
    pub specs: Vec<ComponentSpec>,
    /// Resources that failed to load, shown as failed.
    pub load_errors: Vec<ResourceError>,
    /// Implementations.
    pub registry: Arc<Registry>,
    /// Where snapshots are published.
    pub directory: DirectoryHandle,
    /// Backoff.
    pub policy: RestartPolicy,
    /// Deadline of every call into a component.
    pub call_timeout: Duration,
    /// How hosts probe their components after start.
    pub probe: HealthProbe,
    /// Where init outcomes are counted (`dapr_runtime_component_*`).
    pub metrics: crate::runtime::metrics::Metrics,
}

struct Child {
    spec: ComponentSpec,
    status: ComponentStatus,
    attempts: u32,
    running: Option<Running>,
    prefix: KeyPrefix,
    first_done: bool,
    starting: bool,
    /// Bumped each time a reload replaces the spec: a start begun for an older one is discarded.
    generation: u64,
}

/// Supervisor state.
pub struct ComponentSupervisorState {
    args: ComponentSupervisorArgs,
    children: BTreeMap<String, Child>,
    order: Vec<String>,
    /// Resources that failed to load (replaced on each reload).
    load_failures: Vec<ComponentStatus>,
    /// Resources reported failed after loading (`ResourceFailed`).
    failed_resources: Vec<ComponentStatus>,
    initial_waiters: Vec<RpcReplyPort<()>>,
    /// Components waiting for a secret store's first start attempt, by store name.
    waiting_on_secrets: BTreeMap<String, Vec<String>>,
    stopping: bool,
}

/// The process supervising component hosts.
pub struct ComponentSupervisor;

impl ComponentSupervisorState {
    fn publish(&self) {
        let mut d = Directory { metrics: Some(self.args.metrics.clone()).filter(crate::runtime::metrics::Metrics::enabled), ..Directory::default() };
        for name in &self.order {
            let Some(c) = self.children.get(name) else { continue };
            d.components.push(c.status.clone());
            if c.status.state == ComponentState::Unsupported {
                continue;
            }
            match (&c.running, Category::of(&c.spec.type_name)) {
                (Some(Running { live, .. }), _) => {
                    let ctx = EntryContext { call_timeout: self.args.call_timeout, in_flight: &live.in_flight, prefix: &c.prefix, retired: &live.retired };
                    d.insert_ready(name.clone(), &live.instance, ctx);
                }
                (None, Some(category)) => {
                    let why = c.status.error.clone().unwrap_or_else(|| "starting".into());
                    d.insert_unavailable(name.clone(), category, why);
                }
                (None, None) => {}
            }
        }
        d.components.extend(self.load_failures.iter().cloned());
        d.components.extend(self.failed_resources.iter().cloned());
        self.args.directory.publish(d);
    }

    /// The child whose running host is `host` (none once it stopped or was replaced).
    fn child_of(&mut self, host: ActorId) -> Option<&mut Child> {
        if self.stopping {
            return None;
        }
        self.children.values_mut().find(|c| c.running.as_ref().is_some_and(|r| r.id() == host))
    }

    fn wake_initial_waiters(&mut self) {
        if self.children.values().all(|c| c.first_done) {
            for w in self.initial_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    fn schedule_retry(&mut self, me: &ActorRef<ComponentSupervisorMsg>, name: &str) {
        let Some(c) = self.children.get_mut(name) else { return };
        c.attempts += 1;
        let delay = self.args.policy.delay(c.attempts);
        tracing::info!(component = %name, attempt = c.attempts, delay = ?delay, "retrying component");
        // The timer runs on its own; its handle is not needed to cancel it.
        drop(me.send_after(delay, {
            let name = name.to_string();
            move || ComponentSupervisorMsg::Start(name)
        }));
    }

    /// Starts `name` on a task, unless it must wait for its secret store's first attempt.
    fn start(&mut self, me: &ActorRef<ComponentSupervisorMsg>, name: String) {
        let Some(c) = self.children.get(&name) else { return };
        if c.running.is_some() || c.starting || self.stopping {
            return;
        }
        let needs_secrets = c.spec.metadata.iter().any(|m| m.value.is_none() && m.secret_key_ref.is_some());
        if let (true, Some(store)) = (needs_secrets, c.spec.secret_store.as_deref()) {
            if self.children.get(store).is_some_and(|s| !s.first_done) {
                self.waiting_on_secrets.entry(store.to_string()).or_default().push(name);
                return;
            }
        }
        let Some(c) = self.children.get_mut(&name) else { return };
        c.starting = true;
        let generation = c.generation;
        let spec = c.spec.clone();
        let child_name = format!("{}/{}/{}", self.args.runtime_id, spec.category(), spec.name);
        let cell = me.get_cell();
        let me = me.clone();
        let (registry, probe, call_timeout) = (Arc::clone(&self.args.registry), self.args.probe, self.args.call_timeout);
        let events = HostEvents { sup: me.clone() };
        // The snapshot already holds every secret store whose first attempt finished.
        let directory = self.args.directory.load();
        let identity = Identity::from_env(&self.args.app_id);
        tokio::spawn(async move {
            let result = match starter::resolve_secrets(&spec, &directory, &identity).await {
                Ok(spec) => starter::start(ComponentHostArgs { spec, registry, probe, call_timeout, events }, child_name, cell).await,
                Err(f) => Err(f),
            };
            let _ = me.send_message(ComponentSupervisorMsg::Started { name, generation, result });
        });
    }

    fn started(&mut self, me: &ActorRef<ComponentSupervisorMsg>, name: String, generation: u64, result: Result<Running, StartFailure>) {
        let current = self.children.get(&name).map(|c| c.generation);
        if current != Some(generation) {
            // Begun for a spec a reload has since replaced or removed.
            if let Ok(running) = result {
                running.cell().stop(None);
            }
            return;
        }
        let Some(c) = self.children.get_mut(&name) else { return };
        c.first_done = true;
        c.starting = false;
        match result {
            Ok(running) if self.stopping => running.cell().stop(None),
            Ok(running) => {
                tracing::info!(component = %name, r#type = %c.spec.type_name, "component ready");
                self.args.metrics.component_init(&c.spec.type_name, &name, None);
                c.status.state = ComponentState::Ready;
                c.status.error = None;
                c.status.capabilities = running.live.instance.capabilities();
                c.attempts = 0;
                c.running = Some(running);
            }
            Err(f) => {
                let file = c.spec.source.display().to_string();
                tracing::error!(component = %name, file = %file, error = %f.message, permanent = f.permanent, "component failed to start");
                self.args.metrics.component_init(&c.spec.type_name, &name, Some(&f.message));
                c.status.state = ComponentState::Failed;
                c.status.error = Some(format!("{file}: {}", f.message));
                if !f.permanent {
                    self.schedule_retry(me, &name);
                }
            }
        }
        let waiters = self.waiting_on_secrets.remove(&name).unwrap_or_default();
        if !waiters.is_empty() {
            // They read this store from the snapshot: publish it first.
            self.publish();
        }
        for waiter in waiters {
            self.start(me, waiter);
        }
    }
}

impl Actor for ComponentSupervisor {
    type Msg = ComponentSupervisorMsg;
    type State = ComponentSupervisorState;
    type Arguments = ComponentSupervisorArgs;

    async fn pre_start(&self, me: ActorRef<Self::Msg>, args: Self::Arguments) -> Result<Self::State, ActorProcessingErr> {
        let mut children = BTreeMap::new();
        let mut order = Vec::new();
        let mut load_failures: Vec<ComponentStatus> = args.load_errors.iter().map(failed_resource).collect();
        for spec in &args.specs {
            match new_child(spec, &args.app_id) {
                Ok(child) => {
                    order.push(spec.name.clone());
                    children.insert(spec.name.clone(), child);
                }
                Err(status) => load_failures.push(*status),
            }
        }
        // Secret stores first: other components resolve their secretKeyRefs through them.
        order.sort_by_key(|n| children.get(n).is_none_or(|c: &Child| c.spec.category() != "secretstores"));
        for name in &order {
            if children.get(name).is_some_and(|c| !c.first_done) {
                me.send_message(ComponentSupervisorMsg::Start(name.clone()))?;
            }
        }
        let st = ComponentSupervisorState {
            args,
            children,
            order,
            load_failures,
            failed_resources: Vec::new(),
            initial_waiters: Vec::new(),
            waiting_on_secrets: BTreeMap::new(),
            stopping: false,
        };
        st.publish();
        Ok(st)
    }

    async fn handle(&self, me: ActorRef<Self::Msg>, msg: Self::Msg, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        match msg {
            ComponentSupervisorMsg::Start(name) => st.start(&me, name),
            ComponentSupervisorMsg::Reconcile { specs, load_errors, reply } => {
                st.reconcile(&me, specs, load_errors);
                st.publish();
                let _ = reply.send(());
            }
            ComponentSupervisorMsg::Retired { name, generation } => {
                if let Some(c) = st.children.get_mut(&name).filter(|c| c.generation == generation) {
                    c.starting = false;
                    st.start(&me, name);
                }
            }
            ComponentSupervisorMsg::Started { name, generation, result } => {
                st.started(&me, name, generation, result);
                st.publish();
                st.wake_initial_waiters();
            }
            ComponentSupervisorMsg::AwaitInitial(reply) => {
                st.initial_waiters.push(reply);
                st.wake_initial_waiters();
            }
            ComponentSupervisorMsg::Health { host, failing } => {
                if let Some(c) = st.child_of(host) {
                    match failing {
                        Some(e) => {
                            c.status.state = ComponentState::Failing;
                            c.status.error = Some(e);
                        }
                        None => {
                            c.status.state = ComponentState::Ready;
                            c.status.error = None;
                        }
                    }
                    st.publish();
                }
            }
            ComponentSupervisorMsg::Replaced { host, live, reply } => {
                if let Some(c) = st.child_of(host) {
                    c.status.state = ComponentState::Ready;
                    c.status.error = None;
                    c.status.capabilities = live.instance.capabilities();
                    if let Some(r) = c.running.as_mut() {
                        r.live = live;
                    }
                    st.publish();
                }
                let _ = reply.send(());
            }
            ComponentSupervisorMsg::ResourceFailed(e, reply) => {
                st.failed_resources.push(failed_resource(&e));
                st.publish();
                let _ = reply.send(());
            }
            ComponentSupervisorMsg::StopAll(reply) => {
                st.stopping = true;
                // State stores first (they may hold app writes in flight), secret stores last.
                let mut running: Vec<(bool, Running)> = st
                    .children
                    .values_mut()
                    .filter_map(|c| c.running.take().map(|r| (r.live.instance.category() == Category::SecretStores, r)))
                    .collect();
                running.sort_by_key(|(secret, _)| *secret);
                for (_, r) in running {
                    // Drains the host's in-flight work before its store closes.
                    let _ = r.cell().stop_and_wait(None, Some(Duration::from_secs(10))).await;
                }
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(&self, me: ActorRef<Self::Msg>, evt: SupervisionEvent, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("component host failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, format!("component host stopped: {}", reason.unwrap_or_default())),
            _ => return Ok(()),
        };
        if st.stopping {
            return Ok(());
        }
        let id = cell.get_id();
        let Some(name) = st.children.iter().find(|(_, c)| c.running.as_ref().is_some_and(|r| r.id() == id)).map(|(n, _)| n.clone()) else {
            return Ok(());
        };
        if let Some(c) = st.children.get_mut(&name) {
            tracing::error!(component = %name, reason = %reason, "component host died; restarting");
            c.running = None;
            c.status.state = ComponentState::Failed;
            c.status.error = Some(reason);
        }
        st.schedule_retry(&me, &name);
        st.publish();
        Ok(())
    }
}

/// A child for `spec`, not started yet; or, when its key prefix is invalid, its failed status.
fn new_child(spec: &ComponentSpec, app_id: &str) -> Result<Child, Box<ComponentStatus>> {
    let supported = Category::of(&spec.type_name).is_some();
    let mut status = ComponentStatus {
        name: spec.name.clone(),
        type_name: spec.type_name.clone(),
        version: spec.version.clone(),
        state: if supported { ComponentState::Starting } else { ComponentState::Unsupported },
        capabilities: Vec::new(),
        ignore_errors: spec.ignore_errors,
        error: (!supported).then(|| format!("the {} building block is not implemented by rapr yet", spec.category())),
    };
    if !supported {
        tracing::warn!(component = %spec.name, r#type = %spec.type_name, file = %spec.source.display(), "component type not implemented by rapr yet; skipped");
    }
    let prefix = match KeyPrefix::from_spec(spec, app_id) {
        Ok(p) => p,
        Err(e) => {
            status.state = ComponentState::Failed;
            status.error = Some(format!("{}: component {}: metadata keyPrefix: {e}", spec.source.display(), spec.name));
            return Err(Box::new(status));
        }
    };
    Ok(Child { spec: spec.clone(), status, attempts: 0, running: None, prefix, first_done: !supported, starting: false, generation: 0 })
}

fn failed_resource(e: &ResourceError) -> ComponentStatus {
    tracing::error!(error = %e, "resource failed to load");
    ComponentStatus {
        name: e.component.clone().unwrap_or_else(|| e.file.display().to_string()),
        type_name: String::new(),
        version: String::new(),
        state: ComponentState::Failed,
        capabilities: Vec::new(),
        ignore_errors: false,
        error: Some(e.to_string()),
    }
}

/// Front door of the supervisor.
#[derive(Clone)]
pub struct ComponentSupervisorClient {
    sup: ActorRef<ComponentSupervisorMsg>,
}

impl ComponentSupervisorClient {
    /// Wraps the supervisor's ref.
    pub fn new(sup: ActorRef<ComponentSupervisorMsg>) -> Self {
        Self { sup }
    }

    /// Waits until every component's first start attempt has finished (success or failure).
    pub async fn await_initial(&self) {
        let _ = self.sup.call(ComponentSupervisorMsg::AwaitInitial, None).await;
    }

    /// Shows `e` as a failed resource in the directory (metadata, health); returns once published.
    pub async fn report_failed(&self, e: ResourceError) {
        match self.sup.call(|reply| ComponentSupervisorMsg::ResourceFailed(e, reply), Some(Duration::from_secs(5))).await {
            Ok(ractor::rpc::CallResult::Success(())) => {}
            Ok(_) => tracing::error!("the component supervisor did not publish a failed resource in time"),
            Err(err) => tracing::error!(error = %err, "could not report a failed resource to the component supervisor"),
        }
    }

    /// Hot reload: applies the components now on disk (added, changed, removed) and the resources
    /// that failed to load; returns once the result is published.
    pub async fn reconcile(&self, specs: Vec<ComponentSpec>, load_errors: Vec<ResourceError>) {
        let msg = |reply| ComponentSupervisorMsg::Reconcile { specs, load_errors, reply };
        if !matches!(self.sup.call(msg, Some(Duration::from_secs(10))).await, Ok(ractor::rpc::CallResult::Success(()))) {
            tracing::error!("the component supervisor did not apply a reload in time");
        }
    }

    /// Stops every component host, draining their work.
    pub async fn stop_all(&self) {
        let _ = self.sup.call(ComponentSupervisorMsg::StopAll, Some(Duration::from_secs(30))).await;
    }
}

/// Starts a `ComponentSupervisor` over `specs` with a fast health probe (100 ms, threshold 2) and
/// waits for every component's first start: the unit tests' way into the real machinery.
#[cfg(test)]
pub(crate) async fn start_test_supervisor(name: &str, registry: Registry, specs: Vec<ComponentSpec>, directory: &DirectoryHandle) -> ComponentSupervisorClient {
    let args = ComponentSupervisorArgs {
        runtime_id: name.into(),
        app_id: "app".into(),
        specs,
        load_errors: vec![],
        registry: std::sync::Arc::new(registry),
        directory: directory.clone(),
        policy: crate::runtime::restart::RestartPolicy::default(),
        call_timeout: std::time::Duration::from_secs(5),
        probe: super::host::HealthProbe { interval: std::time::Duration::from_millis(100), threshold: 2 },
        metrics: crate::runtime::metrics::Metrics::new("app", false, false),
    };
    let (sup, _) = ractor::Actor::spawn(Some(format!("{name}/components")), ComponentSupervisor, args).await.expect("the supervisor starts");
    let sup = ComponentSupervisorClient::new(sup);
    sup.await_initial().await;
    sup
}
