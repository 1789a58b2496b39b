//! The connection loop of a sidecar's placement stream (daprd's connector): dial the addresses
//! in turn, open `ReportDaprStatus` (asking for leases), hand the stream's sender and every order
//! to the `PlacementClient` process, and after a refusal or a lost stream try the next address,
//! waiting daprd's jittered 250-750 ms only after a full turn of the list (daprd waits after
//! each). A follower's FailedPrecondition ("is not a leader") is one such refusal: the loop moves
//! on and finds the leader.

use std::time::Duration;

use rand::Rng;
use ractor::ActorRef;
use rapr_proto::placement::v1::placement_client::PlacementClient as GrpcClient;
use rapr_proto::placement::v1::Host;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::process::PlacementClientMsg;
use crate::placement::server::grpc::{LEASE_PERIOD_HEADER, LEASE_REQUEST_HEADER};

/// How long a dial may take before the next address is tried.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

fn backoff() -> Duration {
    Duration::from_millis(rand::rng().random_range(250..750))
}

/// Runs until `stop`: one stream at a time, numbered from 1.
pub async fn connect_loop(addresses: Vec<String>, process: ActorRef<PlacementClientMsg>, stop: CancellationToken) {
    let mut next = 0usize;
    let mut conn = 0u64;
    while !stop.is_cancelled() {
        let address = &addresses[next % addresses.len()];
        next = next.wrapping_add(1);
        conn += 1;
        let outcome = tokio::select! {
            r = one_stream(address, conn, &process) => r,
            () = stop.cancelled() => return,
        };
        match outcome {
            Ok(()) => tracing::info!(%address, "placement stream ended; reconnecting"),
            Err(e) if e.contains("is not a leader") => tracing::debug!(%address, error = %e, "placement node is not the leader; trying the next"),
            Err(e) => tracing::warn!(%address, error = %e, "placement stream failed; reconnecting"),
        }
        if process.send_message(PlacementClientMsg::Disconnected { conn }).is_err() {
            return;
        }
        // daprd pauses after every failure; rapr tries the rest of the list first and pauses
        // only after a full turn, so finding a new leader among three nodes costs no pauses on
        // the dead one or a follower.
        if !next.is_multiple_of(addresses.len()) {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff()) => {}
            () = stop.cancelled() => return,
        }
    }
}

async fn one_stream(address: &str, conn: u64, process: &ActorRef<PlacementClientMsg>) -> Result<(), String> {
    let channel = crate::placement::conn::dial(address, DIAL_TIMEOUT).await?;
    let mut client = GrpcClient::new(channel);
    let (tx, rx) = mpsc::unbounded_channel::<Host>();
    // The first message must be on the stream before placement answers the call: the process
    // sends the report as soon as it gets the sender, and the call waits for that first message.
    process.send_message(PlacementClientMsg::Connecting { conn, sender: tx }).map_err(|e| e.to_string())?;
    let mut request = tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
    request.metadata_mut().insert(LEASE_REQUEST_HEADER, tonic::metadata::MetadataValue::from_static("1"));
    let response = client.report_dapr_status(request).await.map_err(|s| s.message().to_string())?;
    let lease_ms = response.metadata().get(LEASE_PERIOD_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()).filter(|p| *p > 0);
    process.send_message(PlacementClientMsg::Connected { conn, lease_ms }).map_err(|e| e.to_string())?;
    let mut orders = response.into_inner();
    loop {
        match orders.message().await {
            Ok(Some(order)) => process.send_message(PlacementClientMsg::Order { conn, order }).map_err(|e| e.to_string())?,
            Ok(None) => return Ok(()),
            Err(s) => return Err(format!("{:?}: {}", s.code(), s.message())),
        }
    }
}
