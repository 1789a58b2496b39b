//! `ComponentSupervisor`: starts one host process per component instance and keeps them alive.
//!
//! ```text
//! ComponentSupervisor            restart policy: per child, RestartPolicy backoff; never escalates
//! └── StateStoreHost (name)*     one per state component; init in pre_start
//! ```
//! A failed init or a dead host marks the component failed in the directory and schedules a
//! retry (unless the error is permanent: unknown type, bad metadata). The sidecar never exits
//! because a component failed (DESIGN.md §5). Inits run on their own tasks, so a slow server
//! never holds up the others or this mailbox.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::directory::{ComponentState, ComponentStatus, Directory, DirectoryHandle, StateEntry};
use super::registry::{ComponentError, Registry};
use super::state::host::{StateStoreHost, StateStoreHostArgs, StateStoreMsg};
use super::state::StateClient;
use crate::api::state_keys::KeyPrefix;
use crate::config::{ComponentSpec, ResourceError};
use crate::runtime::restart::RestartPolicy;

/// Deadline of calls from the API into a store.
pub const STORE_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Messages of `ComponentSupervisor`.
pub enum ComponentSupervisorMsg {
    /// Start (or restart) a component by name.
    Start(String),
    /// A start attempt finished.
    Started { name: String, result: Result<(ActorRef<StateStoreMsg>, StateClient), StartFailure> },
    /// Reply once every component's first attempt has finished.
    AwaitInitial(RpcReplyPort<()>),
    /// Stop every host, waiting for their in-flight work.
    StopAll(RpcReplyPort<()>),
}

/// Why a start attempt failed.
#[derive(Debug, Clone)]
pub struct StartFailure {
    message: String,
    permanent: bool,
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
}

struct Child {
    spec: ComponentSpec,
    status: ComponentStatus,
    attempts: u32,
    host: Option<ActorRef<StateStoreMsg>>,
    entry: Option<StateEntry>,
    first_done: bool,
}

/// Supervisor state.
pub struct ComponentSupervisorState {
    args: ComponentSupervisorArgs,
    children: BTreeMap<String, Child>,
    order: Vec<String>,
    failed_resources: Vec<ComponentStatus>,
    initial_waiters: Vec<RpcReplyPort<()>>,
    stopping: bool,
}

/// The process supervising component hosts.
pub struct ComponentSupervisor;

impl ComponentSupervisorState {
    fn publish(&self) {
        let mut d = Directory::default();
        for name in &self.order {
            let Some(c) = self.children.get(name) else { continue };
            d.components.push(c.status.clone());
            if c.spec.category() == "state" && c.status.state != ComponentState::Unsupported {
                match &c.entry {
                    Some(e) if c.status.state == ComponentState::Ready => {
                        d.state.insert(name.clone(), e.clone());
                    }
                    _ => {
                        d.state_unavailable.insert(name.clone(), c.status.error.clone().unwrap_or_else(|| "starting".into()));
                    }
                }
            }
        }
        d.components.extend(self.failed_resources.iter().cloned());
        self.args.directory.publish(d);
    }

    fn initial_done(&self) -> bool {
        self.children.values().all(|c| c.first_done)
    }

    fn wake_initial_waiters(&mut self) {
        if self.initial_done() {
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
        // The timer task runs on its own; its handle is not needed to cancel it.
        drop(me.send_after(delay, {
            let name = name.to_string();
            move || ComponentSupervisorMsg::Start(name)
        }));
    }
}

impl Actor for ComponentSupervisor {
    type Msg = ComponentSupervisorMsg;
    type State = ComponentSupervisorState;
    type Arguments = ComponentSupervisorArgs;

    async fn pre_start(&self, me: ActorRef<Self::Msg>, args: Self::Arguments) -> Result<Self::State, ActorProcessingErr> {
        let mut children = BTreeMap::new();
        let mut order = Vec::new();
        for spec in &args.specs {
            let supported = args.registry.implements_category(spec.category());
            let status = ComponentStatus {
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
            order.push(spec.name.clone());
            children.insert(
                spec.name.clone(),
                Child { spec: spec.clone(), status, attempts: 0, host: None, entry: None, first_done: !supported },
            );
        }
        let failed_resources = args
            .load_errors
            .iter()
            .map(|e| {
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
            })
            .collect();
        for name in &order {
            if children.get(name).is_some_and(|c: &Child| !c.first_done) {
                me.send_message(ComponentSupervisorMsg::Start(name.clone()))?;
            }
        }
        let st = ComponentSupervisorState { args, children, order, failed_resources, initial_waiters: Vec::new(), stopping: false };
        st.publish();
        Ok(st)
    }

    async fn handle(&self, me: ActorRef<Self::Msg>, msg: Self::Msg, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        match msg {
            ComponentSupervisorMsg::Start(name) => {
                if st.stopping {
                    return Ok(());
                }
                let Some(c) = st.children.get_mut(&name) else { return Ok(()) };
                if c.host.is_some() {
                    return Ok(());
                }
                let spec = c.spec.clone();
                let registry = Arc::clone(&st.args.registry);
                let child_name = format!("{}/state/{}", st.args.runtime_id, spec.name);
                let cell = me.get_cell();
                let me2 = me.clone();
                // Init runs on its own task so a slow server delays neither other components nor
                // this mailbox.
                tokio::spawn(async move {
                    let args = StateStoreHostArgs { spec, registry };
                    let result = match Actor::spawn_linked(Some(child_name), StateStoreHost, args, cell).await {
                        Ok((host, _)) => match StateClient::connect(host.clone(), STORE_CALL_TIMEOUT).await {
                            Ok(client) => Ok((host, client)),
                            Err(e) => {
                                host.stop(None);
                                Err(StartFailure { message: e.to_string(), permanent: false })
                            }
                        },
                        Err(e) => Err(start_failure(e)),
                    };
                    let _ = me2.send_message(ComponentSupervisorMsg::Started { name, result });
                });
            }
            ComponentSupervisorMsg::Started { name, result } => {
                let app_id = st.args.app_id.clone();
                let Some(c) = st.children.get_mut(&name) else { return Ok(()) };
                c.first_done = true;
                match result {
                    Ok((host, client)) => {
                        if st.stopping {
                            host.stop(None);
                        } else {
                            match KeyPrefix::from_spec(&c.spec, &app_id) {
                                Ok(prefix) => {
                                    tracing::info!(component = %name, r#type = %c.spec.type_name, "component ready");
                                    c.status.state = ComponentState::Ready;
                                    c.status.error = None;
                                    c.status.capabilities = client.features().iter().map(|f| f.as_str()).collect();
                                    c.attempts = 0;
                                    c.entry = Some(StateEntry { client, prefix });
                                    c.host = Some(host);
                                }
                                Err(e) => {
                                    host.stop(None);
                                    tracing::error!(component = %name, error = %e, "component failed");
                                    c.status.state = ComponentState::Failed;
                                    c.status.error = Some(e);
                                }
                            }
                        }
                    }
                    Err(f) => {
                        let file = c.spec.source.display().to_string();
                        tracing::error!(component = %name, file = %file, error = %f.message, permanent = f.permanent, "component failed to start");
                        c.status.state = ComponentState::Failed;
                        c.status.error = Some(format!("{file}: {}", f.message));
                        if !f.permanent {
                            st.schedule_retry(&me, &name);
                        }
                    }
                }
                st.publish();
                st.wake_initial_waiters();
            }
            ComponentSupervisorMsg::AwaitInitial(reply) => {
                st.initial_waiters.push(reply);
                st.wake_initial_waiters();
            }
            ComponentSupervisorMsg::StopAll(reply) => {
                st.stopping = true;
                for c in st.children.values_mut() {
                    if let Some(h) = c.host.take() {
                        // Drains the host's in-flight work before its store closes.
                        let _ = h.stop_and_wait(None, Some(Duration::from_secs(10))).await;
                    }
                    c.entry = None;
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
        let Some(name) = st.children.iter().find(|(_, c)| c.host.as_ref().is_some_and(|h| h.get_id() == id)).map(|(n, _)| n.clone()) else {
            return Ok(());
        };
        if let Some(c) = st.children.get_mut(&name) {
            tracing::error!(component = %name, reason = %reason, "component host died; restarting");
            c.host = None;
            c.entry = None;
            c.status.state = ComponentState::Failed;
            c.status.error = Some(reason);
        }
        st.schedule_retry(&me, &name);
        st.publish();
        Ok(())
    }
}

fn start_failure(e: ractor::SpawnErr) -> StartFailure {
    match e {
        ractor::SpawnErr::StartupFailed(err) => {
            let permanent = err.downcast_ref::<ComponentError>().is_some_and(ComponentError::is_permanent);
            StartFailure { message: err.to_string(), permanent }
        }
        other => StartFailure { message: other.to_string(), permanent: false },
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

    /// Stops every component host, draining their work.
    pub async fn stop_all(&self) {
        let _ = self.sup.call(ComponentSupervisorMsg::StopAll, Some(Duration::from_secs(30))).await;
    }
}
