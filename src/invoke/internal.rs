//! The target side of the sidecar-to-sidecar protocol: `ServiceInvocation` on the internal gRPC
//! port, delivering calls to this sidecar's app through its `AppChannel`.

use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http_body_util::BodyExt;
use rapr_proto::common::v1 as common;
use rapr_proto::internals::v1 as internals;
use rapr_proto::internals::v1::service_invocation_server::{ServiceInvocation, ServiceInvocationServer};
use tonic::{Request, Response, Status, Streaming};

use super::app_channel::{AppChannel, AppProtocol};
use super::message::{response_headers, CallMeta, CALLER};
use crate::runtime::metrics::Metrics;
use super::remote::CHUNK;
use crate::runtime::span_attrs::{Invocation, SpanDetails};

/// Serves other sidecars' calls to this app.
#[derive(Clone)]
pub struct InternalService {
    app: Option<Arc<AppChannel>>,
    metrics: Option<Metrics>,
}

fn no_app() -> Status {
    Status::failed_precondition("cannot invoke local endpoint: app channel not initialized")
}

impl InternalService {
    /// The service over `app` (none when `--app-port` is unset).
    pub fn new(app: Option<Arc<AppChannel>>) -> Self {
        Self { app, metrics: None }
    }

    /// Counts served calls in `metrics` (`dapr_runtime_service_invocation_req_recv_total`...).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics.clone()).filter(Metrics::enabled);
        self
    }

    /// As a tonic service with `max_message` limits.
    pub fn into_server(self, max_message: usize) -> ServiceInvocationServer<Self> {
        ServiceInvocationServer::new(self).max_decoding_message_size(max_message.max(CHUNK * 2)).max_encoding_message_size(max_message.max(CHUNK * 2))
    }
}

fn http_status(code: u16, message: String) -> Option<internals::Status> {
    Some(internals::Status { code: i32::from(code), message, details: vec![] })
}

/// The method normalised again on the target, as daprd does before its access control
/// (defence in depth: a well-behaved caller already did).
fn checked_method(method: &str) -> Result<String, Status> {
    super::method::normalize(method).map_err(|e| Status::invalid_argument(format!("invalid method: {e}")))
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<internals::InternalInvokeResponseStream, Status>> + Send>>;

/// The caller's id as its sidecar sent it on the transport.
fn caller_of(md: &tonic::metadata::MetadataMap) -> String {
    md.get(CALLER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

/// The trace context of this hop: the server middleware rewrote the transport's `traceparent`
/// to this sidecar's span, which the app must see as its parent.
fn adopt_trace(md: &tonic::metadata::MetadataMap, meta: &mut CallMeta) {
    for key in ["traceparent", "tracestate"] {
        if let Some(v) = md.get(key).and_then(|v| v.to_str().ok()) {
            meta.headers.retain(|(k, _)| k != key);
            meta.headers.push((key.to_string(), v.to_string()));
        }
    }
}

#[tonic::async_trait]
impl ServiceInvocation for InternalService {
    async fn call_local(&self, r: Request<internals::InternalInvokeRequest>) -> Result<Response<internals::InternalInvokeResponse>, Status> {
        let Some(m) = &self.metrics else { return self.local(r).await };
        let caller = caller_of(r.metadata());
        m.invoke_received(&caller);
        let res = self.local(r).await;
        m.invoke_responded(&caller, match &res {
            Ok(r) => r.get_ref().status.as_ref().map_or(0, |s| s.code),
            Err(s) => s.code() as i32,
        });
        res
    }

    type CallLocalStreamStream = ResponseStream;

    async fn call_local_stream(&self, r: Request<Streaming<internals::InternalInvokeRequestStream>>) -> Result<Response<Self::CallLocalStreamStream>, Status> {
        let Some(m) = &self.metrics else { return self.local_stream(r).await.map(|(resp, _)| resp) };
        let caller = caller_of(r.metadata());
        m.invoke_received(&caller);
        let res = self.local_stream(r).await;
        m.invoke_responded(&caller, res.as_ref().map_or_else(|s| s.code() as i32, |(_, status)| *status));
        res.map(|(resp, _)| resp)
    }
}

impl InternalService {
    async fn local(&self, r: Request<internals::InternalInvokeRequest>) -> Result<Response<internals::InternalInvokeResponse>, Status> {
        let app = self.app.as_ref().ok_or_else(no_app)?;
        app.ensure_healthy().map_err(|e| Status::internal(e.to_string()))?;
        let md = r.metadata().clone();
        let trace = r.extensions().get::<SpanDetails>().cloned();
        let req = r.into_inner();
        if let Some(t) = trace {
            t.invocation(Invocation::Local { method: req.message.as_ref().map(|m| m.method.clone()).unwrap_or_default() });
        }
        let mut meta = CallMeta::from_internal(&req);
        adopt_trace(&md, &mut meta);
        meta.method = checked_method(&meta.method)?;
        let mut message = req.message.unwrap_or_default();
        message.method = meta.method.clone();
        if app.protocol() == AppProtocol::Grpc {
            return Ok(Response::new(app.call_grpc(message, &meta).await.into_internal()));
        }
        let body = Body::from(message.data.map(|d| d.value).unwrap_or_default());
        let resp = Box::pin(app.call_http(&meta, body)).await.map_err(|e| Status::internal(e.to_string()))?;
        let (parts, body) = resp.into_parts();
        let data = body.collect().await.map_err(|e| Status::internal(e.to_string()))?.to_bytes();
        let content_type = parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        Ok(Response::new(internals::InternalInvokeResponse {
            status: http_status(parts.status.as_u16(), parts.status.canonical_reason().unwrap_or_default().to_string()),
            headers: response_headers(&parts.headers),
            trailers: Default::default(),
            message: Some(common::InvokeResponse { data: Some(prost_types::Any { type_url: String::new(), value: data.to_vec() }), content_type }),
        }))
    }

    /// The answer, and the app's HTTP status (for metrics).
    async fn local_stream(&self, r: Request<Streaming<internals::InternalInvokeRequestStream>>) -> Result<(Response<ResponseStream>, i32), Status> {
        let app = Arc::clone(self.app.as_ref().ok_or_else(no_app)?);
        let md = r.metadata().clone();
        let trace = r.extensions().get::<SpanDetails>().cloned();
        let mut incoming = r.into_inner();
        let lead = incoming.message().await?.ok_or_else(|| Status::invalid_argument("empty invocation stream"))?;
        let req = lead.request.ok_or_else(|| Status::invalid_argument("request does not contain the required fields in the leading chunk"))?;
        if let Some(t) = trace {
            t.invocation(Invocation::Local { method: req.message.as_ref().map(|m| m.method.clone()).unwrap_or_default() });
        }
        let mut meta = CallMeta::from_internal(&req);
        adopt_trace(&md, &mut meta);
        meta.method = checked_method(&meta.method)?;
        let first = lead.payload.map(|p| Bytes::from(p.data));
        let body = super::remote::body_after_lead(first, incoming, |f| f.payload.map(|p| p.data)).await?;
        let resp = Box::pin(app.call_http(&meta, body)).await.map_err(|e| Status::internal(e.to_string()))?;
        let (parts, body) = resp.into_parts();
        let status = i32::from(parts.status.as_u16());
        let content_type = parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let mut lead = internals::InternalInvokeResponseStream {
            response: Some(internals::InternalInvokeResponse {
                status: http_status(parts.status.as_u16(), String::new()),
                headers: response_headers(&parts.headers),
                trailers: Default::default(),
                message: Some(common::InvokeResponse { data: None, content_type }),
            }),
            payload: None,
        };
        // A small answer of known length rides in the lead frame: the reply (HEADERS, one DATA
        // frame, trailers) then leaves in one write, where streaming it wrote the trailers
        // apart once the app's body had signalled its end.
        if axum::body::HttpBody::size_hint(&body).exact().is_some_and(|n| n <= CHUNK as u64) {
            let data = body.collect().await.map_err(|e| Status::internal(format!("reading the app's response: {e}")))?.to_bytes();
            lead.payload = (!data.is_empty()).then(|| common::StreamPayload { data: data.to_vec(), seq: 0 });
            let frames: ResponseStream = Box::pin(futures::stream::iter([Ok(lead)]));
            return Ok((Response::new(frames), status));
        }
        // The answer streams straight from the app's body: no task and no channel per call.
        let payloads = super::remote::chunk_frames(body, |data, seq| internals::InternalInvokeResponseStream { response: None, payload: Some(common::StreamPayload { data, seq }) })
            .map(|f| f.map_err(|e| Status::internal(format!("reading the app's response: {e}"))));
        let frames = futures::stream::once(std::future::ready(Ok(lead))).chain(payloads);
        Ok((Response::new(Box::pin(frames)), status))
    }
}
