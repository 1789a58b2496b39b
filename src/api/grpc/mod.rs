//! The gRPC API (tonic): `dapr.proto.runtime.v1.Dapr` for what rapr implements, server
//! reflection, and a fallback that proxies every other method to the app named by `dapr-app-id`
//! (`invoke/proxy.rs`), or without one answers UNIMPLEMENTED naming it.
//!
//! Served as an axum router (tonic's routes plus the fallback and the API-token check) so both
//! transports share one listener implementation and graceful drain.

mod invoke;
mod metadata;
mod pubsub;
mod secrets;
mod state;
mod subscribe;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rapr_proto::runtime::v1 as pb;
use rapr_proto::runtime::v1::dapr_server::{Dapr, DaprServer};
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use crate::api::invoke::InvokeApi;
use crate::api::Facades;
use crate::runtime::shutdown::ShutdownHandle;
use crate::runtime::span_attrs::{note_publish, note_store};

/// The `Dapr` service: thin adapters over the facades.
#[derive(Clone)]
pub struct DaprService {
    facades: Facades,
    shutdown: ShutdownHandle,
    pubsub_streams: crate::pubsub::streams::StreamSubscriptions,
}

/// The adapters reach each facade by name (`self.state`).
impl std::ops::Deref for DaprService {
    type Target = Facades;
    fn deref(&self) -> &Facades {
        &self.facades
    }
}

#[tonic::async_trait]
impl Dapr for DaprService {
    async fn invoke_service(&self, r: GrpcRequest<pb::InvokeServiceRequest>) -> Result<GrpcResponse<rapr_proto::common::v1::InvokeResponse>, Status> {
        self.invoke_service_impl(r).await
    }
    async fn publish_event(&self, r: GrpcRequest<pb::PublishEventRequest>) -> Result<GrpcResponse<()>, Status> {
        note_publish(&r, &r.get_ref().topic);
        self.publish_event_impl(r).await
    }
    async fn bulk_publish_event_alpha1(&self, r: GrpcRequest<pb::BulkPublishRequest>) -> Result<GrpcResponse<pb::BulkPublishResponse>, Status> {
        note_publish(&r, &r.get_ref().topic);
        self.bulk_publish_event_impl(r, "/dapr.proto.runtime.v1.Dapr/BulkPublishEventAlpha1/").await
    }
    async fn bulk_publish_event(&self, r: GrpcRequest<pb::BulkPublishRequest>) -> Result<GrpcResponse<pb::BulkPublishResponse>, Status> {
        note_publish(&r, &r.get_ref().topic);
        self.bulk_publish_event_impl(r, "/dapr.proto.runtime.v1.Dapr/BulkPublishEvent/").await
    }
    type SubscribeTopicEventsAlpha1Stream = pubsub::TopicEventStream;
    async fn subscribe_topic_events_alpha1(&self, r: GrpcRequest<tonic::Streaming<pb::SubscribeTopicEventsRequestAlpha1>>) -> Result<GrpcResponse<Self::SubscribeTopicEventsAlpha1Stream>, Status> {
        self.subscribe_topic_events_impl(r).await
    }
    async fn get_state(&self, r: GrpcRequest<pb::GetStateRequest>) -> Result<GrpcResponse<pb::GetStateResponse>, Status> {
        note_store(&r, "state", &r.get_ref().store_name);
        self.get_state_impl(r).await
    }
    async fn get_bulk_state(&self, r: GrpcRequest<pb::GetBulkStateRequest>) -> Result<GrpcResponse<pb::GetBulkStateResponse>, Status> {
        self.get_bulk_state_impl(r).await
    }
    async fn save_state(&self, r: GrpcRequest<pb::SaveStateRequest>) -> Result<GrpcResponse<()>, Status> {
        note_store(&r, "state", &r.get_ref().store_name);
        self.save_state_impl(r).await
    }
    async fn query_state_alpha1(&self, r: GrpcRequest<pb::QueryStateRequest>) -> Result<GrpcResponse<pb::QueryStateResponse>, Status> {
        self.query_state_impl(r).await
    }
    async fn delete_state(&self, r: GrpcRequest<pb::DeleteStateRequest>) -> Result<GrpcResponse<()>, Status> {
        note_store(&r, "state", &r.get_ref().store_name);
        self.delete_state_impl(r).await
    }
    async fn delete_bulk_state(&self, r: GrpcRequest<pb::DeleteBulkStateRequest>) -> Result<GrpcResponse<()>, Status> {
        self.delete_bulk_state_impl(r).await
    }
    async fn execute_state_transaction(&self, r: GrpcRequest<pb::ExecuteStateTransactionRequest>) -> Result<GrpcResponse<()>, Status> {
        self.execute_state_transaction_impl(r).await
    }
    async fn get_secret(&self, r: GrpcRequest<pb::GetSecretRequest>) -> Result<GrpcResponse<pb::GetSecretResponse>, Status> {
        note_store(&r, "secrets", &r.get_ref().store_name);
        self.get_secret_impl(r).await
    }
    async fn get_bulk_secret(&self, r: GrpcRequest<pb::GetBulkSecretRequest>) -> Result<GrpcResponse<pb::GetBulkSecretResponse>, Status> {
        self.get_bulk_secret_impl(r).await
    }
    async fn get_metadata(&self, r: GrpcRequest<pb::GetMetadataRequest>) -> Result<GrpcResponse<pb::GetMetadataResponse>, Status> {
        self.get_metadata_impl(r).await
    }
    async fn set_metadata(&self, r: GrpcRequest<pb::SetMetadataRequest>) -> Result<GrpcResponse<()>, Status> {
        self.set_metadata_impl(r).await
    }
    async fn shutdown(&self, r: GrpcRequest<pb::ShutdownRequest>) -> Result<GrpcResponse<()>, Status> {
        self.shutdown_impl(r).await
    }
}

/// What the gRPC router needs.
#[derive(Clone)]
pub struct GrpcState(std::sync::Arc<GrpcShared>);

impl GrpcState {
    /// Shares `inner` between every request (axum and tonic clone the state per request; one
    /// `Arc` makes that a reference count instead of a copy of every facade).
    pub fn new(inner: GrpcShared) -> Self {
        Self(std::sync::Arc::new(inner))
    }
}

impl std::ops::Deref for GrpcState {
    type Target = GrpcShared;
    fn deref(&self) -> &GrpcShared {
        &self.0
    }
}

/// The facades and limits behind [`GrpcState`].
pub struct GrpcShared {
    /// Every building block's facade.
    pub facades: Facades,
    /// Shutdown trigger.
    pub shutdown: ShutdownHandle,
    /// App id.
    pub app_id: Arc<str>,
    /// Largest accepted message.
    pub max_message: usize,
    /// `DAPR_API_TOKEN`, when set.
    pub api_token: Option<Arc<str>>,
    /// Streaming subscriptions (`SubscribeTopicEventsAlpha1`, gRPC only).
    pub pubsub_streams: crate::pubsub::streams::StreamSubscriptions,
}

impl std::ops::Deref for GrpcShared {
    type Target = Facades;
    fn deref(&self) -> &Facades {
        &self.facades
    }
}

/// The gRPC router: Dapr service, reflection (v1 and v1alpha), UNIMPLEMENTED fallback, token check.
pub fn router(s: GrpcState) -> Result<axum::Router, tonic_reflection::server::Error> {
    let svc = DaprService { facades: s.facades.clone(), shutdown: s.shutdown.clone(), pubsub_streams: s.pubsub_streams.clone() };
    let dapr = DaprServer::new(svc).max_decoding_message_size(s.max_message).max_encoding_message_size(s.max_message);
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(rapr_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(rapr_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let routes = tonic::service::Routes::new(dapr).add_service(reflection_v1).add_service(reflection_v1alpha);
    let token = s.api_token.clone();
    let invoke = s.invoke.clone();
    Ok(routes
        .into_axum_router()
        .fallback(move |req: Request| unknown_method(invoke.clone(), req))
        .layer(axum::middleware::from_fn(daprd_statuses))
        .layer(axum::middleware::from_fn(invoke::append_trailers))
        .layer(axum::middleware::from_fn_with_state(token, require_token)))
}

fn unimplemented_message(path: &str) -> String {
    let path = path.trim_start_matches('/');
    let (service, method) = path.rsplit_once('/').unwrap_or(("", path));
    format!("unknown method {method} for service {service}: not implemented by rapr yet")
}

/// Unknown services reach the fallback: proxied to the app named by `dapr-app-id` (daprd's
/// gRPC proxying), else UNIMPLEMENTED naming the method.
async fn unknown_method(invoke: InvokeApi, req: Request) -> Response {
    match invoke.grpc_proxy() {
        Some(proxy) if crate::invoke::proxy::target_of(req.headers()).is_some() => match proxy.forward(req).await {
            Ok(resp) => resp,
            Err(e) => crate::api::errors::invoke::proxy_error(e).into_http::<axum::body::Body>().into_response(),
        },
        _ => Status::unimplemented(unimplemented_message(req.uri().path())).into_http::<axum::body::Body>().into_response(),
    }
}

/// Aligns two statuses tonic produces itself with what daprd (grpc-go) answers: an unknown method
/// of a served service (tonic: bare UNIMPLEMENTED; rapr names the method) and a request over
/// the size limit (tonic: OUT_OF_RANGE; grpc-go: RESOURCE_EXHAUSTED "received message larger
/// than max").
async fn daprd_statuses(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    // A proxied call's status is the target app's own: never rewritten.
    if crate::invoke::proxy::target_of(req.headers()).is_some() {
        return next.run(req).await;
    }
    let mut resp = next.run(req).await;
    let status = resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok());
    let message = resp.headers().get("grpc-message").and_then(|v| v.to_str().ok()).map(percent_decode);
    let rewrite = match (status, message.as_deref()) {
        (Some(12), None | Some("")) => Some((12, unimplemented_message(&path))),
        (Some(11), Some(m)) if m.contains("message length too large") => Some((8, oversize_message(m))),
        _ => None,
    };
    if let Some((code, msg)) = rewrite {
        let h = resp.headers_mut();
        h.insert("grpc-status", http::HeaderValue::from(code));
        if let Ok(v) = http::HeaderValue::from_str(&percent_encode(&msg)) {
            h.insert("grpc-message", v);
        }
    }
    resp
}

/// grpc-go's wording from tonic's "found N bytes, the limit is: M bytes".
fn oversize_message(tonic_msg: &str) -> String {
    let nums: Vec<&str> = tonic_msg.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).collect();
    match nums.as_slice() {
        [found, limit, ..] => format!("grpc: received message larger than max ({found} vs. {limit})"),
        _ => format!("grpc: received message larger than max: {tonic_msg}"),
    }
}

/// grpc-message is percent-encoded on the wire (gRPC over HTTP/2): everything but printable ASCII
/// other than `%`.
const GRPC_MESSAGE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, GRPC_MESSAGE).to_string()
}

/// `dapr-api-token` on gRPC: UNAUTHENTICATED `Unauthorized` with daprd's ErrorInfo.
async fn require_token(State(token): State<Option<Arc<str>>>, req: Request, next: Next) -> Response {
    let Some(expected) = token else { return next.run(req).await };
    let detail = match req.headers().get("dapr-api-token") {
        None => "missing api token in request metadata",
        Some(v) if v.as_bytes() == expected.as_bytes() => return next.run(req).await,
        Some(_) => "authentication error: api token mismatch",
    };
    let mut d = tonic_types::ErrorDetails::new();
    d.set_error_info(
        "Unauthorized",
        crate::api::errors::codes::DOMAIN,
        [("http.code".to_string(), "401".to_string()), ("http.error_message".to_string(), detail.to_string())],
    );
    use tonic_types::StatusExt;
    Status::with_error_details(tonic::Code::Unauthenticated, "Unauthorized", d).into_http::<axum::body::Body>().into_response()
}
