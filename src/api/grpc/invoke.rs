//! gRPC adapter of service invocation: `InvokeService`.

use rapr_proto::common::v1 as common;
use rapr_proto::runtime::v1 as pb;
use tonic::{Request, Response, Status};

use super::DaprService;
use crate::api::errors::invoke::invoke_error;
use crate::api::invoke::GrpcOutcome;
use crate::runtime::span_attrs::{Invocation, SpanDetails};

/// Metadata keys that are the caller's, not the app's.
const SKIP: &[&str] = &["dapr-api-token", "content-type", "user-agent", "te", "grpc-accept-encoding", "grpc-timeout"];

impl DaprService {
    pub(super) async fn invoke_service_impl(&self, r: Request<pb::InvokeServiceRequest>) -> Result<Response<common::InvokeResponse>, Status> {
        let metadata: Vec<(String, String)> = r
            .metadata()
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => Some((k.as_str().to_string(), v.to_str().ok()?.to_string())),
                tonic::metadata::KeyAndValueRef::Binary(..) => None,
            })
            .filter(|(k, _)| !SKIP.contains(&k.as_str()))
            .collect();
        let trace = r.extensions().get::<SpanDetails>().cloned();
        let r = r.into_inner();
        let message = r.message.unwrap_or_default();
        if let Some(t) = trace {
            t.invocation(Invocation::Remote { app_id: r.id.clone(), method: message.method.clone() });
        }
        match self.invoke.invoke_grpc(&r.id, message, metadata).await.map_err(|e| invoke_error(e).grpc_status())? {
            GrpcOutcome::Ok { response, http_status } => {
                let mut resp = Response::new(response);
                if let Some(code) = http_status {
                    resp.metadata_mut().insert("dapr-http-status", code.into());
                }
                Ok(resp)
            }
            GrpcOutcome::AppError(status) => Err(status),
        }
    }
}
