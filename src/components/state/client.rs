//! `StateStoreHost`: owns one configured state store component.
//!
//! Serialises the component's lifecycle (init in `pre_start`, close in `post_stop`). Requests run
//! concurrently on tasks it tracks, so one slow key never delays another, and stopping waits for
//! in-flight work before closing the store: nothing acknowledged is dropped. Supervised by
//! `ComponentSupervisor`; callers use `StateClient`, never `StateStoreMsg`.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio_util::task::TaskTracker;

use super::{
    BulkGetItem, DeleteRequest, Feature, GetRequest, Metadata, Query, QueryPage, SetRequest, StateStore,
    StoreError, StoredItem, TransactionOp,
};
use crate::components::registry::{ComponentError, Registry};
use crate::config::ComponentSpec;
use crate::runtime::call::{call, CallError};
use crate::runtime::failpoints::crash_point;

/// How long a stopping host waits for its in-flight calls.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

type Reply<T> = RpcReplyPort<Result<T, StoreError>>;

/// Messages of `StateStoreHost`; built only by `StateClient`.
pub enum StateStoreMsg {
    /// Read one key.
    Get { req: GetRequest, reply: Reply<Option<StoredItem>> },
    /// Read many keys.
    BulkGet { reqs: Vec<GetRequest>, reply: Reply<Vec<BulkGetItem>> },
    /// Write one key.
    Set { req: SetRequest, reply: Reply<()> },
    /// Delete one key.
    Delete { req: DeleteRequest, reply: Reply<()> },
    /// Apply operations atomically.
    Transact { ops: Vec<TransactionOp>, metadata: Metadata, reply: Reply<()> },
    /// Run a query under a key prefix.
    Query { prefix: String, query: Query, metadata: Metadata, reply: Reply<QueryPage> },
    /// What the store offers.
    Describe(RpcReplyPort<StoreDescription>),
}

/// What a running store offers, read once after init.
#[derive(Debug, Clone)]
pub struct StoreDescription {
    /// Capabilities.
    pub features: &'static [Feature],
    /// Transaction size limit.
    pub max_transaction_ops: Option<usize>,
}

/// Arguments of the host: the spec to build the store from.
pub struct StateStoreHostArgs {
    /// The component definition.
    pub spec: ComponentSpec,
    /// Where implementations are looked up.
    pub registry: Arc<Registry>,
}

/// The process owning one state store.
pub struct StateStoreHost;

/// Host state: the store and the tasks serving requests.
pub struct StateStoreHostState {
    store: Arc<dyn StateStore>,
    in_flight: TaskTracker,
}

impl Actor for StateStoreHost {
    type Msg = StateStoreMsg;
    type State = StateStoreHostState;
    type Arguments = StateStoreHostArgs;

    async fn pre_start(&self, _me: ActorRef<Self::Msg>, args: Self::Arguments) -> Result<Self::State, ActorProcessingErr> {
        let timeout = args.spec.init_timeout;
        fail::fail_point!("component:init", |arg: Option<String>| Err(ComponentError::Init {
            name: args.spec.name.clone(),
            reason: format!("failpoint component:init ({})", arg.unwrap_or_default()),
        }
        .into()));
        let store = tokio::time::timeout(timeout, args.registry.build_state(&args.spec))
            .await
            .map_err(|_| ComponentError::InitTimeout(timeout))??;
        Ok(StateStoreHostState { store, in_flight: TaskTracker::new() })
    }

    async fn handle(&self, _me: ActorRef<Self::Msg>, msg: Self::Msg, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        let store = Arc::clone(&st.store);
        match msg {
            StateStoreMsg::Get { req, reply } => {
                st.in_flight.spawn(async move { let _ = reply.send(store.get(req).await); });
            }
            StateStoreMsg::BulkGet { reqs, reply } => {
                st.in_flight.spawn(async move { let _ = reply.send(store.bulk_get(reqs).await); });
            }
            StateStoreMsg::Set { req, reply } => {
                st.in_flight.spawn(async move {
                    crash_point("state:set:before");
                    let r = store.set(req).await;
                    if r.is_ok() {
                        crash_point("state:set:after");
                    }
                    let _ = reply.send(r);
                });
            }
            StateStoreMsg::Delete { req, reply } => {
                st.in_flight.spawn(async move {
                    crash_point("state:delete:before");
                    let r = store.delete(req).await;
                    if r.is_ok() {
                        crash_point("state:delete:after");
                    }
                    let _ = reply.send(r);
                });
            }
            StateStoreMsg::Transact { ops, metadata, reply } => {
                st.in_flight.spawn(async move {
                    crash_point("state:transact:before");
                    let r = store.transact(ops, metadata).await;
                    if r.is_ok() {
                        crash_point("state:transact:after");
                    }
                    let _ = reply.send(r);
                });
            }
            StateStoreMsg::Query { prefix, query, metadata, reply } => {
                st.in_flight.spawn(async move { let _ = reply.send(store.query(&prefix, query, metadata).await); });
            }
            StateStoreMsg::Describe(reply) => {
                let _ = reply.send(StoreDescription {
                    features: store.features(),
                    max_transaction_ops: store.max_transaction_ops(),
                });
            }
        }
        Ok(())
    }

    async fn post_stop(&self, _me: ActorRef<Self::Msg>, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        st.in_flight.close();
        // Callers gave up at their own deadline; a backend that never answers must not hold the
        // shutdown forever.
        if tokio::time::timeout(DRAIN_DEADLINE, st.in_flight.wait()).await.is_err() {
            tracing::warn!(pending = st.in_flight.len(), "state store calls still pending at shutdown; abandoned");
        }
        st.store.close().await;
        Ok(())
    }
}

/// Front door of one state store: typed calls with a deadline.
#[derive(Clone)]
pub struct StateClient {
    host: ActorRef<StateStoreMsg>,
    description: StoreDescription,
    timeout: Duration,
}

impl StateClient {
    /// Asks the host what it offers and wraps it.
    pub async fn connect(host: ActorRef<StateStoreMsg>, timeout: Duration) -> Result<Self, StoreError> {
        let description = call(&host, StateStoreMsg::Describe, timeout)
            .await
            .map_err(|e| StoreError::Unavailable(format!("the state store did not describe itself: {e}")))?;
        Ok(Self { host, description, timeout })
    }

    /// Capabilities of the store.
    pub fn features(&self) -> &'static [Feature] {
        self.description.features
    }

    /// Whether the store has `f`.
    pub fn has(&self, f: Feature) -> bool {
        self.description.features.contains(&f)
    }

    /// The store's transaction size limit.
    pub fn max_transaction_ops(&self) -> Option<usize> {
        self.description.max_transaction_ops
    }

    async fn ask<T: Send + 'static>(&self, build: impl FnOnce(Reply<T>) -> StateStoreMsg) -> Result<T, StoreError> {
        match call(&self.host, build, self.timeout).await {
            Ok(r) => r,
            Err(CallError::Timeout(t)) => Err(StoreError::Timeout(t)),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        }
    }

    /// Reads one key.
    pub async fn get(&self, req: GetRequest) -> Result<Option<StoredItem>, StoreError> {
        self.ask(|reply| StateStoreMsg::Get { req, reply }).await
    }

    /// Reads many keys.
    pub async fn bulk_get(&self, reqs: Vec<GetRequest>) -> Result<Vec<BulkGetItem>, StoreError> {
        self.ask(|reply| StateStoreMsg::BulkGet { reqs, reply }).await
    }

    /// Writes one key.
    pub async fn set(&self, req: SetRequest) -> Result<(), StoreError> {
        self.ask(|reply| StateStoreMsg::Set { req, reply }).await
    }

    /// Deletes one key.
    pub async fn delete(&self, req: DeleteRequest) -> Result<(), StoreError> {
        self.ask(|reply| StateStoreMsg::Delete { req, reply }).await
    }

    /// Applies operations atomically.
    pub async fn transact(&self, ops: Vec<TransactionOp>, metadata: Metadata) -> Result<(), StoreError> {
        self.ask(|reply| StateStoreMsg::Transact { ops, metadata, reply }).await
    }

    /// Runs a query under `prefix`.
    pub async fn query(&self, prefix: String, query: Query, metadata: Metadata) -> Result<QueryPage, StoreError> {
        self.ask(|reply| StateStoreMsg::Query { prefix, query, metadata, reply }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::component::MetadataItem;
    use bytes::Bytes;

    fn spec(type_name: &str, metadata: Vec<MetadataItem>) -> ComponentSpec {
        ComponentSpec {
            name: "s".into(),
            namespace: None,
            type_name: type_name.into(),
            version: "v1".into(),
            metadata,
            scopes: vec![],
            init_timeout: Duration::from_secs(5),
            ignore_errors: false,
            secret_store: None,
            source: "s.yaml".into(),
        }
    }

    #[tokio::test]
    async fn serves_through_its_client_and_drains_on_stop() {
        let args = StateStoreHostArgs { spec: spec("state.in-memory", vec![]), registry: Arc::new(Registry::default()) };
        let (host, handle) = Actor::spawn(None, StateStoreHost, args).await.unwrap();
        let client = StateClient::connect(host.clone(), Duration::from_secs(5)).await.unwrap();
        assert!(client.has(Feature::Transactional));
        assert!(!client.has(Feature::QueryApi));
        client.set(SetRequest { key: "k".into(), value: Bytes::from_static(b"1"), is_json: true, ..Default::default() }).await.unwrap();
        let got = client.get(GetRequest { key: "k".into(), ..Default::default() }).await.unwrap().unwrap();
        assert_eq!(got.data, "1");
        host.stop(None);
        handle.await.unwrap();
        // A stopped host answers with Unavailable, never hangs.
        let err = client.get(GetRequest { key: "k".into(), ..Default::default() }).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn init_failure_is_a_spawn_error_naming_the_key() {
        let args = StateStoreHostArgs { spec: spec("state.sqlite", vec![]), registry: Arc::new(Registry::default()) };
        let Err(err) = Actor::spawn(None, StateStoreHost, args).await else { panic!("missing connectionString must fail") };
        assert!(err.to_string().contains("connectionString"), "{err}");
        let args = StateStoreHostArgs { spec: spec("state.nosuch", vec![]), registry: Arc::new(Registry::default()) };
        let Err(err) = Actor::spawn(None, StateStoreHost, args).await else { panic!("an unknown type must fail") };
        assert!(err.to_string().contains("state.sqlite/v1"), "known types listed: {err}");
    }
}
