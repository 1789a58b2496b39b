//! `Rounds`: the dissemination rounds of one namespace, as a pure state machine (daprd v1.18's
//! placement disseminator, docs/notes/placement-daprd.md §3.2). Events go in (a stream
//! connected, a message, a stream closed, a round timed out); what to send, which streams to
//! close and which timer to arm come out. The process around it owns the streams and the clock.
//!
//! A round: every stream of the namespace gets LOCK(v) and acknowledges it; then UPDATE(v) with
//! the tables; then UNLOCK(v). A report that changes the membership starts a new round at once,
//! even in the middle of one. A stream that connects during a round waits for its end; a stream
//! that closes during a round is taken out of the tables at its end. A round that does not finish
//! within the dissemination timeout closes the streams that did not acknowledge its current step,
//! and starts again with the rest. A sidecar with no actor types whose report changes nothing
//! gets the current tables alone (lock, update, unlock), outside any round.
//!
//! With leases (`with_leases`, beyond daprd), a closed stream leaves the rounds at once but its
//! host's report stays in the tables until the process calls `expire` (its lease ended).
//!
//! Not here yet: daprd's `--disseminate-coalesce-window` (default 0, off).

use std::collections::BTreeMap;

use rapr_proto::placement::v1::{Host, HostOperation, PlacementOrder};

use super::membership::{Membership, StreamId};

/// What the process around `Rounds` must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send `order` on `stream`.
    Send { stream: StreamId, order: PlacementOrder },
    /// End `stream` with gRPC DeadlineExceeded and this message.
    Close { stream: StreamId, message: String },
    /// Arm the dissemination timeout of round `version` (an older one is void).
    Timer { version: u64 },
}

/// The step a round is at (`Report`: no round running).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Report,
    Lock,
    Update,
    Unlock,
}

#[derive(Debug, Clone)]
struct Stream {
    /// The last step this stream acknowledged in the current round.
    acked: Step,
    /// The version of a lone table push still being acknowledged (its acks are not the round's).
    lone_push: Option<u64>,
    /// The last LOCK version sent on it: UPDATE and UNLOCK go only with that version.
    locked: Option<u64>,
}

/// One namespace's streams, membership and round.
#[derive(Debug)]
pub struct Rounds {
    replication_factor: i64,
    /// How long a round may take (only for the close message; the timer is the caller's).
    timeout_text: String,
    version: u64,
    step: Step,
    streams: BTreeMap<StreamId, Stream>,
    membership: Membership,
    /// Connections that arrived during a round, with their first message.
    waiting_adds: Vec<(StreamId, Host)>,
    /// Closed streams still in the membership, taken out when the round ends.
    waiting_deletes: Vec<StreamId>,
    /// Whether a closed stream's report stays in the tables until `expire` (leases, beyond daprd).
    retain_closed: bool,
    /// Closed streams whose report stays in the tables (their host's lease has not ended).
    retained: Vec<StreamId>,
    /// New streams that replace a kept one of the same host when they are admitted: (new, kept).
    replacing: Vec<(StreamId, StreamId)>,
}

impl Rounds {
    /// An empty namespace. `timeout_text` is the dissemination timeout as daprd prints it (`8s`).
    pub fn new(replication_factor: i64, timeout_text: impl Into<String>) -> Self {
        Self {
            replication_factor,
            timeout_text: timeout_text.into(),
            version: 0,
            step: Step::Report,
            streams: BTreeMap::new(),
            membership: Membership::default(),
            waiting_adds: Vec::new(),
            waiting_deletes: Vec::new(),
            retain_closed: false,
            retained: Vec::new(),
            replacing: Vec::new(),
        }
    }

    /// With leases: a closed stream leaves the rounds at once, but its host's report stays in the
    /// tables until `expire` (its lease ended). A round timeout closes late streams the same way.
    pub fn with_leases(mut self) -> Self {
        self.retain_closed = true;
        self
    }

    /// A host this namespace knows without a stream (a new leader's replicated membership): in the
    /// tables, kept like a closed stream's until `expire` or a reconnect under its name.
    pub fn keep(&mut self, stream: StreamId, host: Host) {
        if self.membership.report(stream, host) && !self.retained.contains(&stream) {
            self.retained.push(stream);
        }
    }

    /// The first reports of the connections waiting for the round in progress to end.
    pub fn waiting_hosts(&self) -> impl Iterator<Item = &Host> {
        self.waiting_adds.iter().map(|(_, h)| h)
    }

    /// The closed streams whose report is kept until their lease ends.
    pub fn retained(&self) -> &[StreamId] {
        &self.retained
    }

    /// The current round version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The membership (the metadata endpoint reads it).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Whether no stream is connected and no closed one is kept (the namespace can be dropped).
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty() && self.waiting_adds.is_empty() && self.retained.is_empty()
    }

    /// A host reconnected under the name of a kept stream (`kept`: closed, or seeded by a new
    /// leader): the kept report gives way to the new stream's in the same membership change, so
    /// the host never leaves the tables in between (expiring the kept one first would disseminate
    /// tables without the host, and its actors would move for a round).
    pub fn replace(&mut self, kept: StreamId, stream: StreamId, first: Host) -> Vec<Effect> {
        if self.retained.contains(&kept) {
            self.replacing.push((stream, kept));
        }
        self.connect(stream, first)
    }

    /// The kept stream `stream` replaces, out of the tables now that `stream` is admitted.
    fn take_replacement(&mut self, stream: StreamId) {
        let Some(pos) = self.replacing.iter().position(|(s, _)| *s == stream) else { return };
        let (_, kept) = self.replacing.remove(pos);
        // Its lease may have ended meanwhile (then it is already on its way out).
        if let Some(at) = self.retained.iter().position(|s| *s == kept) {
            self.retained.remove(at);
            self.membership.remove(kept);
        }
    }

    /// A stream connected; `first` is its first message (already checked).
    pub fn connect(&mut self, stream: StreamId, first: Host) -> Vec<Effect> {
        let mut out = Vec::new();
        if self.step != Step::Report {
            self.waiting_adds.push((stream, first));
            return out;
        }
        // Deletions queued since the last round are folded into the round this connection may
        // start, instead of a deletion round and then an addition round.
        for gone in std::mem::take(&mut self.waiting_deletes) {
            self.membership.remove(gone);
        }
        self.take_replacement(stream);
        self.add_stream(stream);
        self.message(stream, first, &mut out);
        out
    }

    /// A message on a connected stream (already checked). daprd reads nothing from a connection
    /// that waits for a round to end; here a report it sends meanwhile replaces the one it
    /// connected with (the newest is what it would report once admitted).
    pub fn receive(&mut self, stream: StreamId, host: Host) -> Vec<Effect> {
        let mut out = Vec::new();
        if let Some((_, first)) = self.waiting_adds.iter_mut().find(|(s, _)| *s == stream) {
            if host.operation == HostOperation::Report as i32 {
                *first = host;
            }
            return out;
        }
        self.message(stream, host, &mut out);
        out
    }

    /// A stream closed (the sidecar left, or its connection broke).
    pub fn close(&mut self, stream: StreamId) -> Vec<Effect> {
        let mut out = Vec::new();
        if let Some(pos) = self.waiting_adds.iter().position(|(s, _)| *s == stream) {
            self.waiting_adds.remove(pos);
            // The kept report it would have replaced stays until its lease ends.
            self.replacing.retain(|(s, _)| *s != stream);
            return out;
        }
        if self.streams.remove(&stream).is_none() {
            return out;
        }
        let keep = self.retain_closed && self.membership.has(stream);
        if keep {
            self.retained.push(stream);
        }
        if self.streams.is_empty() {
            self.no_streams_left(&mut out);
            return out;
        }
        if !self.membership.has(stream) || keep {
            // The tables do not change now; a running round may be complete without it.
            if self.step != Step::Report {
                self.advance_if_done(&mut out);
            }
            return out;
        }
        self.waiting_deletes.push(stream);
        if self.step != Step::Report {
            self.advance_if_done(&mut out);
            return out;
        }
        self.delete_round(&mut out);
        out
    }

    /// The lease of a closed stream's host ended: its report leaves the tables (a round tells the
    /// others). Nothing for a stream that is not kept.
    pub fn expire(&mut self, stream: StreamId) -> Vec<Effect> {
        let mut out = Vec::new();
        let Some(pos) = self.retained.iter().position(|s| *s == stream) else { return out };
        self.retained.remove(pos);
        if self.streams.is_empty() {
            self.membership.remove(stream);
            if self.retained.is_empty() && self.waiting_adds.is_empty() {
                self.reset();
            }
            return out;
        }
        self.waiting_deletes.push(stream);
        if self.step == Step::Report {
            self.delete_round(&mut out);
        }
        out
    }

    /// The last connected stream closed: with no kept hosts the namespace starts over (daprd drops
    /// its disseminator); a round in progress has no one left to wait for.
    fn no_streams_left(&mut self, out: &mut Vec<Effect>) {
        let waiting = std::mem::take(&mut self.waiting_adds);
        if self.retained.is_empty() {
            self.reset();
        } else {
            for gone in std::mem::take(&mut self.waiting_deletes) {
                self.membership.remove(gone);
            }
            self.step = Step::Report;
        }
        for (s, first) in waiting {
            out.extend(self.connect(s, first));
        }
    }

    fn reset(&mut self) {
        let retain = self.retain_closed;
        *self = Self::new(self.replication_factor, std::mem::take(&mut self.timeout_text));
        self.retain_closed = retain;
    }

    /// Round `version`'s timeout fired.
    pub fn timeout(&mut self, version: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        if version != self.version || self.step == Step::Report {
            return out;
        }
        let message = format!("dissemination timeout after {} for version {version}", self.timeout_text);
        let late: Vec<StreamId> = self.streams.iter().filter(|(_, s)| s.acked != self.step).map(|(id, _)| *id).collect();
        for stream in late {
            self.streams.remove(&stream);
            if self.retain_closed && self.membership.has(stream) {
                self.retained.push(stream);
            } else {
                self.membership.remove(stream);
            }
            out.push(Effect::Close { stream, message: message.clone() });
        }
        for gone in std::mem::take(&mut self.waiting_deletes) {
            self.membership.remove(gone);
        }
        self.version += 1;
        self.step = Step::Report;
        for (stream, first) in std::mem::take(&mut self.waiting_adds) {
            self.take_replacement(stream);
            self.add_stream(stream);
            self.membership.report(stream, first);
        }
        if !self.streams.is_empty() {
            // The same version: the timeout already moved it on.
            self.lock_all(&mut out);
        }
        out
    }

    fn add_stream(&mut self, stream: StreamId) {
        self.streams.insert(stream, Stream { acked: Step::Report, lone_push: None, locked: None });
    }

    fn message(&mut self, stream: StreamId, host: Host, out: &mut Vec<Effect>) {
        let op = match HostOperation::try_from(host.operation).unwrap_or(HostOperation::Unknown) {
            // Sidecars older than 1.17 acknowledge without saying what.
            HostOperation::Unknown => self.step,
            HostOperation::Report => Step::Report,
            HostOperation::Lock => Step::Lock,
            HostOperation::Update => Step::Update,
            HostOperation::Unlock => Step::Unlock,
        };
        if host.version.is_some_and(|v| v < self.version) {
            return; // stale
        }
        if let Some(s) = self.streams.get_mut(&stream) {
            if let (Some(push), Some(v), true) = (s.lone_push, host.version, op != Step::Report) {
                if v == push {
                    if op == Step::Unlock {
                        s.lone_push = None;
                    }
                    return;
                }
            }
        }
        match op {
            Step::Report => self.report(stream, host, out),
            step => self.ack(stream, step, out),
        }
    }

    fn report(&mut self, stream: StreamId, host: Host, out: &mut Vec<Effect>) {
        if self.membership.report(stream, host) {
            self.version += 1;
            self.lock_all(out);
            return;
        }
        // During a round the stream gets the tables from the round itself; a lone push now
        // would take the round's acknowledgements for its own (daprd then waits for the
        // timeout and closes the stream).
        if !self.membership.has(stream) && self.step == Step::Report {
            self.lone_push(stream, out);
        }
    }

    /// The current tables to one actor-less stream, outside any round.
    fn lone_push(&mut self, stream: StreamId, out: &mut Vec<Effect>) {
        let version = self.version;
        let tables = self.membership.tables(version, self.replication_factor);
        let Some(s) = self.streams.get_mut(&stream) else { return };
        s.lone_push = Some(version);
        for (operation, tables) in [("lock", None), ("update", Some(tables)), ("unlock", None)] {
            Self::send(s, stream, PlacementOrder { tables, operation: operation.into(), version }, out);
        }
    }

    /// An acknowledgement of the current step counts; one of another step (which a sidecar never
    /// sends before it got that step) is ignored.
    fn ack(&mut self, stream: StreamId, step: Step, out: &mut Vec<Effect>) {
        if step != self.step {
            return;
        }
        let Some(s) = self.streams.get_mut(&stream) else { return };
        s.acked = step;
        self.advance_if_done(out);
    }

    /// Every stream acknowledged the current step: the next one goes out.
    fn advance_if_done(&mut self, out: &mut Vec<Effect>) {
        if self.step == Step::Report || self.streams.values().any(|s| s.acked != self.step) {
            return;
        }
        match self.step {
            Step::Lock => {
                self.step = Step::Update;
                let tables = self.membership.tables(self.version, self.replication_factor);
                self.send_all("update", Some(tables), out);
            }
            Step::Update => {
                self.step = Step::Unlock;
                self.send_all("unlock", None, out);
            }
            Step::Unlock | Step::Report => {
                self.step = Step::Report;
                if !self.waiting_deletes.is_empty() {
                    self.delete_round(out);
                } else {
                    self.admit_waiting(out);
                }
            }
        }
    }

    /// Takes the closed streams out and runs a round for it.
    fn delete_round(&mut self, out: &mut Vec<Effect>) {
        if self.waiting_deletes.is_empty() || self.streams.is_empty() {
            return;
        }
        for gone in std::mem::take(&mut self.waiting_deletes) {
            self.membership.remove(gone);
        }
        self.version += 1;
        self.lock_all(out);
    }

    /// The connections that waited for the round: one round for all of them if they change the
    /// membership, else the tables to each actor-less one alone.
    fn admit_waiting(&mut self, out: &mut Vec<Effect>) {
        let waiting = std::mem::take(&mut self.waiting_adds);
        if waiting.is_empty() {
            return;
        }
        let mut changed = false;
        let mut added = Vec::with_capacity(waiting.len());
        for (stream, first) in waiting {
            self.take_replacement(stream);
            self.add_stream(stream);
            changed |= self.membership.report(stream, first);
            added.push(stream);
        }
        if changed {
            self.version += 1;
            self.lock_all(out);
            return;
        }
        for stream in added {
            if !self.membership.has(stream) {
                self.lone_push(stream, out);
            }
        }
    }

    /// Starts the LOCK step of round `self.version` on every stream.
    fn lock_all(&mut self, out: &mut Vec<Effect>) {
        self.step = Step::Lock;
        for s in self.streams.values_mut() {
            s.acked = Step::Report;
            s.lone_push = None;
        }
        out.push(Effect::Timer { version: self.version });
        self.send_all("lock", None, out);
    }

    fn send_all(&mut self, operation: &str, tables: Option<rapr_proto::placement::v1::PlacementTables>, out: &mut Vec<Effect>) {
        let version = self.version;
        for (id, s) in self.streams.iter_mut() {
            Self::send(s, *id, PlacementOrder { tables: tables.clone(), operation: operation.into(), version }, out);
        }
    }

    /// daprd's per-stream send rule: an older LOCK than the last one sent is skipped; UPDATE and
    /// UNLOCK go only with the version of the last LOCK sent on that stream.
    fn send(s: &mut Stream, stream: StreamId, order: PlacementOrder, out: &mut Vec<Effect>) {
        match order.operation.as_str() {
            "lock" => {
                if s.locked.is_some_and(|l| order.version < l) {
                    return;
                }
                s.locked = Some(order.version);
            }
            _ if s.locked != Some(order.version) => return,
            _ => {}
        }
        out.push(Effect::Send { stream, order });
    }
}

#[cfg(test)]
#[path = "rounds_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "rounds_lease_tests.rs"]
mod lease_tests;
