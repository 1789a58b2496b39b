//! Stores that lack a capability or limit transactions, served in-process through the real
//! runtime and HTTP/gRPC routers: daprd's ERR_STATE_STORE_NOT_SUPPORTED and
//! ERR_STATE_STORE_TOO_MANY_TRANSACTIONS.

use std::sync::Arc;

use async_trait::async_trait;
use rapr::cli::default_sidecar_args;
use rapr::components::registry::Registry;
use rapr::components::state::memory::MemoryStore;
use rapr::components::state::{DeleteRequest, Feature, GetRequest, Metadata, SetRequest, StateStore, StoreError, StoredItem, TransactionOp};
use rapr::sidecar::Sidecar;
use serde_json::Value;
use tonic_types::StatusExt;

use crate::harness::free_port;

/// In-memory store that claims only what it is told to and allows at most `max` operations.
struct Limited {
    inner: MemoryStore,
    features: &'static [Feature],
    max: Option<usize>,
}

#[async_trait]
impl StateStore for Limited {
    fn features(&self) -> &'static [Feature] {
        self.features
    }
    async fn get(&self, req: GetRequest) -> Result<Option<StoredItem>, StoreError> {
        self.inner.get(req).await
    }
    async fn set(&self, req: SetRequest) -> Result<(), StoreError> {
        self.inner.set(req).await
    }
    async fn delete(&self, req: DeleteRequest) -> Result<(), StoreError> {
        self.inner.delete(req).await
    }
    async fn transact(&self, ops: Vec<TransactionOp>, md: Metadata) -> Result<(), StoreError> {
        if !self.features.contains(&Feature::Transactional) {
            return Err(StoreError::NotSupported("transactions"));
        }
        self.inner.transact(ops, md).await
    }
    fn max_transaction_ops(&self) -> Option<usize> {
        self.max
    }
}

fn registry() -> Arc<Registry> {
    let mut reg = Registry::default();
    reg.add_state(&["state.notx"], "v1", |_, _| {
        Box::pin(async { Ok(Arc::new(Limited { inner: MemoryStore::new(), features: &[Feature::ETag], max: None }) as Arc<dyn StateStore>) })
    });
    reg.add_state(&["state.limited"], "v1", |_, _| {
        Box::pin(async {
            Ok(Arc::new(Limited { inner: MemoryStore::new(), features: &[Feature::ETag, Feature::Transactional], max: Some(2) }) as Arc<dyn StateStore>)
        })
    });
    Arc::new(reg)
}

#[tokio::test]
async fn transactions_on_stores_that_lack_or_limit_them() {
    let dir = tempfile::tempdir().unwrap();
    for (name, ty) in [("notx", "state.notx"), ("limited", "state.limited")] {
        std::fs::write(
            dir.path().join(format!("{name}.yaml")),
            format!("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {ty}\n  version: v1\n"),
        )
        .unwrap();
    }
    let mut flags = default_sidecar_args();
    flags.app_id = "capapp".into();
    flags.dapr_http_port = free_port();
    flags.dapr_grpc_port = free_port();
    flags.dapr_listen_addresses = "127.0.0.1".into();
    flags.resources_path = vec![dir.path().to_path_buf()];
    let sc = Sidecar::start_with_registry(flags.clone(), None, registry()).await.unwrap();
    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://127.0.0.1:{}{p}", flags.dapr_http_port);

    let r = http.post(url("/v1.0/state/notx/transaction")).body(r#"{"operations":[]}"#).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["errorCode"], "ERR_STATE_STORE_NOT_SUPPORTED");
    assert_eq!(b["message"], "state store notx doesn't support transactions");
    assert!(b["details"].as_array().unwrap().iter().any(|d| d["reason"] == "DAPR_STATE_TRANSACTIONS_NOT_SUPPORTED"));

    let three = r#"{"operations":[{"operation":"upsert","request":{"key":"a","value":1}},{"operation":"upsert","request":{"key":"b","value":1}},{"operation":"delete","request":{"key":"c"}}]}"#;
    let r = http.post(url("/v1.0/state/limited/transaction")).body(three).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["errorCode"], "ERR_STATE_STORE_TOO_MANY_TRANSACTIONS");
    assert_eq!(b["message"], "the transaction contains 3 operations, which is more than what the state store supports: 2");
    let info = b["details"].as_array().unwrap().iter().find(|d| d["reason"] == "DAPR_STATE_TOO_MANY_TRANSACTIONS").unwrap();
    assert_eq!(info["metadata"]["currentOpsTransaction"], "3");
    assert_eq!(info["metadata"]["maxOpsPerTransaction"], "2");
    assert_eq!(http.get(url("/v1.0/state/limited/a")).send().await.unwrap().status(), 204, "nothing applied");

    // The same over gRPC.
    let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", flags.dapr_grpc_port)).unwrap().connect().await.unwrap();
    let mut client = rapr_proto::runtime::v1::dapr_client::DaprClient::new(ch);
    let op = |k: &str| rapr_proto::runtime::v1::TransactionalStateOperation {
        operation_type: "upsert".into(),
        request: Some(rapr_proto::common::v1::StateItem { key: k.into(), value: b"1".to_vec(), ..Default::default() }),
    };
    let st = client
        .execute_state_transaction(rapr_proto::runtime::v1::ExecuteStateTransactionRequest { store_name: "notx".into(), operations: vec![op("a")], metadata: Default::default() })
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::Unimplemented);
    assert_eq!(st.get_details_error_info().unwrap().reason, "DAPR_STATE_TRANSACTIONS_NOT_SUPPORTED");
    let st = client
        .execute_state_transaction(rapr_proto::runtime::v1::ExecuteStateTransactionRequest {
            store_name: "limited".into(),
            operations: vec![op("a"), op("b"), op("c")],
            metadata: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::InvalidArgument);
    assert_eq!(st.get_details_error_info().unwrap().reason, "DAPR_STATE_TOO_MANY_TRANSACTIONS");

    sc.shutdown.trigger();
    sc.run_until_stopped().await;
}
