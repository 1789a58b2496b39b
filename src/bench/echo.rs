//! The minimal echo app `rapr bench` measures against (`rapr bench-echo`, hidden): answers every
//! HTTP request with its own body, and `AppCallback.OnInvoke` with its own data. It runs as its
//! own process so its CPU and memory are never counted as the sidecar's, and it is the same app
//! behind the direct baseline, the nginx chain and the rapr chain.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rapr_proto::app::app_callback_server::{AppCallback, AppCallbackServer};
use rapr_proto::common::v1::{InvokeRequest, InvokeResponse};

/// Flags of `rapr bench-echo`.
#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    /// HTTP/1.1 port (0: none).
    #[arg(long, default_value_t = 0)]
    pub http_port: u16,
    /// gRPC (`AppCallback`) port (0: none).
    #[arg(long, default_value_t = 0)]
    pub grpc_port: u16,
}

/// Serves until killed.
pub async fn run_echo(args: EchoArgs) -> i32 {
    let http = async {
        if args.http_port == 0 {
            return std::future::pending::<Result<(), String>>().await;
        }
        serve_http(SocketAddr::from(([127, 0, 0, 1], args.http_port))).await
    };
    let grpc = async {
        if args.grpc_port == 0 {
            return std::future::pending::<Result<(), String>>().await;
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], args.grpc_port));
        tonic::transport::Server::builder().tcp_nodelay(true).add_service(AppCallbackServer::new(Echo)).serve(addr).await.map_err(|e| format!("gRPC echo: {e}"))
    };
    let r = tokio::select! { r = http => r, r = grpc => r };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("echo app: {e}");
            1
        }
    }
}

async fn serve_http(addr: SocketAddr) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("HTTP echo on {addr}: {e}"))?;
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(echo_http);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

async fn echo_http(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Ok(Response::new(Full::new(body)))
}

struct Echo;

#[tonic::async_trait]
impl AppCallback for Echo {
    async fn on_invoke(&self, r: tonic::Request<InvokeRequest>) -> Result<tonic::Response<InvokeResponse>, tonic::Status> {
        let r = r.into_inner();
        Ok(tonic::Response::new(InvokeResponse { data: r.data, content_type: r.content_type }))
    }
    async fn list_topic_subscriptions(&self, _r: tonic::Request<()>) -> Result<tonic::Response<rapr_proto::app::ListTopicSubscriptionsResponse>, tonic::Status> {
        // The echo app declares no subscriptions; the pub/sub benchmark declares them in files.
        Ok(tonic::Response::new(Default::default()))
    }
    async fn on_topic_event(&self, _r: tonic::Request<rapr_proto::app::TopicEventRequest>) -> Result<tonic::Response<rapr_proto::app::TopicEventResponse>, tonic::Status> {
        // SUCCESS (status 0): every event is accepted.
        Ok(tonic::Response::new(Default::default()))
    }
    async fn on_bulk_topic_event(&self, r: tonic::Request<rapr_proto::app::TopicEventBulkRequest>) -> Result<tonic::Response<rapr_proto::app::TopicEventBulkResponse>, tonic::Status> {
        let statuses = r.into_inner().entries.into_iter().map(|e| rapr_proto::app::TopicEventBulkResponseEntry { entry_id: e.entry_id, status: 0 }).collect();
        Ok(tonic::Response::new(rapr_proto::app::TopicEventBulkResponse { statuses }))
    }
}
