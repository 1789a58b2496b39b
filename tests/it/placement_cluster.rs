//! A 3-node placement cluster (one process per node) with real sidecars: followers refuse as
//! daprd's, killing the leader moves the service to another node whose tables reach every
//! sidecar again (the time printed), and a killed node restarts from its data directory and
//! rejoins. These run alone (.config/nextest.toml).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::placement::{actor_app, report, FakeSidecar, PlacementCluster, ACTOR_STORE_YAML};
use crate::harness::{eventually, SidecarBuilder};

/// The hosts in the leader's tables, by app id.
async fn hosts_on(node: &crate::harness::placement::PlacementNode) -> Vec<String> {
    let s: Value = node.state().await;
    let mut ids: Vec<String> = s["tables"]["default"]["hosts"].as_array().map(|a| a.iter().filter_map(|h| h["id"].as_str().map(String::from)).collect()).unwrap_or_default();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_s_death_moves_placement_to_another_node() {
    let mut cluster = PlacementCluster::start(3).await;
    let leader = cluster.leader(Duration::from_secs(20)).await;

    // Followers refuse with daprd's FailedPrecondition.
    for (i, n) in cluster.nodes.iter().enumerate() {
        let n = n.as_ref().unwrap();
        if i != leader {
            let err = FakeSidecar::connect(&n.address(), report("127.0.0.1:1", "x", &["T"])).await.err().expect("a follower refuses");
            assert_eq!(err.code(), tonic::Code::FailedPrecondition);
            assert!(err.message().contains("is not a leader"), "{err:?}");
        }
    }

    let app = actor_app(&["Cat"]).await;
    let addresses = cluster.addresses();
    let mut sidecars = Vec::new();
    for id in ["cl-a", "cl-b"] {
        let sc = SidecarBuilder::new(id)
            .file("actorstore.yaml", ACTOR_STORE_YAML)
            .args(&["--placement-host-address", &addresses, "--app-port", &app.to_string()])
            .start()
            .await;
        sidecars.push(sc);
    }
    {
        let n = cluster.nodes[leader].as_ref().unwrap();
        eventually(Duration::from_secs(10), "both sidecars in the leader's tables", || async { (hosts_on(n).await == ["cl-a", "cl-b"]).then_some(()) }).await;
    }

    let killed = Instant::now();
    let dir = cluster.kill(leader);
    let next = cluster.leader(Duration::from_secs(15)).await;
    assert_ne!(next, leader);
    let n = cluster.nodes[next].as_ref().unwrap();
    eventually(Duration::from_secs(15), "both sidecars in the new leader's tables", || async { (hosts_on(n).await == ["cl-a", "cl-b"]).then_some(()) }).await;
    let failover = killed.elapsed();
    println!("placement fail-over: leader killed -> new leader's tables hold every sidecar in {failover:?}");
    for sc in &sidecars {
        eventually(Duration::from_secs(10), "the sidecar connected again", || async {
            let m: Value = reqwest::get(sc.url("/v1.0/metadata")).await.ok()?.json().await.ok()?;
            (m["actorRuntime"]["placement"] == "placement: connected").then_some(())
        })
        .await;
    }

    // The killed node comes back from its data directory and follows.
    cluster.restart(leader, dir).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!cluster.nodes[leader].as_ref().unwrap().leads().await, "the restarted node rejoins as a follower");
    assert_eq!(cluster.leader(Duration::from_secs(5)).await, next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_and_leases_survive_a_restart_of_the_control_plane() {
    use crate::harness::placement::{hosts_of, PlacementNode};
    let [grpc, healthz, metrics] = rapr::net_ports::free_ports().unwrap();
    let node = PlacementNode::spawn(grpc, healthz, metrics, tempfile::tempdir().unwrap(), &["--lease-period", "3s"]);
    node.wait_ready(true).await;
    let mut a = FakeSidecar::connect(&node.address(), report("127.0.0.1:6001", "a", &["Cat"])).await.unwrap();
    let _b = FakeSidecar::connect(&node.address(), report("127.0.0.1:6002", "b", &["Cat"])).await.unwrap();
    a.wait_tables(Duration::from_secs(10), "both", |t| hosts_of(t, "Cat").len() == 2).await;
    // Once both hosts are committed (the write-behind logs each), the whole control plane goes.
    eventually(Duration::from_secs(5), "both hosts replicated", || async { (node.logs().matches("membership change replicated").count() >= 2).then_some(()) }).await;
    let dir = node.kill();
    let restarted = Instant::now();
    let node = PlacementNode::spawn(grpc, healthz, metrics, dir, &["--lease-period", "3s"]);
    node.wait_ready(true).await;
    // A sidecar that only looks (no actor types) sees the hosts placed before the restart: their
    // leases started afresh, so their actors have not moved.
    let mut c = FakeSidecar::connect(&node.address(), report("127.0.0.1:6003", "c", &[])).await.unwrap();
    let (_, t) = c.wait_tables(Duration::from_secs(10), "any tables", |_| true).await;
    assert_eq!(hosts_of(&t, "Cat"), ["127.0.0.1:6001", "127.0.0.1:6002"], "kept across the restart: {t:?}");
    // They never came back: their leases end and they leave the tables, not before.
    let mut d = FakeSidecar::connect(&node.address(), report("127.0.0.1:6004", "d", &["Cat"])).await.unwrap();
    d.wait_tables(Duration::from_secs(15), "only d left", |t| hosts_of(t, "Cat") == ["127.0.0.1:6004"]).await;
    assert!(restarted.elapsed() >= Duration::from_secs(3), "the kept hosts left after {:?}, before their 3 s lease", restarted.elapsed());
}
