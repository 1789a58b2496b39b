//! The harness's answer to the port race: a sidecar whose picked port was taken before it bound
//! it is started again on fresh ports instead of failing the test.

use super::{free_port, SidecarBuilder};

#[tokio::test]
async fn a_sidecar_whose_port_was_taken_starts_again_on_fresh_ports() {
    // Another process got the port between the pick and the sidecar's bind.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let sc = SidecarBuilder::new("retried").first_ports(port, free_port()).start().await;
    assert_ne!(sc.http, port, "the second attempt has fresh ports");
    let r = sc.client.get(sc.url("/v1.0/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    drop(taken);
}

#[tokio::test]
async fn ports_are_never_handed_out_twice() {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..100 {
        assert!(seen.insert(free_port()));
    }
}
