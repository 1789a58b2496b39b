//! Service invocation with gRPC apps (`--app-protocol grpc`) and daprd's gRPC proxying.
//!
//! The test app is a tonic server with two services: `AppCallback` (what the sidecar calls for
//! `InvokeService` and HTTP invoke) echoing what it received, and `ServiceInvocation` reused as
//! an arbitrary app service for the proxy tests (any service the sidecar's API port does not
//! serve is proxied when the call carries `dapr-app-id`): `CallLocal` for unary calls and
//! `CallLocalStream` for every streaming mode, its behaviour chosen by `x-mode` metadata.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use rapr_proto::app::app_callback_client::AppCallbackClient;
use rapr_proto::app::app_callback_server::{AppCallback, AppCallbackServer};
use rapr_proto::common::v1::{http_extension::Verb, HttpExtension, InvokeRequest, InvokeResponse, StreamPayload};
use rapr_proto::internals::v1 as internals;
use rapr_proto::internals::v1::service_invocation_client::ServiceInvocationClient;
use rapr_proto::internals::v1::service_invocation_server::{ServiceInvocation, ServiceInvocationServer};
use rapr_proto::runtime::v1::InvokeServiceRequest;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::harness::{free_port, Sidecar, SidecarBuilder};

/// Every ASCII metadata entry as `key -> first value`.
fn metadata_json(md: &MetadataMap) -> Value {
    let mut out = serde_json::Map::new();
    for kv in md.iter() {
        if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv {
            out.entry(k.as_str().to_string()).or_insert_with(|| Value::String(v.to_str().unwrap_or_default().into()));
        }
    }
    Value::Object(out)
}

#[derive(Clone, Default)]
struct App;

#[tonic::async_trait]
impl AppCallback for App {
    no_topic_callbacks!();
    async fn on_invoke(&self, r: Request<InvokeRequest>) -> Result<Response<InvokeResponse>, Status> {
        let metadata = metadata_json(r.metadata());
        let req = r.into_inner();
        if let Some(code) = req.method.strip_prefix("fail/") {
            return Err(Status::new(Code::from_i32(code.parse().unwrap()), format!("app failed with {code}")));
        }
        if req.method == "fail-details" {
            use tonic_types::StatusExt;
            let mut d = tonic_types::ErrorDetails::new();
            d.set_error_info("OUT_OF_STOCK", "shop.example", [("sku".to_string(), "42".to_string())]);
            let mut st = Status::with_error_details(Code::FailedPrecondition, "no stock", d);
            st.metadata_mut().insert("x-err", "e1".parse().unwrap());
            return Err(st);
        }
        if req.method == "typed" {
            // An answer of the app's own type, with a response header and (see `grpc_app`) a trailer.
            let mut resp = Response::new(InvokeResponse { data: Some(prost_types::Any { type_url: CUSTOM.into(), value: b"\x08\x2a".to_vec() }), content_type: String::new() });
            resp.metadata_mut().insert("x-reply", "h1".parse().unwrap());
            return Ok(resp);
        }
        let ext = req.http_extension.unwrap_or_default();
        let data = req.data.map(|d| d.value).unwrap_or_default();
        let echo = json!({
            "method": req.method,
            "data": String::from_utf8_lossy(&data),
            "content_type": req.content_type,
            "verb": Verb::try_from(ext.verb).map(|v| v.as_str_name()).unwrap_or("?"),
            "querystring": ext.querystring,
            "metadata": metadata,
        });
        Ok(Response::new(InvokeResponse { data: Some(prost_types::Any { type_url: String::new(), value: echo.to_string().into_bytes() }), content_type: "application/json".into() }))
    }
}

type Frames = Pin<Box<dyn Stream<Item = Result<internals::InternalInvokeResponseStream, Status>> + Send>>;

fn frame(data: Vec<u8>, seq: u64) -> internals::InternalInvokeResponseStream {
    internals::InternalInvokeResponseStream { response: None, payload: Some(StreamPayload { data, seq }) }
}

#[tonic::async_trait]
impl ServiceInvocation for App {
    /// Unary: answers the request's metadata (as JSON in the data) or, for method
    /// `status/<code>`, that gRPC status.
    async fn call_local(&self, r: Request<internals::InternalInvokeRequest>) -> Result<Response<internals::InternalInvokeResponse>, Status> {
        let metadata = metadata_json(r.metadata());
        let msg = r.into_inner().message.unwrap_or_default();
        if let Some(code) = msg.method.strip_prefix("status/") {
            return Err(Status::new(Code::from_i32(code.parse().unwrap()), format!("custom status {code}")));
        }
        let data = msg.data.map(|d| d.value).unwrap_or_default();
        let echo = json!({ "metadata": metadata, "data": String::from_utf8_lossy(&data), "len": data.len() });
        Ok(Response::new(internals::InternalInvokeResponse {
            message: Some(InvokeResponse { data: Some(prost_types::Any { type_url: String::new(), value: echo.to_string().into_bytes() }), content_type: "application/json".into() }),
            ..Default::default()
        }))
    }

    type CallLocalStreamStream = Frames;

    /// `x-mode: echo` answers each frame at once (upper-cased); `sum` answers once, at the end,
    /// with everything received; `fanout` answers the first frame with `x-count` frames.
    async fn call_local_stream(&self, r: Request<Streaming<internals::InternalInvokeRequestStream>>) -> Result<Response<Frames>, Status> {
        let mode = r.metadata().get("x-mode").and_then(|v| v.to_str().ok()).unwrap_or("echo").to_string();
        let count: u64 = r.metadata().get("x-count").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(3);
        let mut incoming = r.into_inner();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut all = Vec::new();
            let mut seq = 0;
            while let Some(m) = incoming.next().await {
                let Ok(m) = m else { return };
                let data = m.payload.map(|p| p.data).unwrap_or_default();
                match mode.as_str() {
                    "sum" => all.extend(data),
                    "fanout" => {
                        for i in 0..count {
                            let _ = tx.send(Ok(frame(format!("{}-{i}", String::from_utf8_lossy(&data)).into_bytes(), i))).await;
                        }
                        return;
                    }
                    _ => {
                        if tx.send(Ok(frame(data.to_ascii_uppercase(), seq))).await.is_err() {
                            return;
                        }
                        seq += 1;
                    }
                }
            }
            if mode == "sum" {
                let _ = tx.send(Ok(frame(all, 0))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The type of the app's own answer message.
const CUSTOM: &str = "type.googleapis.com/CustomResponse";

/// Adds trailer `x-trail: t1` to every successful answer (tonic's unary handlers cannot).
async fn with_trailer(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use http_body_util::BodyExt;
    let (parts, body) = next.run(req).await.into_parts();
    let body = body.map_frame(|f| match f.into_trailers() {
        Ok(mut t) => {
            if t.get("grpc-status").is_some_and(|v| v == "0") {
                t.insert("x-trail", "t1".parse().unwrap());
            }
            hyper::body::Frame::trailers(t)
        }
        Err(f) => f,
    });
    axum::response::Response::from_parts(parts, axum::body::Body::new(body))
}

/// Starts the gRPC app on a free port.
async fn grpc_app() -> u16 {
    let routes = tonic::service::Routes::new(AppCallbackServer::new(App)).add_service(ServiceInvocationServer::new(App).max_decoding_message_size(16 << 20));
    let routes = routes.into_axum_router().layer(axum::middleware::from_fn(with_trailer));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, routes).await.unwrap() });
    port
}

struct Pair {
    caller: Sidecar,
    target: Sidecar,
    _home: tempfile::TempDir,
}

/// A target sidecar in front of the gRPC app and a caller sidecar without an app.
async fn pair(target_id: &str) -> Pair {
    let home = tempfile::tempdir().unwrap();
    let port = grpc_app().await;
    let target = SidecarBuilder::new(target_id).home(home.path()).args(&["--app-port", &port.to_string(), "--app-protocol", "grpc"]).start().await;
    let caller = SidecarBuilder::new(&format!("{target_id}-caller")).home(home.path()).start().await;
    Pair { caller, target, _home: home }
}

async fn channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await.unwrap()
}

/// A request carrying `dapr-app-id` and a custom header.
fn to_app<T>(id: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("dapr-app-id", id.parse().unwrap());
    r.metadata_mut().insert("x-custom", "c1".parse().unwrap());
    r
}

fn invoke_req(id: &str, method: &str) -> InvokeServiceRequest {
    InvokeServiceRequest {
        id: id.into(),
        message: Some(InvokeRequest {
            method: method.into(),
            data: Some(prost_types::Any { type_url: String::new(), value: b"payload".to_vec() }),
            content_type: "text/plain".into(),
            http_extension: Some(HttpExtension { verb: Verb::Post as i32, querystring: "a=1".into() }),
        }),
    }
}

fn echo_of(resp: InvokeResponse) -> Value {
    assert_eq!(resp.content_type, "application/json");
    serde_json::from_slice(&resp.data.unwrap().value).unwrap()
}

#[tokio::test]
async fn invoke_grpc_invoke_service_reaches_a_grpc_app_locally_and_remotely() {
    let p = pair("ig-svc").await;
    for (sidecar, caller_id) in [(&p.caller, "ig-svc-caller"), (&p.target, "ig-svc")] {
        let mut c = sidecar.grpc().await;
        let mut req = Request::new(invoke_req("ig-svc", "orders/echo"));
        req.metadata_mut().insert("x-custom", "c1".parse().unwrap());
        req.metadata_mut().insert("dapr-caller-app-id", "spoofed".parse().unwrap());
        let resp = c.invoke_service(req).await.unwrap();
        assert!(resp.metadata().get("dapr-http-status").is_none(), "only HTTP apps report an HTTP status");
        let seen = echo_of(resp.into_inner());
        assert_eq!(seen["method"], "orders/echo");
        assert_eq!(seen["data"], "payload");
        assert_eq!(seen["content_type"], "text/plain");
        assert_eq!((seen["verb"].as_str(), seen["querystring"].as_str()), (Some("POST"), Some("a=1")));
        assert_eq!(seen["metadata"]["x-custom"], "c1");
        assert_eq!(seen["metadata"]["dapr-caller-app-id"], caller_id, "the sidecar sets the caller id");
        assert_eq!(seen["metadata"]["dapr-callee-app-id"], "ig-svc");
        // The app's own status comes back unchanged.
        let st = c.invoke_service(invoke_req("ig-svc", "fail/5")).await.unwrap_err();
        assert_eq!((st.code(), st.message()), (Code::NotFound, "app failed with 5"), "via {caller_id}");
        let st = c.invoke_service(invoke_req("ig-svc", "fail/9")).await.unwrap_err();
        assert_eq!(st.code(), Code::FailedPrecondition);
    }
}

/// `InvokeService` as a one-message stream, so the answer's headers and trailers stay apart.
async fn invoke_split(sidecar: &Sidecar, req: InvokeServiceRequest) -> (MetadataMap, Result<InvokeResponse, Status>, MetadataMap) {
    let mut grpc = tonic::client::Grpc::new(channel(sidecar.grpc).await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<InvokeServiceRequest, InvokeResponse>::default();
    let path = http::uri::PathAndQuery::from_static("/dapr.proto.runtime.v1.Dapr/InvokeService");
    let resp = match grpc.streaming(Request::new(futures::stream::once(async { req })), path, codec).await {
        Ok(r) => r,
        Err(s) => return (MetadataMap::new(), Err(s.clone()), s.metadata().clone()),
    };
    let headers = resp.metadata().clone();
    let mut stream = resp.into_inner();
    let msg = stream.message().await.map(Option::unwrap);
    let trailers = stream.trailers().await.unwrap().unwrap_or_default();
    (headers, msg, trailers)
}

#[tokio::test]
async fn invoke_grpc_typed_answers_headers_trailers_and_error_details_pass_through() {
    use tonic_types::StatusExt;
    let p = pair("ig-typed").await;
    for sidecar in [&p.caller, &p.target] {
        // gRPC caller: the Any keeps its type_url; the app's header and trailer stay apart.
        let (headers, msg, trailers) = invoke_split(sidecar, invoke_req("ig-typed", "typed")).await;
        let data = msg.unwrap().data.unwrap();
        assert_eq!((data.type_url.as_str(), data.value.as_slice()), (CUSTOM, b"\x08\x2a".as_slice()));
        assert_eq!(headers.get("x-reply").unwrap(), "h1");
        assert!(headers.get("x-trail").is_none());
        assert_eq!(trailers.get("x-trail").unwrap(), "t1", "the app's trailer is a trailer");
        assert!(headers.get("dapr-http-status").is_none(), "only HTTP apps report an HTTP status");
        // The app's error details come back whole.
        let mut c = sidecar.grpc().await;
        let st = c.invoke_service(invoke_req("ig-typed", "fail-details")).await.unwrap_err();
        assert_eq!((st.code(), st.message()), (Code::FailedPrecondition, "no stock"));
        let info = st.get_details_error_info().expect("the app's ErrorInfo");
        assert_eq!((info.reason.as_str(), info.domain.as_str(), info.metadata["sku"].as_str()), ("OUT_OF_STOCK", "shop.example", "42"));
        assert_eq!(st.metadata().get("x-err").unwrap(), "e1");
        // HTTP caller: the raw value with daprd's protobuf content type, and the app's header.
        let r = sidecar.client.post(sidecar.url("/v1.0/invoke/ig-typed/method/typed")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/x-protobuf");
        assert_eq!(r.headers()["x-reply"], "h1");
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"\x08\x2a");
        // HTTP caller, failing app: the protojson of the app's status (the gRPC code, details
        // only when present).
        let r = sidecar.client.post(sidecar.url("/v1.0/invoke/ig-typed/method/fail-details")).send().await.unwrap();
        assert_eq!(r.status(), 400);
        let b: Value = r.json().await.unwrap();
        assert_eq!(
            b,
            json!({"code": 9, "message": "no stock", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "OUT_OF_STOCK", "domain": "shop.example", "metadata": {"sku": "42"}}]})
        );
        let r = sidecar.client.post(sidecar.url("/v1.0/invoke/ig-typed/method/fail/5")).send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.json::<Value>().await.unwrap(), json!({"code": 5, "message": "app failed with 5"}));
    }
}

#[tokio::test]
async fn invoke_grpc_http_invoke_reaches_a_grpc_app_and_maps_its_statuses() {
    let p = pair("ig-http").await;
    for sidecar in [&p.caller, &p.target] {
        let r = sidecar
            .client
            .put(sidecar.url("/v1.0/invoke/ig-http/method/orders/1?x=1&y=2"))
            .header("content-type", "text/plain")
            .header("x-custom", "c1")
            .body("hello")
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "{text}");
        let seen: Value = serde_json::from_str(&text).unwrap();
        assert_eq!((seen["method"].as_str(), seen["verb"].as_str(), seen["querystring"].as_str()), (Some("orders/1"), Some("PUT"), Some("x=1&y=2")));
        assert_eq!((seen["data"].as_str(), seen["content_type"].as_str()), (Some("hello"), Some("text/plain")));
        assert_eq!(seen["metadata"]["x-custom"], "c1");
        // daprd's HTTPStatusFromCode, with the status as JSON.
        for (code, http) in [(3, 400), (5, 404), (7, 403), (13, 500), (14, 503), (12, 501), (16, 401)] {
            let r = sidecar.client.post(sidecar.url(&format!("/v1.0/invoke/ig-http/method/fail/{code}"))).send().await.unwrap();
            assert_eq!(r.status(), http, "gRPC code {code}");
            let b: Value = r.json().await.unwrap();
            assert_eq!(b["message"], format!("app failed with {code}"));
        }
    }
}

#[tokio::test]
async fn invoke_grpc_proxy_unary_local_and_remote_with_metadata() {
    let p = pair("ig-proxy").await;
    // Remote: through the caller's sidecar, then the target's internal port.
    let mut app = AppCallbackClient::new(channel(p.caller.grpc).await);
    let mut req = to_app("ig-proxy", InvokeRequest { method: "m".into(), data: Some(prost_types::Any { type_url: "t".into(), value: b"d".to_vec() }), ..Default::default() });
    req.metadata_mut().insert("dapr-caller-app-id", "spoofed".parse().unwrap());
    let seen = echo_of(app.on_invoke(req).await.unwrap().into_inner());
    assert_eq!((seen["method"].as_str(), seen["data"].as_str()), (Some("m"), Some("d")));
    let md = &seen["metadata"];
    assert_eq!(md["x-custom"], "c1");
    assert_eq!(md["dapr-app-id"], "ig-proxy", "dapr-app-id is kept");
    assert_eq!(md["dapr-caller-app-id"], "ig-proxy-caller");
    assert_eq!(md["dapr-callee-app-id"], "ig-proxy");
    // Local: the target's own sidecar goes straight to its app, adding nothing.
    let mut app = AppCallbackClient::new(channel(p.target.grpc).await);
    let seen = echo_of(app.on_invoke(to_app("ig-proxy", InvokeRequest { method: "local".into(), ..Default::default() })).await.unwrap().into_inner());
    assert_eq!(seen["method"], "local");
    assert_eq!(seen["metadata"]["dapr-app-id"], "ig-proxy");
    assert!(seen["metadata"].get("dapr-caller-app-id").is_none(), "{seen}");
    // The app's statuses come back untouched (UNIMPLEMENTED is not renamed as rapr's own).
    for sidecar in [&p.caller, &p.target] {
        let mut svc = ServiceInvocationClient::new(channel(sidecar.grpc).await);
        let ok = svc.call_local(to_app("ig-proxy", internals::InternalInvokeRequest::default())).await.unwrap().into_inner();
        let echo: Value = serde_json::from_slice(&ok.message.unwrap().data.unwrap().value).unwrap();
        assert_eq!(echo["metadata"]["x-custom"], "c1");
        for code in [Code::NotFound, Code::Unimplemented, Code::PermissionDenied, Code::Internal] {
            let msg = internals::InternalInvokeRequest { message: Some(InvokeRequest { method: format!("status/{}", code as i32), ..Default::default() }), ..Default::default() };
            let st = svc.call_local(to_app("ig-proxy", msg)).await.unwrap_err();
            assert_eq!((st.code(), st.message().to_string()), (code, format!("custom status {}", code as i32)));
        }
        // A large message passes whole.
        let big = vec![b'x'; 3 << 20];
        let msg = internals::InternalInvokeRequest { message: Some(InvokeRequest { data: Some(prost_types::Any { type_url: String::new(), value: big }), ..Default::default() }), ..Default::default() };
        let mut svc = svc.max_encoding_message_size(16 << 20);
        let ok = svc.call_local(to_app("ig-proxy", msg)).await.unwrap().into_inner();
        let echo: Value = serde_json::from_slice(&ok.message.unwrap().data.unwrap().value).unwrap();
        assert_eq!(echo["len"], 3 << 20);
    }
}

fn chunk(data: &[u8]) -> internals::InternalInvokeRequestStream {
    internals::InternalInvokeRequestStream { request: None, payload: Some(StreamPayload { data: data.to_vec(), seq: 0 }) }
}

fn payload(m: internals::InternalInvokeResponseStream) -> String {
    String::from_utf8(m.payload.unwrap().data).unwrap()
}

const STREAM_PATH: &str = "/dapr.proto.internals.v1.ServiceInvocation/CallLocalStream";

#[tokio::test]
async fn invoke_grpc_proxy_streams_every_mode_local_and_remote() {
    let p = pair("ig-stream").await;
    for sidecar in [&p.caller, &p.target] {
        let ch = channel(sidecar.grpc).await;
        // Bidi, in lock step: each answer arrives before the next message is sent, so nothing
        // is buffered on the way.
        let (tx, rx) = mpsc::channel(1);
        let mut svc = ServiceInvocationClient::new(ch.clone());
        let mut answers = svc.call_local_stream(to_app("ig-stream", ReceiverStream::new(rx))).await.unwrap().into_inner();
        for word in ["alpha", "beta", "gamma"] {
            tx.send(chunk(word.as_bytes())).await.unwrap();
            let got = tokio::time::timeout(Duration::from_secs(10), answers.message()).await.expect("an answer per message").unwrap().unwrap();
            assert_eq!(payload(got), word.to_uppercase());
        }
        drop(tx);
        assert!(answers.message().await.unwrap().is_none());

        let mut grpc = tonic::client::Grpc::new(ch.clone());
        let path = http::uri::PathAndQuery::from_static(STREAM_PATH);
        // Client streaming: many in, one out.
        grpc.ready().await.unwrap();
        let mut req = to_app("ig-stream", futures::stream::iter(["a", "b", "c"].map(|s| chunk(s.as_bytes()))));
        req.metadata_mut().insert("x-mode", "sum".parse().unwrap());
        let codec = tonic_prost::ProstCodec::<internals::InternalInvokeRequestStream, internals::InternalInvokeResponseStream>::default();
        let one = grpc.client_streaming(req, path.clone(), codec).await.unwrap().into_inner();
        assert_eq!(payload(one), "abc");
        // Server streaming: one in, many out.
        grpc.ready().await.unwrap();
        let mut req = to_app("ig-stream", chunk(b"x"));
        req.metadata_mut().insert("x-mode", "fanout".parse().unwrap());
        req.metadata_mut().insert("x-count", "5".parse().unwrap());
        let codec = tonic_prost::ProstCodec::<internals::InternalInvokeRequestStream, internals::InternalInvokeResponseStream>::default();
        let mut many = grpc.server_streaming(req, path.clone(), codec).await.unwrap().into_inner();
        let mut got = Vec::new();
        while let Some(m) = many.message().await.unwrap() {
            got.push(payload(m));
        }
        assert_eq!(got, ["x-0", "x-1", "x-2", "x-3", "x-4"]);
    }
}

#[tokio::test]
async fn invoke_grpc_proxy_errors() {
    let p = pair("ig-err").await;
    let mut svc = ServiceInvocationClient::new(channel(p.caller.grpc).await);
    // Unknown app: the resolver's error, as daprd's proxy returns it (a plain error: UNKNOWN).
    let st = svc.call_local(to_app("nobody-home", internals::InternalInvokeRequest::default())).await.unwrap_err();
    assert_eq!((st.code(), st.message()), (Code::Unknown, "no host found with the given ID"));
    let st = svc.call_local(to_app("a.b.c", internals::InternalInvokeRequest::default())).await.unwrap_err();
    assert_eq!((st.code(), st.message()), (Code::Unknown, "invalid app id a.b.c"));
    // No dapr-app-id: the method is not served.
    let st = svc.call_local(internals::InternalInvokeRequest::default()).await.unwrap_err();
    assert_eq!(st.code(), Code::Unimplemented);
    assert!(st.message().contains("CallLocal"), "{}", st.message());
    // The caller's own id: it has no gRPC app.
    let st = svc.call_local(to_app("ig-err-caller", internals::InternalInvokeRequest::default())).await.unwrap_err();
    assert_eq!(st.code(), Code::Unknown);
    assert!(st.message().contains("app channel not initialized"), "{}", st.message());
}

#[tokio::test]
async fn invoke_grpc_proxy_to_a_dead_app_is_unavailable_and_needs_the_api_token() {
    let home = tempfile::tempdir().unwrap();
    let dead = free_port();
    let target = SidecarBuilder::new("ig-dead").home(home.path()).args(&["--app-port", &dead.to_string(), "--app-protocol", "grpc"]).allow_unhealthy().start().await;
    let caller = SidecarBuilder::new("ig-dead-caller").home(home.path()).env("DAPR_API_TOKEN", "s3cret").start().await;
    let mut svc = ServiceInvocationClient::new(channel(caller.grpc).await);
    let st = svc.call_local(to_app("ig-dead", internals::InternalInvokeRequest::default())).await.unwrap_err();
    assert_eq!(st.code(), Code::Unauthenticated, "the proxy is behind the API token: {st:?}");
    let mut req = to_app("ig-dead", internals::InternalInvokeRequest::default());
    req.metadata_mut().insert("dapr-api-token", "s3cret".parse().unwrap());
    let st = svc.call_local(req).await.unwrap_err();
    assert_eq!(st.code(), Code::Unavailable, "{st:?}");
    drop(target);
}
