//! `rapr placement` against simulated daprd sidecars over the real gRPC stream: rounds, tables,
//! leases, daprd's checks on bad input, the metadata and metrics endpoints, and flag checks.

use std::time::{Duration, Instant};

use crate::harness::placement::{hosts_of, report, FakeSidecar, PlacementNode};
use rapr_proto::placement::v1::{Host, HostOperation};

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn sidecars_reach_the_same_tables_and_the_metadata_shows_them() {
    let node = PlacementNode::start(&[]).await;
    let mut a = FakeSidecar::connect(&node.address(), report("127.0.0.1:5001", "a", &["Cat", "Dog"])).await.unwrap();
    let mut b = FakeSidecar::connect(&node.address(), report("127.0.0.1:5002", "b", &["Cat"])).await.unwrap();
    let both = |t: &rapr_proto::placement::v1::PlacementTables| hosts_of(t, "Cat").len() == 2;
    let (va, ta) = a.wait_tables(T, "both hosts have Cat", both).await;
    let (vb, tb) = b.wait_tables(T, "both hosts have Cat", both).await;
    assert_eq!(va, vb, "one round");
    assert_eq!(ta, tb);
    assert_eq!(ta.replication_factor, 100);
    assert_eq!(ta.version, va.to_string());
    assert_eq!(hosts_of(&ta, "Dog"), ["127.0.0.1:5001"]);
    let entry = &ta.entries["Cat"].load_map["127.0.0.1:5002"];
    assert_eq!((entry.id.as_str(), entry.api_level, entry.operation), ("b", 20, HostOperation::Report as i32));

    // An actor-less sidecar (a client only) gets the current tables alone.
    let mut c = FakeSidecar::connect(&node.address(), report("127.0.0.1:5003", "c", &[])).await.unwrap();
    let (vc, tc) = c.wait_tables(T, "any", |_| true).await;
    assert_eq!((vc, &tc), (va, &ta));

    let state = node.state().await;
    let hosts = state["tables"]["default"]["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2, "{state}");
    assert_eq!(hosts[0]["name"], "127.0.0.1:5001");
    assert_eq!(hosts[0]["entities"], serde_json::json!(["Cat", "Dog"]));
    assert_eq!(state["tables"]["default"]["version"], va);
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", node.metrics)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("dapr_placement_runtimes_total{host_namespace=\"default\"} 3"), "{metrics}");
    assert!(metrics.contains("dapr_placement_actor_runtimes_total{host_namespace=\"default\"} 2"), "{metrics}");
    assert!(metrics.contains("dapr_placement_leader_status 1"));
}

#[tokio::test]
async fn a_leaving_host_keeps_its_place_until_its_lease_ends() {
    let node = PlacementNode::start(&["--lease-period", "1s"]).await;
    let mut a = FakeSidecar::connect(&node.address(), report("127.0.0.1:5001", "a", &["Cat"])).await.unwrap();
    let b = FakeSidecar::connect(&node.address(), report("127.0.0.1:5002", "b", &["Cat"])).await.unwrap();
    let (v, _) = a.wait_tables(T, "both hosts", |t| hosts_of(t, "Cat").len() == 2).await;
    let left = Instant::now();
    b.leave();
    let (v2, t2) = a.wait_tables(T, "b dropped out", |t| hosts_of(t, "Cat") == ["127.0.0.1:5001"]).await;
    let after = left.elapsed();
    assert!(v2 > v);
    assert!(after >= Duration::from_secs(1), "b left the tables {after:?} after its stream closed, before its 1 s lease ended: {t2:?}");
    assert_eq!(node.state().await["tables"]["default"]["hosts"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn without_leases_a_leaving_host_drops_out_at_once_as_in_daprd() {
    let node = PlacementNode::start(&["--lease-period", "0s"]).await;
    let mut a = FakeSidecar::connect(&node.address(), report("127.0.0.1:5001", "a", &["Cat"])).await.unwrap();
    let b = FakeSidecar::connect(&node.address(), report("127.0.0.1:5002", "b", &["Cat"])).await.unwrap();
    a.wait_tables(T, "both hosts", |t| hosts_of(t, "Cat").len() == 2).await;
    b.leave();
    a.wait_tables(T, "b dropped out", |t| hosts_of(t, "Cat") == ["127.0.0.1:5001"]).await;
}

#[tokio::test]
async fn a_reconnecting_host_replaces_its_kept_entry() {
    let node = PlacementNode::start(&["--lease-period", "30s"]).await;
    let mut a = FakeSidecar::connect(&node.address(), report("127.0.0.1:5001", "a", &["Cat"])).await.unwrap();
    let b = FakeSidecar::connect(&node.address(), report("127.0.0.1:5002", "b", &["Cat", "Dog"])).await.unwrap();
    a.wait_tables(T, "both hosts", |t| hosts_of(t, "Dog").len() == 1).await;
    b.leave();
    // Back with one type fewer, long before its lease would end: the old report goes at once.
    let _b = FakeSidecar::connect(&node.address(), report("127.0.0.1:5002", "b", &["Cat"])).await.unwrap();
    a.wait_tables(T, "b without Dog", |t| hosts_of(t, "Dog").is_empty() && hosts_of(t, "Cat").len() == 2).await;
}

#[tokio::test]
async fn a_host_whose_old_stream_closes_after_its_new_report_loses_the_old_types_at_once() {
    let node = PlacementNode::start(&["--lease-period", "30s"]).await;
    let mut a = FakeSidecar::connect(&node.address(), report("127.0.0.1:5001", "a", &["Cat"])).await.unwrap();
    let old = FakeSidecar::connect(&node.address(), report("127.0.0.1:5002", "b", &["Cat", "Dog"])).await.unwrap();
    a.wait_tables(T, "both hosts", |t| hosts_of(t, "Dog").len() == 1).await;
    // The reconnect reports first (the old stream is still open, so its Dog is still there) ...
    let mut new = FakeSidecar::connect(&node.address(), report("127.0.0.1:5002", "b", &["Cat"])).await.unwrap();
    new.wait_tables(T, "the new stream's round", |t| hosts_of(t, "Cat").len() == 2).await;
    // ... and the old stream's close comes after: it is replaced, not kept for its 30 s lease.
    old.leave();
    a.wait_tables(T, "b without Dog", |t| hosts_of(t, "Dog").is_empty() && hosts_of(t, "Cat").len() == 2).await;
    assert_eq!(node.state().await["tables"]["default"]["hosts"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn bad_reports_are_refused_with_daprds_codes_and_placement_keeps_serving() {
    let node = PlacementNode::start(&[]).await;
    let addr = node.address();
    let refused = |h: Host| {
        let addr = addr.clone();
        async move {
            match FakeSidecar::connect(&addr, h).await {
                Err(s) => s,
                Ok(mut f) => f.wait_end(T).await,
            }
        }
    };
    let s = refused(Host { id: String::new(), ..report("127.0.0.1:1", "", &["T"]) }).await;
    assert_eq!((s.code(), s.message()), (tonic::Code::InvalidArgument, "host ID and namespace must be provided"));
    let s = refused(Host { version: Some(1), operation: 0, ..report("127.0.0.1:1", "a", &[]) }).await;
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    let s = refused(report("127.0.0.1:1", "a", &["dapr.internal.default.other.workflow"])).await;
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    let s = refused(report("no-port", "a", &["T"])).await;
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert!(s.message().contains("host:port"), "{s:?}");

    // A good stream that later sends a bad message is ended; the others go on.
    let mut good = FakeSidecar::connect(&node.address(), report("127.0.0.1:5001", "a", &["T"])).await.unwrap();
    good.wait_tables(T, "itself", |t| hosts_of(t, "T").len() == 1).await;
    let mut bad = FakeSidecar::connect(&node.address(), report("127.0.0.1:5002", "b", &["T"])).await.unwrap();
    good.wait_tables(T, "two", |t| hosts_of(t, "T").len() == 2).await;
    bad.send(Host { namespace: String::new(), ..report("127.0.0.1:5002", "b", &["T"]) });
    assert_eq!(bad.wait_end(T).await.code(), tonic::Code::InvalidArgument);
    let mut third = FakeSidecar::connect(&node.address(), report("127.0.0.1:5003", "c", &["T"])).await.unwrap();
    third.wait_tables(T, "the third host in", |t| hosts_of(t, "T").contains(&"127.0.0.1:5003".to_string())).await;
}

#[tokio::test]
async fn namespaces_have_their_own_rounds_and_tables() {
    let node = PlacementNode::start(&[]).await;
    let mut a = FakeSidecar::connect(&node.address(), report("127.0.0.1:5001", "a", &["T"])).await.unwrap();
    let mut other = FakeSidecar::connect(&node.address(), Host { namespace: "other".into(), ..report("127.0.0.1:5002", "b", &["T"]) }).await.unwrap();
    let (_, t) = a.wait_tables(T, "a", |t| !hosts_of(t, "T").is_empty()).await;
    assert_eq!(hosts_of(&t, "T"), ["127.0.0.1:5001"]);
    let (_, t) = other.wait_tables(T, "b", |t| !hosts_of(t, "T").is_empty()).await;
    assert_eq!(hosts_of(&t, "T"), ["127.0.0.1:5002"]);
}

#[tokio::test]
async fn flags_daprd_refuses_are_refused() {
    for (args, says) in [
        (&["--keepalive-time", "20s"][..], "keepalive-time"),
        (&["--id", "nobody"][..], "not one of"),
        (&["--initial-cluster", "x"][..], "id=host:port"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rapr"))
            .arg("placement")
            .args(["--port", "0", "--healthz-port", "0", "--metrics-port", "0"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn rapr_control_plane_serves_placement_on_its_placement_port() {
    let [grpc, healthz, metrics] = rapr::net_ports::free_ports().unwrap();
    let dir = tempfile::tempdir().unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(std::process::Command::new(env!("CARGO_BIN_EXE_rapr"))
        .args(["control-plane", "--placement-port", &grpc.to_string(), "--healthz-port", &healthz.to_string(), "--metrics-port", &metrics.to_string()])
        .args(["--listen-address", "127.0.0.1", "--metadata-enabled", "--raft-logstore-path"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap());
    let addr = format!("127.0.0.1:{grpc}");
    let mut a = crate::harness::eventually(T, "placement on the control plane", || {
        let addr = addr.clone();
        async move { FakeSidecar::connect(&addr, report("127.0.0.1:5001", "a", &["Cat"])).await.ok() }
    })
    .await;
    a.wait_tables(T, "itself", |t| hosts_of(t, "Cat") == ["127.0.0.1:5001"]).await;
}

#[tokio::test]
async fn a_corrupt_data_dir_or_a_second_node_with_the_same_id_is_refused_clearly() {
    let run = |args: Vec<String>| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rapr"))
            .arg("placement")
            .args(["--healthz-port", "0", "--metrics-port", "0", "--listen-address", "127.0.0.1"])
            .args(args)
            .output()
            .unwrap()
    };
    // A data directory whose raft database is not a database.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("raft.db"), vec![0x5a; 4096]).unwrap();
    let out = run(vec!["--port".into(), "0".into(), "--raft-logstore-path".into(), dir.path().display().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot be opened"), "{stderr}");

    // Two nodes started with one id: the second cannot take the first's node-to-node address.
    let [raft_a, raft_b, grpc] = rapr::net_ports::free_ports().unwrap();
    let cluster = format!("a=127.0.0.1:{raft_a},b=127.0.0.1:{raft_b}");
    let first = PlacementNode::spawn(grpc, rapr::net_ports::free_port().unwrap(), rapr::net_ports::free_port().unwrap(), tempfile::tempdir().unwrap(), &["--id", "a", "--initial-cluster", &cluster]);
    first.wait_ready(false).await;
    let out = run(vec!["--port".into(), rapr::net_ports::free_port().unwrap().to_string(), "--id".into(), "a".into(), "--initial-cluster".into(), cluster.clone()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen for the other control-plane nodes"), "{stderr}");
    // The first node is still there.
    reqwest::get(first.url("/healthz")).await.unwrap().error_for_status().unwrap();
}

#[tokio::test]
async fn an_old_api_level_is_accepted_as_daprd_v1_18_does() {
    let node = PlacementNode::start(&[]).await;
    let mut a = FakeSidecar::connect(&node.address(), Host { api_level: 10, ..report("127.0.0.1:5001", "a", &["T"]) }).await.unwrap();
    let (_, t) = a.wait_tables(T, "itself", |t| hosts_of(t, "T").len() == 1).await;
    assert_eq!(t.entries["T"].load_map["127.0.0.1:5001"].api_level, 10);
}
