//! gRPC adapter of the secrets API: `GetSecret`, `GetBulkSecret`.

use rapr_proto::runtime::v1 as pb;
use tonic::{Request, Response, Status};

use super::DaprService;
use crate::api::errors::secrets::secrets_error;

impl DaprService {
    pub(super) async fn get_secret_impl(&self, r: Request<pb::GetSecretRequest>) -> Result<Response<pb::GetSecretResponse>, Status> {
        let r = r.into_inner();
        let secret = self.secrets.get(&r.store_name, &r.key, r.metadata).await.map_err(|e| secrets_error(e).grpc_status())?;
        Ok(Response::new(pb::GetSecretResponse { data: secret.into_iter().collect() }))
    }

    pub(super) async fn get_bulk_secret_impl(&self, r: Request<pb::GetBulkSecretRequest>) -> Result<Response<pb::GetBulkSecretResponse>, Status> {
        let r = r.into_inner();
        let all = self.secrets.bulk_get(&r.store_name, r.metadata).await.map_err(|e| secrets_error(e).grpc_status())?;
        let data = all.into_iter().map(|(k, v)| (k, pb::SecretResponse { secrets: v.into_iter().collect() })).collect();
        Ok(Response::new(pb::GetBulkSecretResponse { data }))
    }
}
