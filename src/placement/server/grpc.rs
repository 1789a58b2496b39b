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
    /// The lease period in milliseconds (0: no leases), told to rapr sidecars.
    lease_ms: u64,
    registry: ActorRef<NamespaceRegistryMsg>,
    leader: watch::Receiver<crate::placement::raft::node::Leadership>,
    next_stream: AtomicU64,
}

impl PlacementGrpc {
    /// Node `id` serving streams while `leader` says it leads.
    pub fn new(id: String, lease_ms: u64, registry: ActorRef<NamespaceRegistryMsg>, leader: watch::Receiver<crate::placement::raft::node::Leadership>) -> Self {
        Self { inner: Arc::new(Inner { id, lease_ms, registry, leader, next_stream: AtomicU64::new(0) }) }
    }
}

/// The request header with which a rapr sidecar asks for leases (beyond daprd): its reports
/// that carry a `version` are then heartbeats, each answered with a `lease` order of the same
/// version once the lease is renewed.
pub const LEASE_REQUEST_HEADER: &str = "rapr-lease";
/// The response header that tells the lease period in milliseconds.
pub const LEASE_PERIOD_HEADER: &str = "rapr-lease-period-ms";
/// The operation of the order that acknowledges a heartbeat.
pub const LEASE_OPERATION: &str = "lease";

/// Whether `host` is a lease heartbeat of a stream that asked for leases.
fn is_heartbeat(leases: bool, host: &Host) -> Option<u64> {
    (leases && host.operation == HostOperation::Report as i32).then_some(host.version).flatten()
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
        if !self.inner.leader.borrow().serving() {
            return Err(Status::failed_precondition(format!("node id={} is not a leader. Only the leader can serve requests", self.inner.id)));
        }
        let leases = self.inner.lease_ms > 0 && request.metadata().contains_key(LEASE_REQUEST_HEADER);
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
        // The reader holds no sender: the stream ends as soon as the disseminator drops its own
        // (a timeout, or shutdown). It learns that the response side is gone from this token,
        // cancelled when tonic drops the response stream.
        let weak = orders.downgrade();
        let gone = tokio_util::sync::CancellationToken::new();
        let guard = gone.clone().drop_guard();
        tracing::debug!(stream, host = %first.name, app_id = %first.id, namespace = %first.namespace, "placement stream connected");
        disseminator
            .send_message(DisseminatorMsg::Connect { stream, host: first, orders })
            .map_err(|_| Status::unavailable("placement server is shutting down"))?;
        tokio::spawn(read_stream(stream, leases, inbound, disseminator, weak, gone));
        let out = tokio_stream::StreamExt::map(tokio_stream::wrappers::UnboundedReceiverStream::new(rx), move |item| {
            let _held = &guard;
            item
        });
        let mut response: Response<Orders> = Response::new(Box::pin(out));
        if leases {
            if let Ok(v) = self.inner.lease_ms.to_string().parse() {
                response.metadata_mut().insert(LEASE_PERIOD_HEADER, v);
            }
        }
        Ok(response)
    }
}

/// Hands a stream's messages to its disseminator until either side ends it.
async fn read_stream(
    stream: u64,
    leases: bool,
    mut inbound: Streaming<Host>,
    disseminator: ActorRef<DisseminatorMsg>,
    orders: tokio::sync::mpsc::WeakUnboundedSender<Result<PlacementOrder, Status>>,
    gone: tokio_util::sync::CancellationToken,
) {
    loop {
        let next = tokio::select! {
            m = inbound.message() => m,
            // The response side is gone (the sidecar left, or placement closed the stream).
            () = gone.cancelled() => break,
        };
        match next {
            Ok(Some(host)) => {
                if let Err(status) = check_message(&host) {
                    tracing::warn!(stream, error = %status.message(), "placement refused a sidecar's message");
                    if let Some(tx) = orders.upgrade() {
                        let _ = tx.send(Err(status));
                    }
                    break;
                }
                let msg = match is_heartbeat(leases, &host) {
                    Some(seq) => DisseminatorMsg::Heartbeat { stream, seq },
                    None => DisseminatorMsg::Receive { stream, host },
                };
                if disseminator.send_message(msg).is_err() {
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
