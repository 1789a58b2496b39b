//! The sidecar's placement client (issue 14 B.7): `PlacementClient` keeps the stream to the
//! placement service and publishes the tables; `PlacementHandle` is the front door the actor
//! runtime, the metadata API and healthz read, without a mailbox hop for lookups.

pub mod process;
pub mod stream;
pub mod view;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use ractor::{Actor, ActorCell, ActorRef};
use tokio::sync::watch;

pub use process::{PlacementClient, PlacementClientArgs, PlacementClientMsg};
pub use view::{ActorAddress, LookupError, PlacementView};

/// What the sidecar knows of its place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementStatus {
    /// A stream is open and placement accepted it.
    pub connected: bool,
    /// A round finished on the current stream (daprd's placement `Ready`).
    pub ready: bool,
    /// The version of the tables lookups read.
    pub version: u64,
    /// The actor types this host reports.
    pub types: Vec<String>,
    /// The types were set (from the app's configuration), even if to none.
    pub types_known: bool,
    /// A round finished on some stream since the start (healthz waits for it).
    pub had_table: bool,
    /// This host may no longer run actors: its lease ran out (or, with daprd's placement, which
    /// gives no leases, its stream is lost).
    pub fenced: bool,
    /// Until when its lease holds, with a placement that gives leases.
    pub lease_until: Option<Instant>,
    /// How many times this host went from unfenced to fenced (counted here, where no change
    /// can be missed, for the `rapr_placement_fences_total` metric).
    pub fences: u64,
}

/// The front door (cheap to clone).
#[derive(Clone)]
pub struct PlacementHandle {
    view: Arc<ArcSwap<PlacementView>>,
    status: watch::Receiver<PlacementStatus>,
    process: ActorRef<PlacementClientMsg>,
}

impl PlacementHandle {
    /// Starts `PlacementClient` under `supervisor` for this host.
    pub async fn start(
        addresses: Vec<String>,
        host_name: String,
        app_id: String,
        namespace: String,
        supervisor: Option<ActorCell>,
    ) -> Result<Self, ractor::SpawnErr> {
        let view = Arc::new(ArcSwap::from_pointee(PlacementView::default()));
        let (status_tx, status) = watch::channel(PlacementStatus { fenced: true, ..Default::default() });
        let args = PlacementClientArgs { addresses, host_name, app_id, namespace, view: view.clone(), status: status_tx };
        let (process, _) = match supervisor {
            Some(sup) => Actor::spawn_linked(None, PlacementClient, args, sup).await?,
            None => Actor::spawn(None, PlacementClient, args).await?,
        };
        Ok(Self { view, status, process })
    }

    /// Where actor `actor_type/actor_id` lives, by the current tables.
    pub fn lookup(&self, actor_type: &str, actor_id: &str) -> Result<ActorAddress, LookupError> {
        self.view.load().lookup(actor_type, actor_id)
    }

    /// The current tables.
    pub fn view(&self) -> Arc<PlacementView> {
        self.view.load_full()
    }

    /// The current status.
    pub fn status(&self) -> PlacementStatus {
        self.status.borrow().clone()
    }

    /// A watch of the status (healthz waits on it; the actor host fences on it).
    pub fn watch(&self) -> watch::Receiver<PlacementStatus> {
        self.status.clone()
    }

    /// Reports these actor types (from the app's `/dapr/config`, or its actor stream).
    pub fn set_types(&self, types: Vec<String>) {
        let _ = self.process.send_message(PlacementClientMsg::SetTypes(types));
    }

    /// Stops the process (and its stream).
    pub fn stop(&self) {
        self.process.stop(None);
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
