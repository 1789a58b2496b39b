//! The simulated sidecars of `rapr bench placement`: each speaks daprd v1.18's side of
//! `ReportDaprStatus` (report the host, acknowledge lock / update / unlock) and, like daprd, goes
//! through the placement addresses until one accepts (followers refuse), pausing only after a
//! full turn. Each publishes what it last saw (`Seen`), so the bench can time when every one of
//! them holds a given table. They run on the generator's runtime, away from the measured nodes.

use std::time::{Duration, Instant};

use rapr_proto::placement::v1::placement_client::PlacementClient;
use rapr_proto::placement::v1::{Host, HostOperation};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The last finished round a simulated sidecar saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// Connections accepted so far (a fail-over makes a new one).
    pub connection: u64,
    /// Hosts of the bench's actor type in the tables.
    pub hosts: usize,
    /// When the round's unlock arrived.
    pub at: Option<Instant>,
}

/// One simulated sidecar; it stops (closing its stream) when dropped.
pub struct SimSidecar {
    pub seen: watch::Receiver<Seen>,
    stop: CancellationToken,
}

impl Drop for SimSidecar {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A report as daprd v1.18 sends it, for host `name` of `actor_type` (none: an observer).
pub fn report(name: &str, actor_type: Option<&str>) -> Host {
    Host {
        name: name.into(),
        id: format!("bench-{}", name.replace([':', '.'], "-")),
        namespace: "default".into(),
        entities: actor_type.map(|t| vec![t.to_string()]).unwrap_or_default(),
        api_level: 20,
        operation: HostOperation::Report as i32,
        ..Default::default()
    }
}

impl SimSidecar {
    /// Starts a sidecar that reports `host` to whichever of `addresses` leads, counting the
    /// hosts of `actor_type` in the tables it gets.
    pub fn start(addresses: Vec<String>, host: Host, actor_type: &str) -> Self {
        let (tx, seen) = watch::channel(Seen::default());
        let stop = CancellationToken::new();
        let s = stop.clone();
        let actor_type = actor_type.to_string();
        tokio::spawn(async move {
            tokio::select! {
                () = s.cancelled() => {}
                () = keep_stream(addresses, host, actor_type, tx) => {}
            }
        });
        SimSidecar { seen, stop }
    }
}

async fn keep_stream(addresses: Vec<String>, host: Host, actor_type: String, seen: watch::Sender<Seen>) {
    let mut i = 0usize;
    loop {
        let address = &addresses[i % addresses.len()];
        i += 1;
        if let Err(()) = one_stream(address, &host, &actor_type, &seen).await {
            if i.is_multiple_of(addresses.len()) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One stream until it ends; `Err` when it was refused or could not be opened.
async fn one_stream(address: &str, host: &Host, actor_type: &str, seen: &watch::Sender<Seen>) -> Result<(), ()> {
    let connect = PlacementClient::connect(format!("http://{address}"));
    let mut client = tokio::time::timeout(Duration::from_secs(1), connect).await.map_err(|_| ())?.map_err(|_| ())?;
    let (out, rx) = mpsc::unbounded_channel::<Host>();
    let _ = out.send(host.clone());
    let mut orders = client.report_dapr_status(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)).await.map_err(|_| ())?.into_inner();
    seen.send_modify(|s| s.connection += 1);
    let mut pending = None;
    while let Ok(Some(order)) = orders.message().await {
        let op = match order.operation.as_str() {
            "lock" => HostOperation::Lock,
            "update" => {
                pending = order.tables;
                HostOperation::Update
            }
            "unlock" => {
                if let Some(t) = pending.take() {
                    let hosts = t.entries.get(actor_type).map_or(0, |e| e.load_map.len());
                    seen.send_modify(|s| {
                        s.hosts = hosts;
                        s.at = Some(Instant::now());
                    });
                }
                HostOperation::Unlock
            }
            _ => continue,
        };
        let ack = Host { operation: op as i32, version: Some(order.version), id: host.id.clone(), namespace: host.namespace.clone(), ..Default::default() };
        if out.send(ack).is_err() {
            break;
        }
    }
    Ok(())
}
