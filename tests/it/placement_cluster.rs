//! A 3-node placement cluster (one process per node) with real sidecars: followers refuse as
//! daprd's; killing the leader moves the service to another node whose tables reach every
//! sidecar again (the time printed) while no sidecar's lease lapses; a killed or frozen sidecar
//! keeps its place until its lease ends; a killed node restarts from its data directory and
//! rejoins, and the whole cluster restarts with its membership. These run alone
//! (.config/nextest.toml).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::placement::{actor_app, report, FakeSidecar, PlacementCluster, ACTOR_STORE_YAML};
use crate::harness::{eventually, Sidecar, SidecarBuilder};

/// The hosts in the leader's tables, by app id.
async fn hosts_on(node: &crate::harness::placement::PlacementNode) -> Vec<String> {
    let s: Value = node.state().await;
    let mut ids: Vec<String> = s["tables"]["default"]["hosts"].as_array().map(|a| a.iter().filter_map(|h| h["id"].as_str().map(String::from)).collect()).unwrap_or_default();
    ids.sort();
    ids
}

/// A real sidecar whose app hosts `Cat`, with its metrics port (the lease metrics).
struct Host {
    sc: Sidecar,
    metrics: u16,
}

async fn host(id: &str, addresses: &str, app: u16) -> Host {
    let metrics = crate::harness::free_port();
    let sc = SidecarBuilder::new(id)
        .file("actorstore.yaml", ACTOR_STORE_YAML)
        .args(&["--placement-host-address", addresses, "--app-port", &app.to_string(), "--metrics-port", &metrics.to_string()])
        .start()
        .await;
    Host { sc, metrics }
}

impl Host {
    /// `rapr_placement_*` samples by name (None when the sidecar does not answer).
    async fn lease(&self) -> Option<(i64, i64, i64)> {
        let text = reqwest::Client::new().get(format!("http://127.0.0.1:{}/metrics", self.metrics)).timeout(Duration::from_secs(1)).send().await.ok()?.text().await.ok()?;
        let sample = |name: &str| text.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse::<i64>().ok());
        Some((sample("rapr_placement_lease_fenced{")?, sample("rapr_placement_fences_total{").unwrap_or(0), sample("rapr_placement_table_version{")?))
    }

    fn signal(&self, signal: &str) {
        assert!(std::process::Command::new("kill").args([&format!("-{signal}"), &self.sc.pid().to_string()]).status().unwrap().success());
    }
}

/// Every host unfenced at one table version: that version.
async fn same_version(hosts: &[Host]) -> Option<i64> {
    let mut versions = Vec::new();
    for h in hosts {
        let (fenced, _, version) = h.lease().await?;
        if fenced != 0 {
            return None;
        }
        versions.push(version);
    }
    versions.dedup();
    (versions.len() == 1 && versions[0] > 0).then(|| versions[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_sidecars_ride_through_the_leader_s_death_without_losing_a_lease() {
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
    let ids = ["cl-a", "cl-b", "cl-c", "cl-d", "cl-e"];
    let mut hosts = Vec::new();
    for id in ids {
        hosts.push(host(id, &addresses, app).await);
    }
    {
        let n = cluster.nodes[leader].as_ref().unwrap();
        eventually(Duration::from_secs(10), "all five sidecars in the leader's tables", || async { (hosts_on(n).await == ids).then_some(()) }).await;
    }
    let before = eventually(Duration::from_secs(10), "all five at one table version", || same_version(&hosts)).await;

    // Every sidecar's lease metrics, sampled through the fail-over: none may fence.
    let hosts = std::sync::Arc::new(hosts);
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn({
        let hosts = hosts.clone();
        async move {
            let mut samples = 0;
            while !*stopped.borrow() {
                for (i, h) in hosts.iter().enumerate() {
                    if let Some((fenced, fences, _)) = h.lease().await {
                        assert_eq!((fenced, fences), (0, 0), "sidecar {i} fenced itself during the leader change");
                        samples += 1;
                    }
                }
                let _ = tokio::time::timeout(Duration::from_millis(20), stopped.changed()).await;
            }
            samples
        }
    });

    let killed = Instant::now();
    let dir = cluster.kill(leader);
    let next = cluster.leader(Duration::from_secs(15)).await;
    assert_ne!(next, leader);
    let n = cluster.nodes[next].as_ref().unwrap();
    eventually(Duration::from_secs(15), "all five in the new leader's tables", || async { (hosts_on(n).await == ids).then_some(()) }).await;
    let failover = killed.elapsed();
    println!("placement fail-over: leader killed -> new leader's tables hold every sidecar in {failover:?}");
    // Every stream went to the killed leader (followers refuse): each sidecar reconnected, and
    // all of them reach one table version from the new leader.
    for h in hosts.iter() {
        eventually(Duration::from_secs(10), "the sidecar connected again", || async {
            let m: Value = reqwest::get(h.sc.url("/v1.0/metadata")).await.ok()?.json().await.ok()?;
            (m["actorRuntime"]["placement"] == "placement: connected").then_some(())
        })
        .await;
    }
    let after = eventually(Duration::from_secs(10), "all five at one table version again", || same_version(&hosts)).await;
    let state = n.state().await;
    assert_eq!(state["tables"]["default"]["version"].as_i64(), Some(after), "the sidecars read the new leader's tables: {state}");
    println!("placement fail-over: table version {before} -> {after}");
    stop.send(true).unwrap();
    let samples = sampler.await.expect("no sidecar fenced itself");
    assert!(samples >= 5 * 10, "the lease metrics were sampled through the fail-over ({samples} samples)");

    // The killed node comes back from its data directory and follows.
    cluster.restart(leader, dir).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!cluster.nodes[leader].as_ref().unwrap().leads().await, "the restarted node rejoins as a follower");
    assert_eq!(cluster.leader(Duration::from_secs(5)).await, next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_that_dies_or_stops_keeps_its_place_until_its_lease_ends() {
    const LEASE: Duration = Duration::from_secs(5); // placement's default --lease-period
    let cluster = PlacementCluster::start(3).await;
    let app = actor_app(&["Cat"]).await;
    let addresses = cluster.addresses();
    let mut hosts = Vec::new();
    for id in ["lv-a", "lv-b", "lv-c"] {
        hosts.push(host(id, &addresses, app).await);
    }
    let leader = cluster.leader(Duration::from_secs(5)).await;
    let n = cluster.nodes[leader].as_ref().unwrap();
    eventually(Duration::from_secs(10), "all three in the tables", || async { (hosts_on(n).await == ["lv-a", "lv-b", "lv-c"]).then_some(()) }).await;

    // Killed: its stream closes at once; it stays in the tables for its lease, then goes.
    let c = hosts.pop().unwrap();
    let b = hosts.pop().unwrap();
    let died = Instant::now();
    drop(b);
    eventually(Duration::from_secs(20), "the dead sidecar out of the tables", || async { (hosts_on(n).await == ["lv-a", "lv-c"]).then_some(()) }).await;
    let gone = died.elapsed();
    println!("placement: a killed sidecar left the tables {gone:?} after its death");
    assert!(gone >= LEASE, "a killed sidecar left after {gone:?}, before its {LEASE:?} lease ended");

    // Stopped (SIGSTOP): its stream stays open until placement's keepalive gives up on it, then
    // its lease runs; the sidecar, frozen, fenced itself before that (it finds out once woken).
    let stopped = Instant::now();
    c.signal("STOP");
    eventually(Duration::from_secs(30), "the stopped sidecar out of the tables", || async { (hosts_on(n).await == ["lv-a"]).then_some(()) }).await;
    let gone = stopped.elapsed();
    println!("placement: a stopped sidecar left the tables {gone:?} after SIGSTOP");
    assert!(gone >= LEASE, "a stopped sidecar left after {gone:?}, before its {LEASE:?} lease ended");
    c.signal("CONT");
    let (_, fences, _) = eventually(Duration::from_secs(10), "the woken sidecar counts its fence", || async { c.lease().await.filter(|(_, f, _)| *f >= 1) }).await;
    assert_eq!(fences, 1);
    eventually(Duration::from_secs(20), "the woken sidecar back in the tables, unfenced", || async {
        let back = hosts_on(n).await == ["lv-a", "lv-c"];
        (back && c.lease().await.is_some_and(|(fenced, _, _)| fenced == 0)).then_some(())
    })
    .await;
    assert_eq!(hosts[0].lease().await.map(|(f, n, _)| (f, n)), Some((0, 0)), "the sidecar that stayed never fenced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_survives_a_restart_of_the_whole_cluster() {
    use crate::harness::placement::hosts_of;
    let mut cluster = PlacementCluster::start(3).await;
    let leader = cluster.leader(Duration::from_secs(5)).await;
    let address = cluster.nodes[leader].as_ref().unwrap().address();
    let mut a = FakeSidecar::connect(&address, report("127.0.0.1:6001", "a", &["Cat"])).await.unwrap();
    let _b = FakeSidecar::connect(&address, report("127.0.0.1:6002", "b", &["Cat"])).await.unwrap();
    a.wait_tables(Duration::from_secs(10), "both", |t| hosts_of(t, "Cat").len() == 2).await;
    let leader_node = cluster.nodes[leader].as_ref().unwrap();
    eventually(Duration::from_secs(5), "both hosts committed", || async { (leader_node.logs().matches("membership change replicated").count() >= 2).then_some(()) }).await;
    let dirs: Vec<_> = (0..3).map(|i| cluster.kill(i)).collect();
    let restarted = Instant::now();
    for (i, dir) in dirs.into_iter().enumerate() {
        cluster.restart(i, dir).await;
    }
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let n = cluster.nodes[leader].as_ref().unwrap();
    let mut c = FakeSidecar::connect(&n.address(), report("127.0.0.1:6003", "c", &[])).await.unwrap();
    let (_, t) = c.wait_tables(Duration::from_secs(10), "any tables", |_| true).await;
    assert_eq!(hosts_of(&t, "Cat"), ["127.0.0.1:6001", "127.0.0.1:6002"], "kept across the restart of every node: {t:?}");
    // They never came back: their leases (started afresh) end, then they leave.
    let mut d = FakeSidecar::connect(&n.address(), report("127.0.0.1:6004", "d", &["Cat"])).await.unwrap();
    d.wait_tables(Duration::from_secs(20), "only d left", |t| hosts_of(t, "Cat") == ["127.0.0.1:6004"]).await;
    assert!(restarted.elapsed() >= Duration::from_secs(5), "the kept hosts left {:?} after the restart, before their 5 s lease", restarted.elapsed());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_member_list_never_disturbs_the_cluster() {
    use crate::harness::placement::{hosts_of, PlacementNode};
    let cluster = PlacementCluster::start(3).await;
    let leader = cluster.leader(Duration::from_secs(5)).await;
    let n = cluster.nodes[leader].as_ref().unwrap();
    let mut a = FakeSidecar::connect(&n.address(), report("127.0.0.1:7001", "a", &["Cat"])).await.unwrap();
    a.wait_tables(Duration::from_secs(10), "a in", |t| hosts_of(t, "Cat").len() == 1).await;

    // Same cookie, the cluster's nodes plus itself: it dials them, and stays outside.
    let [grpc, healthz, metrics, raft] = rapr::net_ports::free_ports().unwrap();
    let initial = format!("{},intruder=127.0.0.1:{raft}", cluster.initial_cluster());
    let intruder = PlacementNode::spawn(grpc, healthz, metrics, tempfile::tempdir().unwrap(), &["--id", "intruder", "--initial-cluster", &initial]);
    intruder.wait_ready(false).await;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert!(!intruder.leads().await, "a node outside the cluster leads");
        assert_eq!(cluster.leader(Duration::from_secs(2)).await, leader, "the cluster's leader changed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let err = FakeSidecar::connect(&intruder.address(), report("127.0.0.1:7003", "c", &["Cat"])).await.err().expect("the outsider refuses sidecars");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    // The leader's stream to `a` was never broken: a new host reaches it through the same round.
    let _b = FakeSidecar::connect(&n.address(), report("127.0.0.1:7002", "b", &["Cat"])).await.unwrap();
    a.wait_tables(Duration::from_secs(10), "b joined", |t| hosts_of(t, "Cat").len() == 2).await;
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_is_committed_before_any_sidecar_is_told_of_it() {
    use crate::harness::placement::hosts_of;
    // Every raft write of a membership change is held 1.5 s: were a round to go out before its
    // commit, killing the leader right after it would leave the next leader without the host.
    let mut cluster = PlacementCluster::start_with_env(3, &[("FAILPOINTS", "placement:replicate=return(1500)")]).await;
    let leader = cluster.leader(Duration::from_secs(5)).await;
    let address = cluster.nodes[leader].as_ref().unwrap().address();
    let mut a = FakeSidecar::connect(&address, report("127.0.0.1:8001", "a", &["Cat"])).await.unwrap();
    a.wait_tables(Duration::from_secs(10), "a placed", |t| hosts_of(t, "Cat") == ["127.0.0.1:8001"]).await;
    // Told of itself: the write is committed. The leader dies at once.
    let killed = cluster.kill(leader);
    let next = cluster.leader(Duration::from_secs(10)).await;
    let n = cluster.nodes[next].as_ref().unwrap();
    let mut c = FakeSidecar::connect(&n.address(), report("127.0.0.1:8003", "c", &[])).await.unwrap();
    let (_, t) = c.wait_tables(Duration::from_secs(10), "any tables", |_| true).await;
    assert_eq!(hosts_of(&t, "Cat"), ["127.0.0.1:8001"], "the new leader keeps the host every sidecar was told of: {t:?}");
    drop(killed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_wakes_up_as_a_follower_and_never_serves_stale_tables() {
    use crate::harness::placement::hosts_of;
    let cluster = PlacementCluster::start(3).await;
    let old = cluster.leader(Duration::from_secs(5)).await;
    let old_node = cluster.nodes[old].as_ref().unwrap();
    old_node.signal("STOP");
    // The other two elect among themselves (the frozen node answers nothing, so `leader` skips it).
    let next = cluster.leader(Duration::from_secs(10)).await;
    assert_ne!(next, old);
    let n = cluster.nodes[next].as_ref().unwrap();
    let mut a = FakeSidecar::connect(&n.address(), report("127.0.0.1:9001", "a", &["Cat"])).await.unwrap();
    a.wait_tables(Duration::from_secs(10), "a placed by the new leader", |t| hosts_of(t, "Cat").len() == 1).await;

    // Woken, the old leader has not heard from a quorum for seconds: it refuses at once, then
    // learns the newer term and follows.
    old_node.signal("CONT");
    let err = FakeSidecar::connect(&old_node.address(), report("127.0.0.1:9002", "b", &["Cat"])).await.err().expect("the woken node refuses sidecars");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert!(!old_node.leads().await, "the woken node leads beside the new leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cluster.leader(Duration::from_secs(5)).await, next, "the new leader keeps the lead");
}
