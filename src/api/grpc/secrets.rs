//! gRPC adapter of the secrets API: `GetSecret`, `GetBulkSecret`.

use rapr_proto::runtime::v1 as pb;
use tonic::{Request, Response, Status};

use super::DaprService;

impl DaprService {
    pub(super) async fn get_secret_impl(&self, _r: Request<pb::GetSecretRequest>) -> Result<Response<pb::GetSecretResponse>, Status> {
        Err(Status::unimplemented("GetSecret is being written"))
    }

    pub(super) async fn get_bulk_secret_impl(&self, _r: Request<pb::GetBulkSecretRequest>) -> Result<Response<pb::GetBulkSecretResponse>, Status> {
        Err(Status::unimplemented("GetBulkSecret is being written"))
    }
}
