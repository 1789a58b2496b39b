//! `LeaseBook`: how long placement must keep a host's actors where they are (issue 14 A.6,
//! beyond daprd, whose placement moves a host's actors as soon as its stream closes). A pure
//! core: times are milliseconds of the leader's monotonic clock, passed in.
//!
//! The protocol, and why it never lets two hosts run one actor:
//!
//! - A host renews its lease through the leader on every heartbeat. The leader's lease for it ends
//!   `period` after the leader *received* the renewal; the host's own deadline is `period - margin`
//!   after it *sent* the renewal the leader acknowledged. Receipt is never before sending, so the
//!   host's deadline always comes first: a host that cannot renew fences itself (deactivates every
//!   actor) before placement may give its actors to another host.
//! - Lease ends are not carried over from one leader to the next: clocks of different nodes do
//!   not compare. A new leader starts every known host's lease afresh at its takeover, which is
//!   later than any renewal the old leader acknowledged, so no lease ends earlier than the host
//!   believes.
//! - The period is longer than an election plus a reconnect (`LeaseTiming::check`), so killing the
//!   leader makes no host fence itself: hosts reconnect to the new leader and renew in time.

use std::collections::BTreeMap;

/// The timing of leases, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a renewal keeps a host's actors in place.
    pub period_ms: u64,
    /// How much earlier than the period the host fences itself (its own clock's slack).
    pub margin_ms: u64,
    /// The raft election timeout (the longest a leader can be missing once it is gone).
    pub election_ms: u64,
    /// The longest a host takes to find the new leader and renew through it.
    pub reconnect_ms: u64,
}

impl LeaseTiming {
    /// Why this timing would make hosts fence themselves on a mere leader change, if it would.
    pub fn check(&self) -> Result<(), String> {
        if self.margin_ms >= self.period_ms {
            return Err(format!("the lease margin ({} ms) must be shorter than the lease period ({} ms)", self.margin_ms, self.period_ms));
        }
        let ride_through = self.election_ms + self.reconnect_ms;
        if self.period_ms - self.margin_ms <= ride_through {
            return Err(format!(
                "a lease of {} ms less a margin of {} ms does not outlast an election ({} ms) plus a reconnect ({} ms): every leader change would fence the hosts",
                self.period_ms, self.margin_ms, self.election_ms, self.reconnect_ms
            ));
        }
        Ok(())
    }

    /// When a host must fence itself: `period - margin` after it sent the renewal the leader
    /// acknowledged.
    pub fn fence_at(&self, renewal_sent_ms: u64) -> u64 {
        renewal_sent_ms + self.period_ms - self.margin_ms
    }
}

/// The leader's leases, by host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseBook {
    period_ms: u64,
    /// Host name -> when its lease ends (leader's clock).
    ends: BTreeMap<String, u64>,
}

impl LeaseBook {
    /// An empty book whose leases last `period_ms`.
    pub fn new(period_ms: u64) -> Self {
        Self { period_ms, ends: BTreeMap::new() }
    }

    /// A renewal of `host`'s lease received at `now` (a first one grants it); returns when the
    /// lease now ends. A renewal never shortens a lease.
    pub fn renew(&mut self, host: &str, now: u64) -> u64 {
        let end = now + self.period_ms;
        let slot = self.ends.entry(host.to_string()).or_insert(end);
        *slot = (*slot).max(end);
        *slot
    }

    /// This node became leader at `now` knowing these hosts (the replicated membership): each
    /// lease starts afresh, whatever the last leader had.
    pub fn take_over<'a>(&mut self, hosts: impl IntoIterator<Item = &'a str>, now: u64) {
        self.ends = hosts.into_iter().map(|h| (h.to_string(), now + self.period_ms)).collect();
    }

    /// Whether placement may give `host`'s actors to another host at `now`: only once its lease
    /// has ended (a host it never granted holds none).
    pub fn may_move(&self, host: &str, now: u64) -> bool {
        self.ends.get(host).is_none_or(|&end| now >= end)
    }

    /// Takes out and returns the hosts whose lease has ended by `now` (they leave the tables).
    pub fn expire(&mut self, now: u64) -> Vec<String> {
        let gone: Vec<String> = self.ends.iter().filter(|(_, &end)| now >= end).map(|(h, _)| h.clone()).collect();
        for h in &gone {
            self.ends.remove(h);
        }
        gone
    }

    /// The earliest lease end, for the leader's next expiry check.
    pub fn next_end(&self) -> Option<u64> {
        self.ends.values().min().copied()
    }

    /// When `host`'s lease ends, if it holds one.
    pub fn ends_at(&self, host: &str) -> Option<u64> {
        self.ends.get(host).copied()
    }
}

#[cfg(test)]
#[path = "leases_tests.rs"]
mod tests;
