//! Raft nodes in one process over real cluster sessions: an isolated leader stops serving, a
//! wrong cookie keeps a node out, a corrupt store is refused. Fail-over and restarts run with one
//! process per node (tests/it/placement_cluster.rs): ractor_cluster numbers sessions per server,
//! and several servers in one process share the process groups, so one server's lost session
//! takes another's peers with it.

use std::time::Duration;

use super::node::{RaftNode, RaftNodeArgs};
use super::state_machine::HostRecord;
use super::Command;
use crate::placement::server::flags::Peer;

fn peers() -> Vec<Peer> {
    let ports: [u16; 3] = crate::net_ports::free_ports().unwrap();
    ports.iter().enumerate().map(|(i, p)| Peer { id: format!("n{i}"), address: format!("127.0.0.1:{p}") }).collect()
}

async fn start(peers: &[Peer], i: usize, dir: &std::path::Path, cookie: &str) -> RaftNode {
    let args = RaftNodeArgs { id: peers[i].id.clone(), peers: peers.to_vec(), data_dir: Some(dir.join(&peers[i].id)), cookie: cookie.into() };
    std::fs::create_dir_all(dir.join(&peers[i].id)).unwrap();
    RaftNode::start(args).await.unwrap()
}

async fn leader_of(nodes: &[Option<RaftNode>]) -> usize {
    for _ in 0..200 {
        let serving: Vec<usize> = nodes.iter().enumerate().filter(|(_, n)| n.as_ref().is_some_and(|n| n.leader.borrow().serving())).map(|(i, _)| i).collect();
        if serving.len() == 1 {
            return serving[0];
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let states: Vec<String> = nodes
        .iter()
        .map(|n| n.as_ref().map_or("down".to_string(), |n| {
            let m = n.raft.metrics().borrow().clone();
            format!("{:?} leader={:?} term={} quorum_ack={:?}", m.state, m.current_leader, m.current_term, m.millis_since_quorum_ack)
        }))
        .collect();
    panic!("no single serving leader in 10 s: {states:?}");
}

fn host(name: &str) -> HostRecord {
    HostRecord { name: name.into(), id: "app".into(), namespace: "default".into(), entities: vec!["T".into()], api_level: 20 }
}

async fn wait_hosts(n: &RaftNode, count: usize) {
    let mut m = n.membership.clone();
    let r = tokio::time::timeout(Duration::from_secs(10), m.wait_for(|m| m.namespaces.get("default").map_or(0, |h| h.len()) == count)).await;
    assert!(r.is_ok(), "node {} never saw {count} hosts", n.node_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_replicate_and_a_leader_cut_off_from_its_quorum_stops_serving() {
    let dir = tempfile::tempdir().unwrap();
    let peers = peers();
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(Some(start(&peers, i, dir.path(), "secret").await));
    }
    let leader = leader_of(&nodes).await;
    nodes[leader].as_ref().unwrap().raft.client_write(Command::SetHost(host("a:1"))).await.unwrap();
    for n in nodes.iter().flatten() {
        wait_hosts(n, 1).await;
    }
    // The two followers go away; the leader keeps running alone.
    for (i, n) in nodes.iter_mut().enumerate() {
        if i != leader {
            n.take().unwrap().shutdown().await;
        }
    }
    let n = nodes[leader].as_ref().unwrap();
    let mut serving = n.leader.clone();
    let r = tokio::time::timeout(Duration::from_secs(10), serving.wait_for(|s| !s.serving())).await;
    assert!(r.is_ok(), "an isolated leader kept serving");
    assert_eq!(n.raft.metrics().borrow().state, openraft::ServerState::Leader, "openraft itself still says leader");
    n.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_cookie_never_joins() {
    let dir = tempfile::tempdir().unwrap();
    let peers: Vec<Peer> = peers().into_iter().take(2).collect();
    let a = start(&peers, 0, dir.path(), "secret").await;
    let b = start(&peers, 1, dir.path(), "other").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!a.leader.borrow().serving() && !b.leader.borrow().serving(), "two nodes need each other for a quorum, and cannot talk");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_corrupt_store_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("raft.db"), b"this is not a database, just some bytes that are long enough to look like a header").unwrap();
    let peers: Vec<Peer> = peers().into_iter().take(1).collect();
    let args = RaftNodeArgs { id: peers[0].id.clone(), peers: peers.clone(), data_dir: Some(dir.path().to_path_buf()), cookie: "c".into() };
    let err = RaftNode::start(args).await.err().expect("refused");
    assert!(err.to_string().contains("cannot be opened"), "{err}");
}
