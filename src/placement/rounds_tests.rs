//! The dissemination rounds, step by step, and a simulation of well-behaved sidecars under random
//! joins, leaves and type changes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;

use super::*;

pub(super) fn report(name: &str, types: &[&str]) -> Host {
    Host {
        name: name.into(),
        id: format!("app-{name}"),
        namespace: "default".into(),
        entities: types.iter().map(|t| t.to_string()).collect(),
        api_level: 20,
        operation: HostOperation::Report as i32,
        ..Default::default()
    }
}

pub(super) fn ack(op: HostOperation, version: u64) -> Host {
    Host { id: "x".into(), namespace: "default".into(), operation: op as i32, version: Some(version), ..Default::default() }
}

/// The sends of `effects` as (stream, operation, version).
fn sends(effects: &[Effect]) -> Vec<(StreamId, String, u64)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send { stream, order } => Some((*stream, order.operation.clone(), order.version)),
            _ => None,
        })
        .collect()
}

fn s(stream: StreamId, op: &str, v: u64) -> (StreamId, String, u64) {
    (stream, op.to_string(), v)
}

#[test]
fn a_first_host_goes_through_lock_update_unlock() {
    let mut r = Rounds::new(100, "8s");
    let out = r.connect(1, report("a:1", &["T"]));
    assert_eq!(out[0], Effect::Timer { version: 1 });
    assert_eq!(sends(&out), [s(1, "lock", 1)]);
    let out = r.receive(1, ack(HostOperation::Lock, 1));
    assert_eq!(sends(&out), [s(1, "update", 1)]);
    let Effect::Send { order, .. } = &out[0] else { panic!() };
    let tables = order.tables.as_ref().expect("update carries the tables");
    assert_eq!(tables.version, "1");
    assert_eq!(tables.replication_factor, 100);
    assert!(tables.entries["T"].load_map.contains_key("a:1"));
    assert_eq!(sends(&r.receive(1, ack(HostOperation::Update, 1))), [s(1, "unlock", 1)]);
    assert!(r.receive(1, ack(HostOperation::Unlock, 1)).is_empty(), "the round is over");
}

fn settle(r: &mut Rounds, stream: StreamId, v: u64) {
    r.receive(stream, ack(HostOperation::Lock, v));
    r.receive(stream, ack(HostOperation::Update, v));
    r.receive(stream, ack(HostOperation::Unlock, v));
}

#[test]
fn a_connection_during_a_round_waits_for_its_end() {
    let mut r = Rounds::new(100, "8s");
    r.connect(1, report("a:1", &["T"]));
    assert!(r.connect(2, report("b:1", &["T"])).is_empty(), "queued");
    r.receive(1, ack(HostOperation::Lock, 1));
    r.receive(1, ack(HostOperation::Update, 1));
    let out = r.receive(1, ack(HostOperation::Unlock, 1));
    assert_eq!(sends(&out), [s(1, "lock", 2), s(2, "lock", 2)], "one round for the newcomer");
}

#[test]
fn an_actorless_sidecar_gets_the_tables_alone_and_its_acks_are_not_the_rounds() {
    let mut r = Rounds::new(100, "8s");
    r.connect(1, report("a:1", &["T"]));
    settle(&mut r, 1, 1);
    let out = r.connect(2, report("c:1", &[]));
    assert_eq!(sends(&out), [s(2, "lock", 1), s(2, "update", 1), s(2, "unlock", 1)]);
    for op in [HostOperation::Lock, HostOperation::Update, HostOperation::Unlock] {
        assert!(r.receive(2, ack(op, 1)).is_empty());
    }
    // A later round includes it like any other stream.
    let out = r.receive(1, report("a:1", &["T", "U"]));
    assert_eq!(sends(&out), [s(1, "lock", 2), s(2, "lock", 2)]);
    assert!(sends(&r.receive(1, ack(HostOperation::Lock, 2))).is_empty(), "waits for stream 2");
    assert_eq!(sends(&r.receive(2, ack(HostOperation::Lock, 2))).len(), 2);
}

#[test]
fn a_leaving_host_is_taken_out_in_a_round_of_its_own() {
    let mut r = Rounds::new(100, "8s");
    r.connect(1, report("a:1", &["T"]));
    settle(&mut r, 1, 1);
    r.connect(2, report("b:1", &["T"]));
    for op in [HostOperation::Lock, HostOperation::Update, HostOperation::Unlock] {
        r.receive(1, ack(op, 2));
        r.receive(2, ack(op, 2));
    }
    let out = r.close(2);
    assert_eq!(sends(&out), [s(1, "lock", 3)]);
    let out = r.receive(1, ack(HostOperation::Lock, 3));
    let Effect::Send { order, .. } = &out[0] else { panic!() };
    assert_eq!(order.tables.as_ref().unwrap().entries["T"].load_map.keys().collect::<Vec<_>>(), ["a:1"]);
}

#[test]
fn a_stream_closing_mid_round_lets_the_round_go_on() {
    let mut r = Rounds::new(100, "8s");
    r.connect(1, report("a:1", &["T"]));
    settle(&mut r, 1, 1);
    r.connect(2, report("b:1", &["T"]));
    r.receive(1, ack(HostOperation::Lock, 2));
    // Stream 2 never acknowledges and goes: the round moves on, then removes it.
    let out = r.close(2);
    assert_eq!(sends(&out), [s(1, "update", 2)]);
    r.receive(1, ack(HostOperation::Update, 2));
    let out = r.receive(1, ack(HostOperation::Unlock, 2));
    assert_eq!(sends(&out), [s(1, "lock", 3)], "then a round without it");
}

#[test]
fn a_round_that_times_out_closes_the_silent_and_starts_again() {
    let mut r = Rounds::new(100, "8s");
    r.connect(1, report("a:1", &["T"]));
    settle(&mut r, 1, 1);
    r.connect(2, report("b:1", &["T"]));
    r.receive(1, ack(HostOperation::Lock, 2));
    assert!(r.timeout(1).is_empty(), "an old round's timer is void");
    let out = r.timeout(2);
    assert_eq!(out[0], Effect::Close { stream: 2, message: "dissemination timeout after 8s for version 2".into() });
    assert_eq!(out[1], Effect::Timer { version: 3 });
    assert_eq!(sends(&out), [s(1, "lock", 3)]);
    assert!(!r.membership().has(2));
}

#[test]
fn a_changing_report_mid_round_restarts_it_and_stale_acks_are_dropped() {
    let mut r = Rounds::new(100, "8s");
    r.connect(1, report("a:1", &["T"]));
    r.receive(1, ack(HostOperation::Lock, 1));
    let out = r.receive(1, report("a:1", &["U"]));
    assert_eq!(sends(&out), [s(1, "lock", 2)], "LOCK 2 without UNLOCK 1");
    assert!(r.receive(1, ack(HostOperation::Update, 1)).is_empty(), "stale");
    assert_eq!(sends(&r.receive(1, ack(HostOperation::Lock, 2))), [s(1, "update", 2)]);
}

#[test]
fn an_unchanged_report_from_a_host_changes_nothing() {
    let mut r = Rounds::new(100, "8s");
    r.connect(1, report("a:1", &["T", "U"]));
    settle(&mut r, 1, 1);
    assert!(r.receive(1, report("a:1", &["U", "T"])).is_empty());
    assert_eq!(r.version(), 1);
}

#[test]
fn the_last_stream_leaving_starts_the_namespace_over() {
    let mut r = Rounds::new(100, "8s");
    r.connect(1, report("a:1", &["T"]));
    settle(&mut r, 1, 1);
    assert!(r.close(1).is_empty());
    assert!(r.is_empty());
    assert_eq!(r.version(), 0);
    assert_eq!(sends(&r.connect(2, report("b:1", &["T"]))), [s(2, "lock", 1)]);
}

#[derive(Debug, Clone)]
enum Event {
    Join(Vec<u8>),
    Leave(usize),
    Retype(usize, Vec<u8>),
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    let types = || prop::collection::vec(0u8..3, 0..3);
    prop::collection::vec(
        prop_oneof![types().prop_map(Event::Join), (0usize..8).prop_map(Event::Leave), ((0usize..8), types()).prop_map(|(i, t)| Event::Retype(i, t))],
        1..25,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Sidecars that acknowledge every step, in any mix of joins, leaves and type changes (each
    /// applied while the effects of the last are still being acknowledged): once the acks are
    /// done, no round is left running and every connected sidecar's last table is placement's.
    #[test]
    fn well_behaved_sidecars_all_end_with_placements_table(events in events(), interleave in prop::collection::vec(0usize..4, 25)) {
        let mut r = Rounds::new(10, "8s");
        let mut next = 0u64;
        let mut live: Vec<StreamId> = Vec::new();
        let mut last_table: BTreeMap<StreamId, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
        let mut pending: VecDeque<Effect> = VecDeque::new();
        let name = |s: StreamId| format!("h:{s}");
        let types = |t: &[u8]| t.iter().map(|x| format!("T{x}")).collect::<Vec<_>>();
        // Acknowledge up to `n` pending sends (all of them when `n` is None).
        let drain = |r: &mut Rounds, pending: &mut VecDeque<Effect>, live: &[StreamId], last: &mut BTreeMap<StreamId, BTreeMap<String, BTreeSet<String>>>, n: Option<usize>| {
            let mut done = 0;
            while let Some(e) = pending.pop_front() {
                if let Effect::Send { stream, order } = e {
                    if !live.contains(&stream) {
                        continue;
                    }
                    if let Some(t) = &order.tables {
                        last.insert(stream, t.entries.iter().map(|(k, v)| (k.clone(), v.load_map.keys().cloned().collect())).collect());
                    }
                    let op = match order.operation.as_str() { "lock" => HostOperation::Lock, "update" => HostOperation::Update, _ => HostOperation::Unlock };
                    pending.extend(r.receive(stream, ack(op, order.version)));
                }
                done += 1;
                if n.is_some_and(|n| done >= n) {
                    break;
                }
            }
        };
        for (i, e) in events.iter().enumerate() {
            match e {
                Event::Join(t) => {
                    next += 1;
                    live.push(next);
                    let t = types(t);
                    let refs: Vec<&str> = t.iter().map(String::as_str).collect();
                    pending.extend(r.connect(next, report(&name(next), &refs)));
                }
                Event::Leave(k) if !live.is_empty() => {
                    let s = live.remove(k % live.len());
                    last_table.remove(&s);
                    pending.extend(r.close(s));
                }
                Event::Retype(k, t) if !live.is_empty() => {
                    let s = live[k % live.len()];
                    let t = types(t);
                    let refs: Vec<&str> = t.iter().map(String::as_str).collect();
                    pending.extend(r.receive(s, report(&name(s), &refs)));
                }
                _ => {}
            }
            drain(&mut r, &mut pending, &live, &mut last_table, Some(interleave[i % interleave.len()]));
        }
        drain(&mut r, &mut pending, &live, &mut last_table, None);
        prop_assert_eq!(r.step, Step::Report, "no round left running");
        let truth: BTreeMap<String, BTreeSet<String>> = r.membership().tables(r.version(), 10).entries.iter().map(|(k, v)| (k.clone(), v.load_map.keys().cloned().collect())).collect();
        for s in &live {
            match last_table.get(s) {
                Some(t) => prop_assert_eq!(t, &truth, "stream {}", s),
                // Only an actor-less sidecar of a namespace that never had a host gets no table
                // with entries, and then the truth is empty too.
                None => prop_assert!(truth.is_empty(), "stream {} never got a table", s),
            }
        }
    }
}
