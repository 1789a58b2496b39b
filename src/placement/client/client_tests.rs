//! The client against a real in-process placement server (and a follower that refuses).

use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::placement::server::{serve, PlacementArgs};

#[derive(Parser)]
struct W {
    #[command(flatten)]
    a: PlacementArgs,
}

/// A placement server on free ports; cancel the token to stop it. Its gRPC address.
async fn server(extra: &[&str]) -> (String, CancellationToken, tokio::task::JoinHandle<Result<(), String>>) {
    let [grpc, healthz] = crate::net_ports::free_ports().unwrap();
    let (g, h) = (grpc.to_string(), healthz.to_string());
    let mut argv = vec!["rapr", "--port", &g, "--healthz-port", &h, "--enable-metrics=false", "--listen-address", "127.0.0.1"];
    argv.extend_from_slice(extra);
    let args = W::parse_from(argv).a;
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve(args, stop.clone(), false));
    let addr = format!("127.0.0.1:{grpc}");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (addr, stop, task)
}

async fn wait(h: &PlacementHandle, what: &str, f: impl Fn(&PlacementStatus) -> bool) -> PlacementStatus {
    let mut w = h.watch();
    let r = tokio::time::timeout(Duration::from_secs(10), w.wait_for(|s| f(s))).await.map(|r| r.map(|s| s.clone()));
    match r {
        Ok(Ok(s)) => s,
        _ => panic!("timed out waiting for {what}; status {:?}", h.status()),
    }
}

async fn client(addresses: Vec<String>, name: &str, types: &[&str]) -> PlacementHandle {
    let h = PlacementHandle::start(addresses, name.into(), format!("app-{name}"), "default".into(), None).await.unwrap();
    h.set_types(types.iter().map(|t| t.to_string()).collect());
    h
}

#[tokio::test]
async fn two_hosts_agree_on_every_lookup() {
    let (addr, stop, _t) = server(&[]).await;
    let a = client(vec![addr.clone()], "127.0.0.1:7001", &["Cat"]).await;
    let b = client(vec![addr.clone()], "127.0.0.1:7002", &["Cat"]).await;
    let two = |h: &PlacementHandle| h.view().types().count() == 1 && h.lookup("Cat", "x").is_ok() && {
        let v = h.view();
        (0..50).map(|i| v.lookup("Cat", &i.to_string()).unwrap().address).collect::<std::collections::BTreeSet<_>>().len() == 2
    };
    for h in [&a, &b] {
        wait(h, "ready", |s| s.ready && s.connected).await;
        for _ in 0..200 {
            if two(h) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(two(h), "both hosts on the ring: {:?}", h.view());
    }
    for i in 0..100 {
        let id = format!("actor-{i}");
        assert_eq!(a.lookup("Cat", &id), b.lookup("Cat", &id));
    }
    let err = a.lookup("Dog", "1").unwrap_err();
    assert_eq!(err.to_string(), "did not find address for actor 'Dog||1'");
    let s = a.status();
    assert!(!s.fenced && s.lease_until.is_some(), "{s:?}");
    stop.cancel();
}

#[tokio::test]
async fn losing_placement_fences_only_when_the_lease_runs_out() {
    let (addr, stop, task) = server(&["--lease-period", "1500ms"]).await;
    let a = client(vec![addr], "127.0.0.1:7001", &["Cat"]).await;
    let s = wait(&a, "a lease", |s| s.ready && s.lease_until.is_some()).await;
    assert!(!s.fenced);
    stop.cancel();
    let _ = task.await;
    let lost = std::time::Instant::now();
    wait(&a, "the stream lost", |s| !s.connected).await;
    assert!(!a.status().fenced, "the lease still holds right after the loss");
    wait(&a, "fenced", |s| s.fenced).await;
    let after = lost.elapsed();
    // The lease was last renewed at most a third of the period before the loss.
    assert!(after >= Duration::from_millis(200), "fenced {after:?} after the loss: too early for a lease renewed at most a third of a period before it");
}

#[tokio::test]
async fn without_leases_a_lost_stream_fences_at_once_as_daprd() {
    let (addr, stop, task) = server(&["--lease-period", "0s"]).await;
    let a = client(vec![addr], "127.0.0.1:7001", &["Cat"]).await;
    let s = wait(&a, "ready", |s| s.ready).await;
    assert!(!s.fenced && s.lease_until.is_none(), "{s:?}");
    stop.cancel();
    let _ = task.await;
    let s = wait(&a, "the stream lost", |s| !s.connected).await;
    assert!(s.fenced);
}

/// A placement node that is not the leader.
struct Follower;

#[tonic::async_trait]
impl rapr_proto::placement::v1::placement_server::Placement for Follower {
    type ReportDaprStatusStream = futures::stream::Empty<Result<rapr_proto::placement::v1::PlacementOrder, tonic::Status>>;
    async fn report_dapr_status(
        &self,
        _r: tonic::Request<tonic::Streaming<rapr_proto::placement::v1::Host>>,
    ) -> Result<tonic::Response<Self::ReportDaprStatusStream>, tonic::Status> {
        Err(tonic::Status::failed_precondition("node id=f is not a leader. Only the leader can serve requests"))
    }
}

#[tokio::test]
async fn the_client_moves_past_a_follower_to_the_leader() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let follower = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(rapr_proto::placement::v1::placement_server::PlacementServer::new(Follower))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let (leader, stop, _t) = server(&[]).await;
    let a = client(vec![follower, leader], "127.0.0.1:7001", &["Cat"]).await;
    wait(&a, "ready through the leader", |s| s.ready).await;
    assert_eq!(a.lookup("Cat", "1").unwrap().address, "127.0.0.1:7001");
    stop.cancel();
}
