//! A placement node cut off from the others by the network (each node in its own network
//! namespace, `harness::partition`): the leader that loses its quorum stops serving within the
//! election timeout, even to a sidecar on its own side of the cut, and the other two elect
//! another; healed, the cluster has one leader again. Runs alone (.config/nextest.toml).

use std::time::{Duration, Instant};

use crate::harness::eventually;
use crate::harness::partition::NetCluster;
use crate::harness::placement::{report, FakeSidecar};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_neither_leads_nor_serves_tables() {
    let c = NetCluster::start(3).await;
    let old = c.leader(Duration::from_secs(20), None).await;
    // Before the cut, a sidecar beside the leader gets its tables.
    let address = c.nodes[old].address();
    let served = c.inside(old, {
        let address = address.clone();
        move || one_round(&address)
    });
    assert_eq!(served, Ok(()), "the leader serves a sidecar on its side");

    let cut = Instant::now();
    c.cut(old);
    eventually(Duration::from_secs(5), "the cut-off leader stops leading", || async { (c.status_inside(old, "/placement/state") == 503).then_some(()) }).await;
    println!("placement partition: the cut-off leader stopped serving {:?} after the cut", cut.elapsed());
    let next = c.leader(Duration::from_secs(10), Some(old)).await;
    println!("placement partition: node {next} leads the majority {:?} after the cut", cut.elapsed());

    // For as long as the cut lasts, the lone node refuses sidecars as a follower does and never
    // leads again.
    let refused = c.inside(old, move || one_round(&address));
    let Err((code, message)) = refused else { panic!("a cut-off node served tables") };
    assert_eq!(code, tonic::Code::FailedPrecondition, "{message}");
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(c.status_inside(old, "/placement/state"), 503, "the cut-off node leads again");
        assert_eq!(c.status_inside(old, "/healthz"), 200, "the cut-off node is alive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    c.heal(old);
    eventually(Duration::from_secs(15), "one leader once healed", || async {
        let mut leading = Vec::new();
        for (i, n) in c.nodes.iter().enumerate() {
            if n.leads().await {
                leading.push(i);
            }
        }
        (leading.len() == 1).then_some(())
    })
    .await;
}

/// A simulated sidecar's first round with the placement node at `address`, on a runtime of its
/// own (run in a namespace's thread): `Ok` once tables arrive, or the refusal.
fn one_round(address: &str) -> Result<(), (tonic::Code, String)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut s = FakeSidecar::connect(address, report("10.214.0.1:5001", "beside", &["Cat"])).await.map_err(|s| (s.code(), s.message().to_string()))?;
        let got = tokio::time::timeout(Duration::from_secs(5), s.wait_tables(Duration::from_secs(5), "a round", |_| true)).await;
        got.map(|_| ()).map_err(|_| (tonic::Code::DeadlineExceeded, "no tables".to_string()))
    })
}
