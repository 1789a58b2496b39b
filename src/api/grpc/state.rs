//! gRPC adapter of the state API: proto messages to facade types and back.

use bytes::Bytes;
use rapr_proto::common::v1 as common;
use rapr_proto::runtime::v1 as pb;
use tonic::{Request, Response, Status};

use super::DaprService;
use crate::api::errors::state::state_error_grpc;
use crate::api::errors::codes::ERR_MALFORMED_REQUEST;
use crate::api::errors::ApiError;
use crate::api::state::{DeleteItem, SaveItem, StateApiError, TxOperation};
use crate::components::state::{Concurrency, Consistency, StateOptions};

fn consistency(c: i32) -> Consistency {
    if c == common::state_options::StateConsistency::ConsistencyStrong as i32 {
        Consistency::Strong
    } else {
        Consistency::Eventual
    }
}

fn options(o: Option<common::StateOptions>) -> StateOptions {
    let Some(o) = o else { return StateOptions::default() };
    StateOptions {
        concurrency: if o.concurrency == common::state_options::StateConcurrency::ConcurrencyFirstWrite as i32 {
            Concurrency::FirstWrite
        } else {
            Concurrency::LastWrite
        },
        consistency: consistency(o.consistency),
    }
}

/// A gRPC value is raw bytes unless its metadata says exactly `contentType: application/json`
/// (daprd compares the string as is), in which case it is stored as canonical JSON (daprd
/// unmarshals it first). Bytes that are not JSON fail as daprd's bare `json.Unmarshal` error does
/// over gRPC: UNKNOWN with the parser's text, no details.
fn save_item(item: common::StateItem) -> Result<SaveItem, ApiError> {
    let is_json = item.metadata.get("contentType").is_some_and(|c| c == "application/json");
    let not_json = |e: serde_json::Error| ApiError::new(http::StatusCode::INTERNAL_SERVER_ERROR, tonic::Code::Unknown, ERR_MALFORMED_REQUEST, e.to_string());
    let value = if is_json {
        let v: serde_json::Value = serde_json::from_slice(&item.value).map_err(not_json)?;
        Bytes::from(serde_json::to_vec(&v).map_err(not_json)?)
    } else {
        Bytes::from(item.value)
    };
    Ok(SaveItem {
        key: item.key,
        value,
        is_json,
        etag: item.etag.map(|e| e.value),
        metadata: item.metadata.into_iter().collect(),
        options: options(item.options),
    })
}

/// A gRPC transaction upsert: daprd hands the value bytes to the store as given, whatever the
/// item's `contentType` (no JSON round trip), so SQL stores keep them as binary.
fn tx_upsert_item(item: common::StateItem) -> SaveItem {
    SaveItem {
        key: item.key,
        value: Bytes::from(item.value),
        is_json: false,
        etag: item.etag.map(|e| e.value),
        metadata: item.metadata.into_iter().collect(),
        options: options(item.options),
    }
}

fn delete_item(item: common::StateItem) -> DeleteItem {
    DeleteItem { key: item.key, etag: item.etag.map(|e| e.value), metadata: item.metadata.into_iter().collect(), options: options(item.options) }
}

impl DaprService {
    fn state_err(&self, e: StateApiError) -> Status {
        state_error_grpc(e).grpc_status()
    }

    pub(super) async fn get_state_impl(&self, r: Request<pb::GetStateRequest>) -> Result<Response<pb::GetStateResponse>, Status> {
        let r = r.into_inner();
        let item = self
            .state
            .get(&r.store_name, &r.key, consistency(r.consistency), r.metadata.into_iter().collect())
            .await
            .map_err(|e| self.state_err(e))?;
        Ok(Response::new(match item {
            None => pb::GetStateResponse::default(),
            Some(i) => pb::GetStateResponse { data: i.data.to_vec(), etag: i.etag.unwrap_or_default(), metadata: i.metadata.into_iter().collect() },
        }))
    }

    pub(super) async fn get_bulk_state_impl(&self, r: Request<pb::GetBulkStateRequest>) -> Result<Response<pb::GetBulkStateResponse>, Status> {
        let r = r.into_inner();
        let items = self.state.bulk_get(&r.store_name, r.keys, r.metadata.into_iter().collect()).await.map_err(|e| self.state_err(e))?;
        let items = items
            .into_iter()
            .map(|i| {
                let (data, etag, metadata) = match i.item {
                    Some(s) => (s.data.to_vec(), s.etag.unwrap_or_default(), s.metadata.into_iter().collect()),
                    None => Default::default(),
                };
                pb::BulkStateItem { key: i.key, data, etag, error: i.error.unwrap_or_default(), metadata }
            })
            .collect();
        Ok(Response::new(pb::GetBulkStateResponse { items }))
    }

    pub(super) async fn save_state_impl(&self, r: Request<pb::SaveStateRequest>) -> Result<Response<()>, Status> {
        let r = r.into_inner();
        // daprd's order: the store, then an empty request succeeds, then each item's key.
        self.state.check_store(&r.store_name).map_err(|e| self.state_err(e))?;
        if r.states.is_empty() {
            return Ok(Response::new(()));
        }
        let mut items = Vec::with_capacity(r.states.len());
        for state in r.states {
            if state.key.is_empty() {
                return Err(self.state_err(StateApiError::EmptySaveKey));
            }
            items.push(save_item(state)?);
        }
        self.state.save(&r.store_name, items).await.map_err(|e| self.state_err(e))?;
        Ok(Response::new(()))
    }

    pub(super) async fn delete_state_impl(&self, r: Request<pb::DeleteStateRequest>) -> Result<Response<()>, Status> {
        let r = r.into_inner();
        let item = DeleteItem { key: r.key, etag: r.etag.map(|e| e.value), metadata: r.metadata.into_iter().collect(), options: options(r.options) };
        self.state.delete(&r.store_name, item).await.map_err(|e| self.state_err(e))?;
        Ok(Response::new(()))
    }

    pub(super) async fn delete_bulk_state_impl(&self, r: Request<pb::DeleteBulkStateRequest>) -> Result<Response<()>, Status> {
        let r = r.into_inner();
        let items = r.states.into_iter().map(delete_item).collect();
        self.state.bulk_delete(&r.store_name, items).await.map_err(|e| self.state_err(e))?;
        Ok(Response::new(()))
    }

    pub(super) async fn execute_state_transaction_impl(&self, r: Request<pb::ExecuteStateTransactionRequest>) -> Result<Response<()>, Status> {
        let r = r.into_inner();
        self.state.check_transactional(&r.store_name).map_err(|e| self.state_err(e))?;
        let mut ops = Vec::with_capacity(r.operations.len());
        for op in r.operations {
            let item = op.request.unwrap_or_default();
            ops.push(match op.operation_type.as_str() {
                "upsert" => TxOperation::Upsert(tx_upsert_item(item)),
                "delete" => TxOperation::Delete(delete_item(item)),
                other => return Err(self.state_err(StateApiError::UnsupportedOperation(other.to_string()))),
            });
        }
        self.state.transact(&r.store_name, ops, r.metadata.into_iter().collect()).await.map_err(|e| self.state_err(e))?;
        Ok(Response::new(()))
    }

    pub(super) async fn query_state_impl(&self, r: Request<pb::QueryStateRequest>) -> Result<Response<pb::QueryStateResponse>, Status> {
        let r = r.into_inner();
        let page = self.state.query(&r.store_name, r.query.as_bytes(), r.metadata.into_iter().collect()).await.map_err(|e| self.state_err(e))?;
        let results = page
            .results
            .into_iter()
            .map(|c| pb::QueryStateItem { key: c.key, data: c.data.to_vec(), etag: c.etag.unwrap_or_default(), error: String::new() })
            .collect();
        Ok(Response::new(pb::QueryStateResponse { results, token: page.token.unwrap_or_default(), metadata: Default::default() }))
    }
}
