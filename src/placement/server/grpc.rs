//! `dapr.proto.placement.v1.Placement/ReportDaprStatus`: a sidecar's stream of reports and
//! acknowledgements in, placement orders out (daprd v1.18's server, docs/notes/placement-daprd.md
//! §3.5, §6). Each stream gets a reader task that checks every message as daprd does and hands it
//! to its namespace's `Disseminator`; the orders come back on the stream's own channel.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::Stream;
use ractor::ActorRef;
use rapr_proto::placement::v1::placement_server::Placement;
use rapr_proto::placement::v1::{Host, HostOperation, PlacementOrder};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use super::namespace::DisseminatorMsg;
use super::registry::NamespaceRegistryMsg;
use crate::placement::membership::{check_host, HostRefused};

/// The service, cheap to clone.
#[derive(Clone)]
pub struct PlacementGrpc {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    registry: ActorRef<NamespaceRegistryMsg>,
    leader: watch::Receiver<bool>,
    next_stream: AtomicU64,
}

impl PlacementGrpc {
    /// Node `id` serving streams while `leader` says it leads.
    pub fn new(id: String, registry: ActorRef<NamespaceRegistryMsg>, leader: watch::Receiver<bool>) -> Self {
        Self { inner: Arc::new(Inner { id, registry, leader, next_stream: AtomicU64::new(0) }) }
    }
}

fn refused(e: HostRefused) -> Status {
    match e {
        HostRefused::InvalidArgument(m) => Status::invalid_argument(m),
        HostRefused::PermissionDenied(m) => Status::permission_denied(m),
    }
}

/// daprd's checks, and one of rapr's own: a report that names actor types must say where the
/// host listens (`host:port`), or no sidecar could reach the actors placed on it.
pub fn check_message(host: &Host) -> Result<(), Status> {
    check_host(host).map_err(refused)?;
    if host.operation == HostOperation::Report as i32 && !host.entities.is_empty() && !valid_host_name(&host.name) {
        return Err(Status::invalid_argument(format!("host name {:?} must be host:port (the sidecar's internal gRPC address)", host.name)));
    }
    Ok(())
}

fn valid_host_name(name: &str) -> bool {
    match name.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

type Orders = Pin<Box<dyn Stream<Item = Result<PlacementOrder, Status>> + Send>>;

#[tonic::async_trait]
impl Placement for PlacementGrpc {
    type ReportDaprStatusStream = Orders;

    async fn report_dapr_status(&self, request: Request<Streaming<Host>>) -> Result<Response<Orders>, Status> {
        if !*self.inner.leader.borrow() {
            return Err(Status::failed_precondition(format!("node id={} is not a leader. Only the leader can serve requests", self.inner.id)));
        }
        let mut inbound = request.into_inner();
        let first = match inbound.message().await? {
            Some(h) => h,
            None => return Err(Status::cancelled("the stream ended before its first report")),
        };
        check_message(&first)?;
        let registry = &self.inner.registry;
        let namespace = first.namespace.clone();
        let disseminator = ractor::call!(registry, NamespaceRegistryMsg::Get, namespace)
            .map_err(|e| Status::unavailable(format!("placement server is shutting down: {e}")))?;
        let stream = self.inner.next_stream.fetch_add(1, Ordering::Relaxed);
        let (orders, rx) = tokio::sync::mpsc::unbounded_channel();
        let reader_orders = orders.clone();
        tracing::debug!(stream, host = %first.name, app_id = %first.id, namespace = %first.namespace, "placement stream connected");
        disseminator
            .send_message(DisseminatorMsg::Connect { stream, host: first, orders })
            .map_err(|_| Status::unavailable("placement server is shutting down"))?;
        tokio::spawn(read_stream(stream, inbound, disseminator, reader_orders));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))))
    }
}

/// Hands a stream's messages to its disseminator until either side ends it.
async fn read_stream(stream: u64, mut inbound: Streaming<Host>, disseminator: ActorRef<DisseminatorMsg>, orders: super::namespace::OrderSender) {
    loop {
        let next = tokio::select! {
            m = inbound.message() => m,
            // The response side is gone (the sidecar left, or placement closed the stream).
            () = orders.closed() => break,
        };
        match next {
            Ok(Some(host)) => {
                if let Err(status) = check_message(&host) {
                    tracing::warn!(stream, error = %status.message(), "placement refused a sidecar's message");
                    let _ = orders.send(Err(status));
                    break;
                }
                if disseminator.send_message(DisseminatorMsg::Receive { stream, host }).is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(stream, error = %e, "placement stream broke");
                break;
            }
        }
    }
    tracing::debug!(stream, "placement stream closed");
    let _ = disseminator.send_message(DisseminatorMsg::Close { stream });
}
