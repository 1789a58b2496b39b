//! The ring against hashes computed outside rapr (Python's `hashlib.blake2b`, digest 64 bytes,
//! first 8 bytes little-endian), and consistent hashing's invariants with proptest.

use proptest::prelude::*;

use super::*;

#[test]
fn hashes_are_blake2b_512_read_little_endian() {
    // python3 -c "import hashlib,struct; print(struct.unpack('<Q', hashlib.blake2b(b'actor-1', digest_size=64).digest()[:8])[0])"
    assert_eq!(hash("actor-1"), 10015260465285814958);
    assert_eq!(hash(""), 241225442164632184);
    assert_eq!(hash("a"), 1260069880423202611);
    // A virtual node: the host's name with its index appended.
    assert_eq!(hash("10.0.0.1:500020"), 7120362376346592644);
    assert_eq!(hash("10.0.0.1:500021"), 6505922788473134223);
}

#[test]
fn actors_land_where_the_reference_ring_puts_them() {
    // Two hosts, three virtual nodes each; owners computed with the Python ring
    // (sorted vnode hashes, first at or after hash(id), wrapping).
    let ring = Ring::new(["10.0.0.2:5000", "10.0.0.1:5000"], 3);
    for (id, host) in [
        ("actor-1", "10.0.0.2:5000"),
        ("actor-2", "10.0.0.1:5000"),
        ("actor-3", "10.0.0.2:5000"),
        ("actor-4", "10.0.0.2:5000"),
        ("x", "10.0.0.2:5000"),
        ("y", "10.0.0.1:5000"),
    ] {
        assert_eq!(ring.host(id), Some(host), "{id}");
    }
}

#[test]
fn a_hash_past_the_last_point_wraps_to_the_first() {
    let ring = Ring::new(["a:1", "b:1"], 1);
    let (pa, pb) = (hash("a:10"), hash("b:10"));
    let (first, last) = if pa < pb { ("a:1", pa.max(pb)) } else { ("b:1", pa.max(pb)) };
    let past = (0..10_000).map(|i| format!("id-{i}")).find(|id| hash(id) > last).expect("some id hashes past the last point");
    assert_eq!(ring.host(&past), Some(first), "{past} wraps to the host of the lowest point");
    // And an id exactly at a point belongs to that point's host.
    assert_eq!(ring.host("a:10"), Some("a:1"));
}

#[test]
fn an_empty_ring_has_no_host_and_duplicates_count_once() {
    assert_eq!(Ring::new(Vec::<String>::new(), DEFAULT_REPLICATION_FACTOR).host("a"), None);
    let ring = Ring::new(["b:1", "a:1", "b:1"], 4);
    assert_eq!(ring.hosts(), ["a:1", "b:1"]);
    assert_eq!(ring.points.len(), 8);
}

fn host_names() -> impl Strategy<Value = Vec<String>> {
    prop::collection::btree_set("[a-z]{1,3}\\.[0-9]{1,2}:[0-9]{2,5}", 1..8).prop_map(|s| s.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_actor_gets_a_host_of_the_ring(hosts in host_names(), ids in prop::collection::vec(".{0,20}", 1..50), rf in 1u32..40) {
        let ring = Ring::new(hosts.clone(), rf);
        for id in &ids {
            let h = ring.host(id).map(str::to_string);
            prop_assert!(h.as_ref().is_some_and(|h| hosts.contains(h)));
        }
    }

    #[test]
    fn the_order_hosts_are_given_in_does_not_matter(hosts in host_names(), ids in prop::collection::vec("[a-z0-9-]{1,12}", 1..50)) {
        let mut reversed = hosts.clone();
        reversed.reverse();
        let (a, b) = (Ring::new(hosts, 10), Ring::new(reversed, 10));
        for id in &ids {
            prop_assert_eq!(a.host(id), b.host(id));
        }
    }

    /// Consistent hashing: a new host takes actors only for itself, so every actor that moves
    /// moves to it; removing it again gives every actor back to its old host.
    #[test]
    fn a_joining_host_only_takes_actors_for_itself(hosts in host_names(), new in "[A-Z]{1,3}:[0-9]{2,5}", ids in prop::collection::vec("[a-z0-9-]{1,12}", 1..100)) {
        let before = Ring::new(hosts.clone(), 20);
        let mut more = hosts.clone();
        more.push(new.clone());
        let after = Ring::new(more, 20);
        for id in &ids {
            let (was, now) = (before.host(id), after.host(id));
            prop_assert!(now == was || now == Some(new.as_str()), "{id}: {was:?} -> {now:?}");
        }
    }
}
