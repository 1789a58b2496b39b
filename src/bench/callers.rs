//! Request makers for the load generator, one per connection: raw HTTP/1.1 keep-alive (hyper's
//! connection API, no pool), and gRPC calls each on their own HTTP/2 connection (`InvokeService`
//! on a sidecar, `AppCallback.OnInvoke` on the echo app or through nginx). Each reads the whole
//! answer and counts anything but success as an error.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rapr_proto::app::app_callback_client::AppCallbackClient;
use rapr_proto::common::v1::{HttpExtension, InvokeRequest};
use rapr_proto::runtime::v1::dapr_client::DaprClient;
use rapr_proto::runtime::v1::InvokeServiceRequest;
use tonic::transport::{Channel, Endpoint};

use super::loadgen::{CallFuture, Caller, Connect};

/// One HTTP request shape.
#[derive(Debug, Clone)]
pub struct HttpShape {
    /// Verb.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// Body (empty for GET).
    pub body: Bytes,
    /// `content-type`, if any.
    pub content_type: Option<&'static str>,
}

struct HttpCaller {
    sender: SendRequest<Full<Bytes>>,
    shape: Arc<HttpShape>,
    host: String,
}

impl Caller for HttpCaller {
    fn call(&mut self) -> CallFuture<'_> {
        Box::pin(async move {
            let mut b = Request::builder().method(self.shape.method.clone()).uri(self.shape.path.as_str()).header(http::header::HOST, self.host.as_str());
            if let Some(ct) = self.shape.content_type {
                b = b.header(http::header::CONTENT_TYPE, ct);
            }
            let req = b.body(Full::new(self.shape.body.clone())).map_err(|e| e.to_string())?;
            self.sender.ready().await.map_err(|e| e.to_string())?;
            let resp = self.sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            if !status.is_success() {
                return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)])));
            }
            Ok(())
        })
    }
}

/// HTTP/1.1 keep-alive connections to `port`, each sending `shape`.
pub fn http(port: u16, shape: HttpShape) -> Connect {
    let shape = Arc::new(shape);
    Arc::new(move || {
        let shape = Arc::clone(&shape);
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).await.map_err(|e| format!("connecting to {port}: {e}"))?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(Box::new(HttpCaller { sender, shape, host: format!("127.0.0.1:{port}") }) as Box<dyn Caller>)
        })
    })
}

/// A gRPC channel on its own HTTP/2 connection.
pub async fn channel(port: u16) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://127.0.0.1:{port}")).map_err(|e| e.to_string())?.tcp_nodelay(true).connect().await.map_err(|e| format!("gRPC connect to {port}: {e}"))
}

/// The message both gRPC paths carry: method `echo`, the payload as `Any` data.
fn invoke_request(payload: &Bytes) -> InvokeRequest {
    InvokeRequest {
        method: "echo".into(),
        data: Some(prost_types::Any { type_url: String::new(), value: payload.to_vec() }),
        content_type: "application/octet-stream".into(),
        http_extension: Some(HttpExtension { verb: 2, querystring: String::new() }),
    }
}

struct OnInvokeCaller {
    client: AppCallbackClient<Channel>,
    req: InvokeRequest,
}

impl Caller for OnInvokeCaller {
    fn call(&mut self) -> CallFuture<'_> {
        Box::pin(async move {
            self.client.on_invoke(self.req.clone()).await.map(|_| ()).map_err(|s| format!("{:?}: {}", s.code(), s.message()))
        })
    }
}

/// `AppCallback.OnInvoke` straight to a gRPC server on `port` (the echo app, or nginx before it).
pub fn on_invoke(port: u16, payload: Bytes) -> Connect {
    Arc::new(move || {
        let req = invoke_request(&payload);
        Box::pin(async move {
            let client = AppCallbackClient::new(channel(port).await?);
            Ok(Box::new(OnInvokeCaller { client, req }) as Box<dyn Caller>)
        })
    })
}

struct InvokeServiceCaller {
    client: DaprClient<Channel>,
    req: InvokeServiceRequest,
}

impl Caller for InvokeServiceCaller {
    fn call(&mut self) -> CallFuture<'_> {
        Box::pin(async move {
            self.client.invoke_service(self.req.clone()).await.map(|_| ()).map_err(|s| format!("{:?}: {}", s.code(), s.message()))
        })
    }
}

/// `Dapr.InvokeService` on a sidecar's gRPC port, to app `app_id`.
pub fn invoke_service(port: u16, app_id: String, payload: Bytes) -> Connect {
    Arc::new(move || {
        let req = InvokeServiceRequest { id: app_id.clone(), message: Some(invoke_request(&payload)) };
        Box::pin(async move {
            let client = DaprClient::new(channel(port).await?);
            Ok(Box::new(InvokeServiceCaller { client, req }) as Box<dyn Caller>)
        })
    })
}
