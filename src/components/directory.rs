//! The component directory: a read-only snapshot of every component's state, published by
//! `ComponentSupervisor` through `arc-swap` and read by the API facades on every request.
//!
//! Readers take a snapshot without a lock or a mailbox hop; only the supervisor writes.
//! `Directory` itself, with one typed map per category, is generated from `categories.rs`;
//! this file holds what every category shares (status, health, the handle).

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::api::state_keys::KeyPrefix;
use crate::components::state::StateClient;

pub use crate::components::categories::Directory;

/// Lifecycle status of a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentState {
    /// Init in progress (first attempt or a restart).
    Starting,
    /// Serving.
    Ready,
    /// Init failed or the host died; retried with backoff unless the error is permanent.
    Failed,
    /// Was ready; its backend fails the health probe. Still registered and serving (calls
    /// report the backend's errors) while its host reconnects in place; health is unchanged.
    Failing,
    /// A building block rapr does not implement yet; loaded nowhere, never affects health.
    Unsupported,
}

impl ComponentState {
    /// Lowercase name for metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentState::Starting => "starting",
            ComponentState::Ready => "ready",
            ComponentState::Failed => "failed",
            ComponentState::Failing => "failing",
            ComponentState::Unsupported => "unsupported",
        }
    }
}

impl ComponentState {
    /// Whether `/v1.0/metadata` lists it among the registered components (it was initialised).
    pub fn registered(self) -> bool {
        matches!(self, ComponentState::Ready | ComponentState::Failing)
    }
}

/// What metadata and health report of one component (or of a resource file that failed to load).
#[derive(Debug, Clone)]
pub struct ComponentStatus {
    /// Component name (the file name when the document had none).
    pub name: String,
    /// Dapr type.
    pub type_name: String,
    /// Version.
    pub version: String,
    /// Lifecycle status.
    pub state: ComponentState,
    /// Capabilities when ready.
    pub capabilities: Vec<&'static str>,
    /// Whether failures are ignored for health.
    pub ignore_errors: bool,
    /// The last error.
    pub error: Option<String>,
}

/// A ready state store as the facade uses it.
#[derive(Clone)]
pub struct StateEntry {
    /// Front door of its host.
    pub client: StateClient,
    /// How keys are prefixed for this store.
    pub prefix: KeyPrefix,
}

impl Directory {
    /// Components that keep the sidecar unhealthy: failed or starting, without `ignoreErrors`.
    /// A `Failing` component (ready once, backend down since) does not: daprd's health only
    /// waits for init.
    pub fn unhealthy(&self) -> Vec<String> {
        self.components
            .iter()
            .filter(|c| matches!(c.state, ComponentState::Failed | ComponentState::Starting) && !c.ignore_errors)
            .map(|c| c.name.clone())
            .collect()
    }

    /// Whether any secret store is configured at all (ready or not).
    pub fn has_secret_stores(&self) -> bool {
        !self.secrets.is_empty() || !self.secrets_unavailable.is_empty()
    }

    /// Whether any state store is configured at all (ready or not).
    pub fn has_state_stores(&self) -> bool {
        !self.state.is_empty() || !self.state_unavailable.is_empty()
    }
}

/// Shared handle to the current snapshot, with a change signal for long-lived readers (a
/// pub/sub `Delivery` waits for its component to come back after a restart).
#[derive(Clone)]
pub struct DirectoryHandle(Arc<Shared>);

struct Shared {
    current: ArcSwap<Directory>,
    /// Bumped on every publish.
    version: tokio::sync::watch::Sender<u64>,
}

impl Default for DirectoryHandle {
    fn default() -> Self {
        Self(Arc::new(Shared { current: ArcSwap::default(), version: tokio::sync::watch::channel(0).0 }))
    }
}

impl DirectoryHandle {
    /// The current snapshot.
    pub fn load(&self) -> Arc<Directory> {
        self.0.current.load_full()
    }

    /// A receiver that wakes on every publish after this call (`changed().await`).
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.version.subscribe()
    }

    /// Publishes a new snapshot (supervisor only).
    pub(crate) fn publish(&self, d: Directory) {
        self.0.current.store(Arc::new(d));
        self.0.version.send_modify(|v| *v += 1);
    }
}
