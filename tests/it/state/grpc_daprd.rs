//! gRPC state answers checked line by line against daprd v1.18.3's `pkg/api/grpc/grpc.go`: the
//! ErrorInfo `apierrors.Basic` adds (reason = the error code), `ERR_STATE_BULK_DELETE`, the
//! empty-key rule of `SaveState`, the raw status of a failed `GetBulkState`, empty keys reaching
//! the store in deletes and transactions, no `appID` in gRPC not-found errors, and transaction
//! values stored as given. In-process sidecar with a test-only store whose every call fails.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use rapr::cli::default_sidecar_args;
use rapr::components::registry::Registry;
use rapr::components::state::{
    BulkGetItem, DeleteRequest, Feature, GetRequest, Metadata, SetRequest, StateStore, StoreError, StoredItem, TransactionOp,
};
use rapr::sidecar::Sidecar;
use rapr_proto::common::v1 as common;
use rapr_proto::runtime::v1 as pb;
use rapr_proto::runtime::v1::dapr_client::DaprClient;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::harness::free_port;

/// A transactional store whose backend is always down.
struct Down;

fn down() -> StoreError {
    StoreError::Backend("backend down".into())
}

#[async_trait]
impl StateStore for Down {
    fn features(&self) -> &'static [Feature] {
        &[Feature::ETag, Feature::Transactional]
    }
    async fn get(&self, _: GetRequest) -> Result<Option<StoredItem>, StoreError> {
        Err(down())
    }
    async fn set(&self, _: SetRequest) -> Result<(), StoreError> {
        Err(down())
    }
    async fn delete(&self, _: DeleteRequest) -> Result<(), StoreError> {
        Err(down())
    }
    async fn bulk_get(&self, _: Vec<GetRequest>) -> Result<Vec<BulkGetItem>, StoreError> {
        Err(down())
    }
    async fn transact(&self, _: Vec<TransactionOp>, _: Metadata) -> Result<(), StoreError> {
        Err(down())
    }
}

struct Running {
    sc: Sidecar,
    client: DaprClient<Channel>,
    /// The resources folder: kept, as hot reload would close the components of a removed one.
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let yaml = |name: &str, ty: &str| format!("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {ty}\n  version: v1\n");
    std::fs::write(dir.path().join("down.yaml"), yaml("down", "state.down")).unwrap();
    std::fs::write(dir.path().join("mem.yaml"), yaml("mem", "state.in-memory")).unwrap();
    let mut reg = Registry::default();
    reg.add_state(&["state.down"], "v1", |_, _| Box::pin(async { Ok(Arc::new(Down) as Arc<dyn StateStore>) }));
    let mut flags = default_sidecar_args();
    flags.app_id = "grpcapp".into();
    flags.dapr_http_port = free_port();
    flags.dapr_grpc_port = free_port();
    flags.dapr_listen_addresses = "127.0.0.1".into();
    flags.resources_path = vec![dir.path().to_path_buf()];
    let sc = Sidecar::start_with_registry(flags.clone(), None, Arc::new(reg)).await.unwrap();
    let client = DaprClient::connect(format!("http://127.0.0.1:{}", flags.dapr_grpc_port)).await.unwrap();
    Running { sc, client, _dir: dir }
}

impl Running {
    async fn stop(self) {
        self.sc.shutdown.trigger();
        self.sc.run_until_stopped().await;
    }
}

fn item(key: &str, value: &[u8]) -> common::StateItem {
    common::StateItem { key: key.into(), value: value.to_vec(), ..Default::default() }
}

fn with_etag(mut i: common::StateItem, etag: &str) -> common::StateItem {
    i.etag = Some(common::Etag { value: etag.into() });
    i
}

fn tx(store: &str, ops: Vec<(&str, common::StateItem)>) -> pb::ExecuteStateTransactionRequest {
    let operations = ops.into_iter().map(|(t, i)| pb::TransactionalStateOperation { operation_type: t.into(), request: Some(i) }).collect();
    pb::ExecuteStateTransactionRequest { store_name: store.into(), operations, metadata: HashMap::new() }
}

/// daprd's `apierrors.Basic`: one ErrorInfo, domain dapr.io, reason the code, no metadata.
fn assert_basic(s: &Status, code: Code, error_code: &str) {
    assert_eq!(s.code(), code, "{s:?}");
    let info = s.get_details_error_info().unwrap_or_else(|| panic!("no ErrorInfo in {s:?}"));
    assert_eq!((info.reason.as_str(), info.domain.as_str()), (error_code, "dapr.io"), "{s:?}");
    assert!(info.metadata.is_empty(), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failures_carry_daprds_basic_error_info() {
    let mut r = start().await;
    let c = &mut r.client;
    let e = c.get_state(pb::GetStateRequest { store_name: "down".into(), key: "k".into(), ..Default::default() }).await.unwrap_err();
    assert_basic(&e, Code::Internal, "ERR_STATE_GET");
    assert_eq!(e.message(), "fail to get k from state store down: backend down");
    let e = c.save_state(pb::SaveStateRequest { store_name: "down".into(), states: vec![item("k", b"v")] }).await.unwrap_err();
    assert_basic(&e, Code::Internal, "ERR_STATE_SAVE");
    let e = c.delete_state(pb::DeleteStateRequest { store_name: "down".into(), key: "k".into(), ..Default::default() }).await.unwrap_err();
    assert_basic(&e, Code::Internal, "ERR_STATE_DELETE");
    let e = c.delete_bulk_state(pb::DeleteBulkStateRequest { store_name: "down".into(), states: vec![item("k", b"")] }).await.unwrap_err();
    assert_basic(&e, Code::Internal, "ERR_STATE_BULK_DELETE");
    assert_eq!(e.message(), "failed deleting state in state store down: backend down");
    let e = c.execute_state_transaction(tx("down", vec![("upsert", item("k", b"v"))])).await.unwrap_err();
    assert_basic(&e, Code::Internal, "ERR_STATE_TRANSACTION");
    let e = c.execute_state_transaction(tx("mem", vec![("merge", item("k", b"v"))])).await.unwrap_err();
    assert_basic(&e, Code::Unimplemented, "ERR_NOT_SUPPORTED_STATE_OPERATION");

    // GetBulkState returns the store's error as is: grpc-go's UNKNOWN, the bare text, no details.
    let e = c
        .get_bulk_state(pb::GetBulkStateRequest { store_name: "down".into(), keys: vec!["a".into()], ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unknown, "backend down"), "{e:?}");
    assert!(e.get_details_error_info().is_none(), "{e:?}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_failures_keep_their_grpc_code_under_the_basic_error_info() {
    let mut r = start().await;
    let c = &mut r.client;
    c.save_state(pb::SaveStateRequest { store_name: "mem".into(), states: vec![item("e", b"v")] }).await.unwrap();
    let e = c.save_state(pb::SaveStateRequest { store_name: "mem".into(), states: vec![with_etag(item("e", b"w"), "not-a-uuid")] }).await.unwrap_err();
    assert_basic(&e, Code::Aborted, "ERR_STATE_SAVE");
    let bulk = pb::DeleteBulkStateRequest { store_name: "mem".into(), states: vec![with_etag(item("e", b""), "not-a-uuid")] };
    let e = c.delete_bulk_state(bulk).await.unwrap_err();
    assert_basic(&e, Code::Aborted, "ERR_STATE_BULK_DELETE");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_keys_as_daprd_handles_them() {
    let mut r = start().await;
    let c = &mut r.client;
    // SaveState refuses an empty key itself.
    let e = c.save_state(pb::SaveStateRequest { store_name: "mem".into(), states: vec![item("ok", b"1"), item("", b"v")] }).await.unwrap_err();
    assert_basic(&e, Code::InvalidArgument, "ERR_STATE_SAVE");
    assert_eq!(e.message(), "state key cannot be empty");
    // ... but only once the store is known to exist.
    let e = c.save_state(pb::SaveStateRequest { store_name: "nosuch".into(), states: vec![item("", b"v")] }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "state store nosuch is not found");
    // Deletes and transactions hand the empty key to the store (as `grpcapp||`).
    c.execute_state_transaction(tx("mem", vec![("upsert", item("", b"under the bare prefix"))])).await.unwrap();
    let got = c.get_state(pb::GetStateRequest { store_name: "mem".into(), key: String::new(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(got.data, b"under the bare prefix");
    c.delete_state(pb::DeleteStateRequest { store_name: "mem".into(), key: String::new(), ..Default::default() }).await.unwrap();
    c.delete_bulk_state(pb::DeleteBulkStateRequest { store_name: "mem".into(), states: vec![item("", b"")] }).await.unwrap();
    c.execute_state_transaction(tx("mem", vec![("delete", item("", b""))])).await.unwrap();
    let got = c.get_state(pb::GetStateRequest { store_name: "mem".into(), key: String::new(), ..Default::default() }).await.unwrap().into_inner();
    assert!(got.data.is_empty());
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_over_grpc_has_no_app_id() {
    let mut r = start().await;
    let c = &mut r.client;
    let e = c.get_state(pb::GetStateRequest { store_name: "nosuch".into(), key: "k".into(), ..Default::default() }).await.unwrap_err();
    let info = e.get_details_error_info().unwrap();
    assert_eq!(info.reason, "DAPR_STATE_NOT_FOUND");
    assert!(info.metadata.is_empty(), "daprd's gRPC GetStateStore passes no app id: {e:?}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_values_are_stored_as_given() {
    let mut r = start().await;
    let c = &mut r.client;
    // Not canonical JSON, marked JSON: SaveState would re-encode it; a transaction must not.
    let raw = br#"{ "b": 1,  "a": 2.50 }"#;
    let mut doc = item("doc", raw);
    doc.metadata.insert("contentType".into(), "application/json".into());
    c.execute_state_transaction(tx("mem", vec![("upsert", doc.clone())])).await.unwrap();
    let got = c.get_state(pb::GetStateRequest { store_name: "mem".into(), key: "doc".into(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(got.data, raw.to_vec(), "{}", String::from_utf8_lossy(&got.data));
    // Not JSON at all, though marked so: a transaction still stores it.
    let mut bad = item("notjson", b"\x00\xff{");
    bad.metadata.insert("contentType".into(), "application/json".into());
    c.execute_state_transaction(tx("mem", vec![("upsert", bad)])).await.unwrap();
    let got = c.get_state(pb::GetStateRequest { store_name: "mem".into(), key: "notjson".into(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(got.data, b"\x00\xff{");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_marked_json_that_is_not_json_is_daprds_bare_unmarshal_error() {
    let mut r = start().await;
    let c = &mut r.client;
    let mut bad = item("j", b"{not json");
    bad.metadata.insert("contentType".into(), "application/json".into());
    let e = c.save_state(pb::SaveStateRequest { store_name: "mem".into(), states: vec![bad] }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unknown, "daprd returns json.Unmarshal's error as is: {e:?}");
    assert!(e.get_details_error_info().is_none(), "{e:?}");
    // daprd compares the content type exactly: another spelling stores the bytes as given.
    let mut other = item("j", b"{not json");
    other.metadata.insert("contentType".into(), "Application/JSON".into());
    c.save_state(pb::SaveStateRequest { store_name: "mem".into(), states: vec![other] }).await.unwrap();
    let got = c.get_state(pb::GetStateRequest { store_name: "mem".into(), key: "j".into(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(got.data, b"{not json");
    r.stop().await;
}
