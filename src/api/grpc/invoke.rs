//! gRPC adapter of service invocation: `InvokeService`, answering as daprd does: the app's
//! message, its response headers (with `dapr-http-status` for an HTTP app) and trailers, and on
//! failure the app's status with its details.
//!
//! tonic's unary handlers cannot set trailers, so a successful answer carries them in an
//! [`AppTrailers`] response extension that [`append_trailers`] (a layer of the gRPC router) adds
//! to the trailers frame. A failed answer is a trailers-only response: there the app's headers
//! travel with its trailers (grpc-go would send them in a headers frame of their own).

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response as HttpResponse;
use http_body_util::BodyExt;
use rapr_proto::common::v1 as common;
use rapr_proto::runtime::v1 as pb;
use tonic::metadata::MetadataMap;
use tonic::{Request as GrpcRequest, Response, Status};

use super::DaprService;
use crate::api::errors::invoke::invoke_error;
use crate::runtime::span_attrs::{Invocation, SpanDetails};

/// Metadata keys that are the caller's, not the app's.
const SKIP: &[&str] = &["dapr-api-token", "content-type", "user-agent", "te", "grpc-accept-encoding", "grpc-timeout"];

/// Trailers to send after a unary answer (see the module header).
#[derive(Clone, Debug)]
pub struct AppTrailers(pub http::HeaderMap);

impl DaprService {
    pub(super) async fn invoke_service_impl(&self, r: GrpcRequest<pb::InvokeServiceRequest>) -> Result<Response<common::InvokeResponse>, Status> {
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
        // Boxed, as the HTTP adapter does: tonic's layers then move a pointer, not the call's future.
        let outcome = Box::pin(self.invoke.invoke_grpc(&r.id, message, metadata)).await.map_err(|e| invoke_error(e).grpc_status())?;
        match outcome.result {
            Ok(message) => {
                let mut resp = Response::new(message);
                *resp.metadata_mut() = outcome.headers;
                if !outcome.trailers.is_empty() {
                    resp.extensions_mut().insert(AppTrailers(outcome.trailers.into_headers()));
                }
                Ok(resp)
            }
            Err(status) => Err(with_metadata(status, outcome.headers, outcome.trailers)),
        }
    }
}

/// `status` carrying the app's headers and trailers (one trailers-only frame).
fn with_metadata(status: Status, headers: MetadataMap, trailers: MetadataMap) -> Status {
    let mut md = status.metadata().clone().into_headers();
    for extra in [headers, trailers] {
        for (name, value) in extra.into_headers().iter() {
            md.append(name.clone(), value.clone());
        }
    }
    let details = status.details().to_vec();
    Status::with_details_and_metadata(status.code(), status.message().to_string(), details.into(), MetadataMap::from_headers(md))
}

/// Router layer: adds a handler's [`AppTrailers`] to the response's trailers frame.
pub async fn append_trailers(req: Request, next: Next) -> HttpResponse {
    let mut resp = next.run(req).await;
    let Some(AppTrailers(extra)) = resp.extensions_mut().remove::<AppTrailers>() else { return resp };
    let (parts, body) = resp.into_parts();
    let mut extra = Some(extra);
    let body = body.map_frame(move |frame| match frame.into_trailers() {
        Ok(mut trailers) => {
            for (name, value) in extra.take().unwrap_or_default().iter() {
                trailers.append(name.clone(), value.clone());
            }
            hyper::body::Frame::trailers(trailers)
        }
        Err(frame) => frame,
    });
    HttpResponse::from_parts(parts, axum::body::Body::new(body))
}
