//! The lease book, and the property the protocol rests on: placement never may move a host's
//! actors before that host has fenced itself, whatever the delays and leader changes.

use proptest::prelude::*;

use super::*;

fn timing() -> LeaseTiming {
    LeaseTiming { period_ms: 10_000, margin_ms: 1_000, election_ms: 3_000, reconnect_ms: 2_000 }
}

#[test]
fn the_timing_must_ride_through_a_leader_change() {
    assert_eq!(timing().check(), Ok(()));
    let short = LeaseTiming { period_ms: 5_500, ..timing() };
    assert!(short.check().unwrap_err().contains("every leader change would fence the hosts"));
    let no_margin_left = LeaseTiming { margin_ms: 10_000, ..timing() };
    assert!(no_margin_left.check().unwrap_err().contains("must be shorter"));
    assert_eq!(timing().fence_at(100), 100 + 9_000);
}

#[test]
fn a_lease_holds_the_actors_until_it_ends_and_renewals_never_shorten_it() {
    let mut book = LeaseBook::new(10_000);
    assert!(book.may_move("h:1", 0), "no lease, nothing to wait for");
    assert_eq!(book.renew("h:1", 1_000), 11_000);
    assert!(!book.may_move("h:1", 10_999));
    assert!(book.may_move("h:1", 11_000));
    // A renewal that arrives out of order (an older timestamp) keeps the later end.
    assert_eq!(book.renew("h:1", 500), 11_000);
    assert_eq!(book.next_end(), Some(11_000));
    assert!(book.expire(10_999).is_empty());
    assert_eq!(book.expire(11_000), ["h:1"]);
    assert_eq!(book.ends_at("h:1"), None);
}

#[test]
fn a_new_leader_starts_every_lease_afresh() {
    let mut book = LeaseBook::new(10_000);
    book.renew("a:1", 0);
    // The new leader's clock is unrelated; it knows the hosts from the replicated membership.
    let mut next = LeaseBook::new(10_000);
    next.take_over(["a:1", "b:1"], 50);
    assert!(!next.may_move("a:1", 10_049) && !next.may_move("b:1", 10_049));
    assert!(next.may_move("a:1", 10_050));
    assert_eq!(next.expire(10_050), ["a:1", "b:1"]);
}

/// One renewal: sent by the host at `sent`, received by the leader `delay` later (or lost), its
/// acknowledgement back to the host (or lost). When the acknowledgement arrives does not matter:
/// the host counts its deadline from when it sent the renewal.
#[derive(Debug, Clone)]
struct Renewal {
    sent: u64,
    delay: u64,
    received: bool,
    acked: bool,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// At any time placement may move the host's actors, every renewal the host ever had
    /// acknowledged puts its fencing deadline at or before that time.
    #[test]
    fn placement_never_moves_actors_before_their_host_fenced(
        renewals in prop::collection::vec((0u64..60_000, 0u64..3_000, any::<bool>(), any::<bool>()), 1..30)
            .prop_map(|v| v.into_iter().map(|(sent, delay, lost_in, lost_back)| Renewal { sent, delay, received: !lost_in, acked: !lost_in && !lost_back }).collect::<Vec<_>>()),
        takeovers in prop::collection::vec(0u64..70_000, 0..4),
        probes in prop::collection::vec(0u64..80_000, 1..40),
    ) {
        let t = timing();
        // The leader side, in time order: receipts and takeovers.
        let mut events: Vec<(u64, Option<usize>)> = renewals.iter().enumerate().filter(|(_, r)| r.received).map(|(i, r)| (r.sent + r.delay, Some(i))).collect();
        events.extend(takeovers.iter().map(|&at| (at, None)));
        events.sort();
        let mut probes = probes;
        probes.sort();
        let mut book = LeaseBook::new(t.period_ms);
        let mut known = false;
        let mut next = 0;
        for now in probes {
            while next < events.len() && events[next].0 <= now {
                match events[next] {
                    (at, Some(_)) => {
                        book.renew("h:1", at);
                        known = true;
                    }
                    (at, None) if known => book.take_over(["h:1"], at),
                    _ => {}
                }
                next += 1;
            }
            if known && book.may_move("h:1", now) {
                for r in renewals.iter().filter(|r| r.acked && r.sent + r.delay <= now) {
                    prop_assert!(t.fence_at(r.sent) <= now, "moved at {} but the host fences only at {} (renewal {:?})", now, t.fence_at(r.sent), r);
                }
            }
        }
    }
}
