//! `SecretStoreHost`: owns one configured secret store component.
//!
//! Init in `pre_start` (a failure is a spawn error for `ComponentSupervisor`); lookups run on
//! tracked tasks so a slow backend never queues unrelated requests; stopping waits for them.
//! Callers use `SecretClient`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio_util::task::TaskTracker;

use super::{Metadata, Secret, SecretError, SecretStore};
use crate::components::registry::{ComponentError, Registry};
use crate::config::ComponentSpec;
use crate::runtime::call::{call, CallError};

/// How long a stopping host waits for its in-flight calls.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

type Reply<T> = RpcReplyPort<Result<T, SecretError>>;

/// Messages of `SecretStoreHost`; built only by `SecretClient`.
pub enum SecretStoreMsg {
    /// One secret.
    Get { name: String, metadata: Metadata, reply: Reply<Secret> },
    /// Every secret.
    BulkGet { metadata: Metadata, reply: Reply<BTreeMap<String, Secret>> },
    /// Capabilities.
    Features(RpcReplyPort<&'static [&'static str]>),
}

/// Arguments: the spec to build the store from.
pub struct SecretStoreHostArgs {
    /// The component definition.
    pub spec: ComponentSpec,
    /// Where implementations are looked up.
    pub registry: Arc<Registry>,
}

/// The process owning one secret store.
pub struct SecretStoreHost;

/// Host state.
pub struct SecretStoreHostState {
    store: Arc<dyn SecretStore>,
    in_flight: TaskTracker,
}

impl Actor for SecretStoreHost {
    type Msg = SecretStoreMsg;
    type State = SecretStoreHostState;
    type Arguments = SecretStoreHostArgs;

    async fn pre_start(&self, _me: ActorRef<Self::Msg>, args: Self::Arguments) -> Result<Self::State, ActorProcessingErr> {
        let timeout = args.spec.init_timeout;
        let store = tokio::time::timeout(timeout, args.registry.build_secret(&args.spec))
            .await
            .map_err(|_| ComponentError::InitTimeout(timeout))??;
        Ok(SecretStoreHostState { store, in_flight: TaskTracker::new() })
    }

    async fn handle(&self, _me: ActorRef<Self::Msg>, msg: Self::Msg, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        let store = Arc::clone(&st.store);
        match msg {
            SecretStoreMsg::Get { name, metadata, reply } => {
                st.in_flight.spawn(async move { let _ = reply.send(store.get(&name, &metadata).await); });
            }
            SecretStoreMsg::BulkGet { metadata, reply } => {
                st.in_flight.spawn(async move { let _ = reply.send(store.bulk_get(&metadata).await); });
            }
            SecretStoreMsg::Features(reply) => {
                let _ = reply.send(store.features());
            }
        }
        Ok(())
    }

    async fn post_stop(&self, _me: ActorRef<Self::Msg>, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        st.in_flight.close();
        // Callers gave up at their own deadline; a backend that never answers must not hold the
        // shutdown forever.
        if tokio::time::timeout(DRAIN_DEADLINE, st.in_flight.wait()).await.is_err() {
            tracing::warn!(pending = st.in_flight.len(), "secret store calls still pending at shutdown; abandoned");
        }
        Ok(())
    }
}

/// Front door of one secret store.
#[derive(Clone)]
pub struct SecretClient {
    host: ActorRef<SecretStoreMsg>,
    features: &'static [&'static str],
    timeout: Duration,
}

impl SecretClient {
    /// Asks the host for its capabilities and wraps it.
    pub async fn connect(host: ActorRef<SecretStoreMsg>, timeout: Duration) -> Result<Self, SecretError> {
        let features = call(&host, SecretStoreMsg::Features, timeout).await.map_err(|e| SecretError::Unavailable(e.to_string()))?;
        Ok(Self { host, features, timeout })
    }

    /// Capabilities.
    pub fn features(&self) -> &'static [&'static str] {
        self.features
    }

    async fn ask<T: Send + 'static>(&self, build: impl FnOnce(Reply<T>) -> SecretStoreMsg) -> Result<T, SecretError> {
        match call(&self.host, build, self.timeout).await {
            Ok(r) => r,
            Err(CallError::Timeout(t)) => Err(SecretError::Timeout(t)),
            Err(e) => Err(SecretError::Unavailable(e.to_string())),
        }
    }

    /// One secret.
    pub async fn get(&self, name: String, metadata: Metadata) -> Result<Secret, SecretError> {
        self.ask(|reply| SecretStoreMsg::Get { name, metadata, reply }).await
    }

    /// Every secret.
    pub async fn bulk_get(&self, metadata: Metadata) -> Result<BTreeMap<String, Secret>, SecretError> {
        self.ask(|reply| SecretStoreMsg::BulkGet { metadata, reply }).await
    }
}
