//! `rapr placement`: the placement service daprd's sidecars connect to (issue 14 B.4).
//!
//! One node or a raft cluster of several (`--initial-cluster`): a node serves sidecars only while
//! it leads (`raft/node.rs`); the others refuse as daprd's followers do, and a node that stops
//! leading closes every stream. The processes: a `NamespaceRegistry` with one `Disseminator` per namespace under it; each sidecar
//! stream has a reader task (`grpc.rs`) feeding its namespace's disseminator. The gRPC server pings
//! quiet connections as daprd's does (`--keepalive-time` / `--keepalive-timeout`), so a dead
//! sidecar's stream closes within about five seconds; its host then stays in the tables until its
//! lease ends (`--lease-period`, beyond daprd).

pub mod flags;
pub mod grpc;
pub mod http;
pub mod namespace;
pub mod registry;
pub mod replicate;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ractor::Actor;
use rapr_proto::placement::v1::placement_server::PlacementServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use flags::PlacementArgs;
use namespace::DisseminatorArgs;

/// How long open connections may take to close at shutdown.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(3);

fn listen_addr(host: &str, port: u16) -> String {
    if host.is_empty() {
        format!("0.0.0.0:{port}")
    } else if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn bind(what: &str, addr: &str) -> Result<TcpListener, String> {
    crate::placement::conn::listen(what, addr).await
}

/// How often leases are renewed and checked: a fifth of the period, between 100 ms and 1 s.
fn lease_tick(period: Duration) -> Duration {
    (period / 5).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// Runs a placement node until SIGTERM / SIGINT; the process exit code.
pub async fn run_placement(args: PlacementArgs) -> i32 {
    match serve(args, CancellationToken::new(), true).await {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("rapr placement: {e}");
            1
        }
    }
}

/// Serves until `stop` is cancelled (or a signal, when `signals`).
pub async fn serve(args: PlacementArgs, stop: CancellationToken, signals: bool) -> Result<(), String> {
    let peers = args.validate()?;
    if let Some(dir) = &args.raft_logstore_path {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))?;
    }
    let grpc_listener = bind("placement gRPC", &listen_addr(&args.listen_address, args.port)).await?;
    let healthz_listener = bind("healthz", &listen_addr(&args.healthz_listen_address, args.healthz_port)).await?;
    let metrics_listener =
        if args.enable_metrics { Some(bind("metrics", &listen_addr(&args.listen_address, args.metrics_port)).await?) } else { None };

    let node = crate::placement::raft::node::RaftNode::start(crate::placement::raft::node::RaftNodeArgs {
        id: args.id.clone(),
        peers,
        data_dir: args.raft_logstore_path.clone(),
        cookie: args.cluster_cookie.clone(),
    })
    .await
    .map_err(|e| e.to_string())?;
    let dargs = DisseminatorArgs {
        replication_factor: args.replication_factor,
        disseminate_timeout: args.disseminate_timeout,
        lease_period: args.lease_period,
        tick: lease_tick(args.lease_period),
        epoch: Instant::now(),
        replicate: (!args.lease_period.is_zero()).then(|| replicate::Replicator::start(node.raft.clone())),
    };
    let (registry, registry_task) =
        Actor::spawn(None, registry::NamespaceRegistry, dargs).await.map_err(|e| format!("cannot start placement: {e}"))?;
    // The leadership the servers go by is raft's, passed on only after what a change requires is
    // under way: on gaining the lead, the seed is in the registry's mailbox before any sidecar is
    // admitted (so none sees tables without the hosts the last leader placed); losing it ends
    // every stream, and sidecars go and find the new leader.
    let mut lead = node.leader.clone();
    let (leader_tx, leader) = tokio::sync::watch::channel(crate::placement::raft::node::Leadership::default());
    let reg = registry.clone();
    let membership = node.membership.clone();
    let seed = !args.lease_period.is_zero();
    tokio::spawn(async move {
        let mut was = false;
        loop {
            let now = *lead.borrow_and_update();
            if was && !now.serving() {
                tracing::warn!("this placement node stopped leading; closing every sidecar stream");
                let _ = reg.send_message(registry::NamespaceRegistryMsg::Reset);
            }
            if !was && now.serving() && seed {
                // The hosts the last leader placed keep their place until they reconnect here
                // or their lease ends.
                let _ = reg.send_message(registry::NamespaceRegistryMsg::Seed(membership.borrow().clone()));
            }
            was = now.serving();
            leader_tx.send_replace(now);
            if lead.changed().await.is_err() {
                return;
            }
        }
    });
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    let state = http::HttpState { registry: registry.clone(), ready, leader: leader.clone() };

    let mut tasks = tokio::task::JoinSet::new();
    let healthz = http::healthz_router(state.clone(), args.metadata_enabled);
    let s = stop.clone();
    tasks.spawn(async move { axum::serve(healthz_listener, healthz).with_graceful_shutdown(s.cancelled_owned()).await.map_err(|e| e.to_string()) });
    if let Some(l) = metrics_listener {
        let router = http::metrics_router(state);
        let s = stop.clone();
        tasks.spawn(async move { axum::serve(l, router).with_graceful_shutdown(s.cancelled_owned()).await.map_err(|e| e.to_string()) });
    }
    let grpc_addr: Option<SocketAddr> = grpc_listener.local_addr().ok();
    let svc = PlacementServer::new(grpc::PlacementGrpc::new(args.id.clone(), u64::try_from(args.lease_period.as_millis()).unwrap_or(u64::MAX), registry.clone(), leader));
    let s = stop.clone();
    tasks.spawn(async move {
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(args.keepalive_time))
            .http2_keepalive_timeout(Some(args.keepalive_timeout))
            .add_service(svc)
            .serve_with_incoming_shutdown(crate::placement::conn::incoming(grpc_listener), s.cancelled_owned())
            .await
            .map_err(|e| e.to_string())
    });
    let _ = ready_tx.send(true);
    tracing::info!(id = %args.id, address = ?grpc_addr, healthz_port = args.healthz_port, lease_period = ?args.lease_period, "placement service started");

    let signal_stop = stop.clone();
    let waiter = async move {
        if signals {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
                () = signal_stop.cancelled() => {}
            }
        } else {
            signal_stop.cancelled().await;
        }
    };
    let mut failure = None;
    tokio::select! {
        () = waiter => {}
        Some(done) = tasks.join_next() => {
            failure = Some(match done { Ok(Ok(())) => "a placement server stopped".to_string(), Ok(Err(e)) => e, Err(e) => e.to_string() });
        }
    }
    tracing::info!("placement service stopping");
    stop.cancel();
    // The streams never end by themselves: stopping the disseminators drops their order senders,
    // which ends every stream, so the servers' graceful drain can finish.
    registry.stop_children(None);
    registry.stop(None);
    let _ = registry_task.await;
    node.shutdown().await;
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_DRAIN, drain).await.is_err() {
        tasks.abort_all();
    }
    failure.map_or(Ok(()), Err)
}
