//! The rounds with leases: a closed stream's host stays in the tables until its lease ends.

use super::tests::{ack, report};
use super::*;

fn settle(r: &mut Rounds, streams: &[StreamId], v: u64) -> Vec<Effect> {
    let mut out = Vec::new();
    for op in [HostOperation::Lock, HostOperation::Update, HostOperation::Unlock] {
        for s in streams {
            out.extend(r.receive(*s, ack(op, v)));
        }
    }
    out
}

fn hosts_of(order: &PlacementOrder, actor_type: &str) -> Vec<String> {
    let tables = order.tables.as_ref().expect("an update");
    tables.entries.get(actor_type).map(|t| t.load_map.keys().cloned().collect()).unwrap_or_default()
}

/// The update orders of `out`.
fn updates(out: &[Effect]) -> Vec<&PlacementOrder> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Send { order, .. } if order.operation == "update" => Some(order),
            _ => None,
        })
        .collect()
}

fn two_hosts() -> Rounds {
    let mut r = Rounds::new(100, "8s").with_leases();
    r.connect(1, report("a:1", &["T"]));
    settle(&mut r, &[1], 1);
    r.connect(2, report("b:1", &["T"]));
    settle(&mut r, &[1, 2], 2);
    r
}

#[test]
fn a_closed_host_stays_until_its_lease_is_expired() {
    let mut r = two_hosts();
    assert!(r.close(2).is_empty(), "no round: the tables keep b until its lease ends");
    assert_eq!(r.retained(), [2]);
    assert!(r.membership().has(2));
    let out = r.expire(2);
    assert!(out.contains(&Effect::Timer { version: 3 }));
    settle(&mut r, &[1], 3);
    assert!(!r.membership().has(2));
    assert!(r.retained().is_empty());
    assert!(r.expire(2).is_empty(), "expiring twice does nothing");
}

#[test]
fn expiry_after_the_update_went_out_drops_the_host_from_the_next_tables() {
    let mut r = two_hosts();
    r.close(2);
    let out = r.expire(2);
    assert!(!out.is_empty(), "a deletion round starts");
    let out = r.receive(1, ack(HostOperation::Lock, 3));
    let [update] = updates(&out)[..] else { panic!("one update: {out:?}") };
    assert_eq!(hosts_of(update, "T"), ["a:1"]);
}

#[test]
fn a_host_closing_mid_round_does_not_hold_the_round_and_stays_in_its_tables() {
    let mut r = two_hosts();
    r.connect(3, report("c:1", &["T"]));
    // Round 3 waits for 1, 2 and 3; stream 2 goes without acknowledging.
    r.receive(1, ack(HostOperation::Lock, 3));
    r.receive(3, ack(HostOperation::Lock, 3));
    let out = r.close(2);
    let sent = updates(&out);
    assert_eq!(sent.len(), 2, "the round moves on, to streams 1 and 3: {out:?}");
    let mut hosts = hosts_of(sent[0], "T");
    hosts.sort();
    assert_eq!(hosts, ["a:1", "b:1", "c:1"], "b keeps its place while its lease runs");
}

#[test]
fn the_last_stream_closing_keeps_the_namespace_while_a_lease_runs() {
    let mut r = two_hosts();
    r.close(1);
    r.close(2);
    assert!(!r.is_empty());
    assert_eq!(r.version(), 2);
    // A newcomer gets a round at the next version, with the kept hosts in its tables.
    let out = r.connect(3, report("c:1", &["T"]));
    assert!(out.contains(&Effect::Timer { version: 3 }));
    let out = r.receive(3, ack(HostOperation::Lock, 3));
    let [update] = updates(&out)[..] else { panic!("{out:?}") };
    let mut hosts = hosts_of(update, "T");
    hosts.sort();
    assert_eq!(hosts, ["a:1", "b:1", "c:1"]);
}

#[test]
fn expiring_the_last_kept_host_with_no_stream_starts_the_namespace_over() {
    let mut r = two_hosts();
    r.close(1);
    r.close(2);
    assert!(r.expire(1).is_empty());
    assert!(!r.is_empty());
    assert!(r.expire(2).is_empty());
    assert!(r.is_empty());
    assert_eq!(r.version(), 0);
}

#[test]
fn a_round_timeout_keeps_the_silent_host_in_the_tables() {
    let mut r = two_hosts();
    r.receive(1, report("a:1", &["T", "U"]));
    r.receive(1, ack(HostOperation::Lock, 3));
    let out = r.timeout(3);
    assert!(matches!(&out[0], Effect::Close { stream: 2, .. }));
    assert_eq!(r.retained(), [2]);
    assert!(r.membership().has(2));
    let out = r.receive(1, ack(HostOperation::Lock, 4));
    let [update] = updates(&out)[..] else { panic!("{out:?}") };
    let mut hosts = hosts_of(update, "T");
    hosts.sort();
    assert_eq!(hosts, ["a:1", "b:1"]);
}

#[test]
fn without_leases_a_closed_host_leaves_at_once() {
    let mut r = Rounds::new(100, "8s");
    r.connect(1, report("a:1", &["T"]));
    settle(&mut r, &[1], 1);
    r.connect(2, report("b:1", &["T"]));
    settle(&mut r, &[1, 2], 2);
    assert!(!r.close(2).is_empty());
    assert!(r.retained().is_empty());
    assert!(r.expire(2).is_empty());
}

#[test]
fn a_kept_host_from_the_last_leader_is_in_the_first_round_until_it_expires() {
    let mut r = Rounds::new(100, "8s").with_leases();
    r.keep(100, report("a:1", &["T"]));
    assert_eq!(r.retained(), [100]);
    assert!(!r.is_empty());
    let out = r.connect(1, report("b:1", &["T"]));
    assert!(out.contains(&Effect::Timer { version: 1 }));
    let out = r.receive(1, ack(HostOperation::Lock, 1));
    let [update] = updates(&out)[..] else { panic!("{out:?}") };
    let mut hosts = hosts_of(update, "T");
    hosts.sort();
    assert_eq!(hosts, ["a:1", "b:1"], "the kept host keeps its place");
    settle(&mut r, &[1], 1);
    r.expire(100);
    let out = r.receive(1, ack(HostOperation::Lock, 2));
    let [update] = updates(&out)[..] else { panic!("{out:?}") };
    assert_eq!(hosts_of(update, "T"), ["b:1"]);
}

fn sorted_hosts(order: &PlacementOrder) -> Vec<String> {
    let mut h = hosts_of(order, "T");
    h.sort();
    h
}

#[test]
fn a_reconnecting_host_takes_its_kept_place_over_without_leaving_the_tables() {
    let mut r = two_hosts();
    r.close(2);
    let mut out = r.replace(2, 3, report("b:1", &["T"]));
    assert!(out.contains(&Effect::Timer { version: 3 }), "one round for the new stream: {out:?}");
    out.extend(settle(&mut r, &[1, 3], 3));
    let sent = updates(&out);
    assert_eq!(sent.len(), 2, "{out:?}");
    for u in sent {
        assert_eq!(sorted_hosts(u), ["a:1", "b:1"], "b never leaves the tables");
    }
    assert!(r.retained().is_empty());
    assert!(!r.membership().has(2) && r.membership().has(3));
    assert_eq!(r.version(), 3, "no deletion round");
}

#[test]
fn a_reconnect_during_a_round_replaces_the_kept_entry_once_admitted() {
    let mut r = two_hosts();
    r.close(2);
    r.connect(4, report("c:1", &["T"]));
    assert!(r.replace(2, 3, report("b:1", &["T"])).is_empty(), "it waits for round 3");
    let out = settle(&mut r, &[1, 4], 3);
    assert!(updates(&out).iter().all(|u| sorted_hosts(u) == ["a:1", "b:1", "c:1"]), "{out:?}");
    assert!(out.contains(&Effect::Timer { version: 4 }), "round 4 admits the new stream: {out:?}");
    let out = settle(&mut r, &[1, 4, 3], 4);
    let sent = updates(&out);
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|u| sorted_hosts(u) == ["a:1", "b:1", "c:1"]));
    assert!(r.retained().is_empty() && !r.membership().has(2));
}

#[test]
fn a_replacing_stream_that_closes_before_admission_leaves_the_kept_entry_to_its_lease() {
    let mut r = two_hosts();
    r.close(2);
    r.connect(4, report("c:1", &["T"]));
    r.replace(2, 3, report("b:1", &["T"]));
    r.close(3);
    settle(&mut r, &[1, 4], 3);
    assert_eq!(r.retained(), [2], "still kept");
    assert!(r.membership().has(2));
    assert!(!r.expire(2).is_empty(), "its lease ends as any kept host's");
}
