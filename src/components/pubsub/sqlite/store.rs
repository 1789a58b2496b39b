//! The broker's SQL: schema, publish, sweep (claims and settles live in `claim.rs`). Plain
//! blocking functions on a connection; `SqliteBroker` runs them on its connection threads.
//!
//! Layout (one file shared by every process on the host):
//! - `<p>_messages`: one row per published message (`id` grows, so per-topic order is id order);
//! - `<p>_groups`: every consumer group a subscription ever declared for a topic; a new group
//!   sees every message still stored, as contrib's Redis Streams group created at `0`.
//!   `claimed_to`: the highest message id of the topic the group was ever handed; every message
//!   at or below it has a delivery row, so a claim looks for new messages above it only (an
//!   index seek) rather than walking the acknowledged ones the sweep has not removed yet;
//! - `<p>_deliveries`: a group's state of one message: how often handed out, claimed until when
//!   (`visible_ms`), acknowledged or parked. No row: not yet handed to that group. A partial
//!   index holds the pending rows by `visible_ms`: expired claims and due retries.
//!
//! A claim is a write transaction taken with `BEGIN IMMEDIATE`, so two processes never hand the
//! same message of a group out twice while its claim is live; a claim that outlives
//! `processingTimeout` ends and the message goes to whoever asks next (at least once).

use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, TransactionBehavior};

use crate::components::sqlite_pool::db_err;
use crate::components::state::StoreError;

/// A delivery row's state.
pub(super) const PENDING: i64 = 0;
pub(super) const ACKED: i64 = 1;
pub(super) const PARKED: i64 = 2;

/// Milliseconds since the Unix epoch: the clock every process on the host shares.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The table names of one broker.
#[derive(Debug, Clone)]
pub struct Tables {
    pub(super) messages: String,
    pub(super) groups: String,
    pub(super) deliveries: String,
}

impl Tables {
    /// Tables under `prefix` (validated as an identifier by the config).
    pub fn new(prefix: &str) -> Self {
        Self { messages: format!("{prefix}_messages"), groups: format!("{prefix}_groups"), deliveries: format!("{prefix}_deliveries") }
    }

    /// The messages table.
    pub fn messages(&self) -> &str {
        &self.messages
    }
}

/// A message as claimed for one group.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Row id.
    pub id: i64,
    /// Payload.
    pub data: Vec<u8>,
    /// Content type, if published with one.
    pub content_type: Option<String>,
    /// How many times this group has been handed it, this time included.
    pub delivery_count: u32,
}

/// What a group's consumer decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Acknowledged.
    Ack,
    /// Deliver again once visible at this time (ms).
    RetryAt(i64),
    /// Keep, never deliver again.
    Park,
    /// Given back unhandled (the subscription ended between claim and hand-out).
    Release,
}

/// Creates the tables if missing (idempotent; every process runs it on open).
pub fn migrate(conn: &mut Connection, t: &Tables) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    tx.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {m} (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            topic TEXT NOT NULL,
            data BLOB NOT NULL,
            content_type TEXT,
            published_ms INTEGER NOT NULL
        );
        CREATE INDEX IF NOT EXISTS idx_{m}_topic ON {m} (topic, id);
        CREATE TABLE IF NOT EXISTS {g} (
            topic TEXT NOT NULL,
            grp TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            claimed_to INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (topic, grp)
        );
        CREATE TABLE IF NOT EXISTS {d} (
            grp TEXT NOT NULL,
            message_id INTEGER NOT NULL,
            state INTEGER NOT NULL,
            delivery_count INTEGER NOT NULL,
            visible_ms INTEGER NOT NULL,
            PRIMARY KEY (grp, message_id)
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS idx_{d}_message ON {d} (message_id);",
        m = t.messages,
        g = t.groups,
        d = t.deliveries,
    ))
    .map_err(db_err)?;
    add_claim_cursor(&tx, t)?;
    tx.execute_batch(&format!("CREATE INDEX IF NOT EXISTS idx_{d}_due ON {d} (grp, visible_ms) WHERE state = {PENDING};", d = t.deliveries)).map_err(db_err)?;
    tx.commit().map_err(db_err)
}

/// Files made before the claim cursor existed get the column, set to the highest message each
/// group was handed (claims always took the lowest ids, so every message below it has a
/// delivery row: the invariant `claim` relies on).
fn add_claim_cursor(conn: &Connection, t: &Tables) -> Result<(), StoreError> {
    let (m, g, d) = (&t.messages, &t.groups, &t.deliveries);
    let has: bool = conn
        .query_row(&format!("SELECT EXISTS (SELECT 1 FROM pragma_table_info('{g}') WHERE name = 'claimed_to')"), [], |r| r.get(0))
        .map_err(db_err)?;
    if has {
        return Ok(());
    }
    conn.execute_batch(&format!(
        "ALTER TABLE {g} ADD COLUMN claimed_to INTEGER NOT NULL DEFAULT 0;
         UPDATE {g} SET claimed_to = COALESCE((SELECT MAX(d.message_id) FROM {d} d JOIN {m} m ON m.id = d.message_id
             WHERE d.grp = {g}.grp AND m.topic = {g}.topic), 0);"
    ))
    .map_err(db_err)
}

/// One message to insert.
pub struct NewMessage {
    /// Payload.
    pub data: Vec<u8>,
    /// Content type.
    pub content_type: Option<String>,
}

/// Inserts `msgs` on `topic` in one transaction (all or none).
pub fn publish(conn: &mut Connection, t: &Tables, topic: &str, msgs: &[NewMessage]) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    {
        let mut stmt = tx.prepare_cached(&format!("INSERT INTO {} (topic, data, content_type, published_ms) VALUES (?1, ?2, ?3, ?4)", t.messages)).map_err(db_err)?;
        let now = now_ms();
        for m in msgs {
            stmt.execute(params![topic, m.data, m.content_type, now]).map_err(db_err)?;
        }
    }
    tx.commit().map_err(db_err)
}

/// Declares `group` on `topic` (it then holds every stored message of the topic).
pub fn join_group(conn: &mut Connection, t: &Tables, topic: &str, group: &str) -> Result<(), StoreError> {
    conn.execute(&format!("INSERT OR IGNORE INTO {} (topic, grp, created_ms) VALUES (?1, ?2, ?3)", t.groups), params![topic, group, now_ms()]).map_err(db_err)?;
    Ok(())
}

/// Whether `group` still holds message `id` of `topic` (stored, not acknowledged: waiting,
/// claimed or parked).
pub fn held(conn: &mut Connection, t: &Tables, topic: &str, group: &str, id: i64) -> Result<bool, StoreError> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM {m} m LEFT JOIN {d} d ON d.grp = ?2 AND d.message_id = m.id
         WHERE m.id = ?3 AND m.topic = ?1 AND (d.state IS NULL OR d.state <> {ACKED}))",
        m = t.messages,
        d = t.deliveries,
    );
    conn.query_row(&sql, params![topic, group, id], |r| r.get(0)).map_err(db_err)
}

/// Removes messages every group of their topic acknowledged (a topic with no group keeps its
/// messages for the first group to come), and with `retention_ms` any message older than that;
/// then the delivery rows of removed messages. Returns how many messages went.
pub fn sweep(conn: &mut Connection, t: &Tables, retention_ms: Option<i64>) -> Result<usize, StoreError> {
    let (m, g, d) = (&t.messages, &t.groups, &t.deliveries);
    let cutoff = retention_ms.map_or(i64::MIN, |r| now_ms().saturating_sub(r));
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    let n = tx
        .execute(
            &format!(
                "DELETE FROM {m} WHERE published_ms < ?1 OR (
                    EXISTS (SELECT 1 FROM {g} g WHERE g.topic = {m}.topic)
                    AND NOT EXISTS (SELECT 1 FROM {g} g WHERE g.topic = {m}.topic AND NOT EXISTS (
                        SELECT 1 FROM {d} d WHERE d.grp = g.grp AND d.message_id = {m}.id AND d.state = {ACKED})))"
            ),
            params![cutoff],
        )
        .map_err(db_err)?;
    if n > 0 {
        tx.execute(&format!("DELETE FROM {d} WHERE NOT EXISTS (SELECT 1 FROM {m} m WHERE m.id = {d}.message_id)"), []).map_err(db_err)?;
    }
    tx.commit().map_err(db_err)?;
    Ok(n)
}

/// An in-memory database with topic `ps`'s tables, for the unit tests of this module and claim.rs.
#[cfg(test)]
pub(super) fn test_db() -> (Connection, Tables) {
    let mut c = Connection::open_in_memory().unwrap();
    let t = Tables::new("ps");
    migrate(&mut c, &t).unwrap();
    (c, t)
}

#[cfg(test)]
mod tests {
    use super::super::claim::{claim, settle};
    use super::*;
    use super::test_db as open;

    fn msg(s: &str) -> NewMessage {
        NewMessage { data: s.as_bytes().to_vec(), content_type: None }
    }

    #[test]
    fn a_claim_hides_a_message_from_its_group_only_until_it_ends() {
        let (mut c, t) = open();
        publish(&mut c, &t, "orders", &[msg("a"), msg("b")]).unwrap();
        let first = claim(&mut c, &t, "orders", "g", 1, Some(60_000)).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].data.as_slice(), first[0].delivery_count), (&b"a"[..], 1));
        // Claimed: the next claim of the group takes the next message; another group takes both.
        assert_eq!(claim(&mut c, &t, "orders", "g", 5, Some(60_000)).unwrap().len(), 1);
        assert_eq!(claim(&mut c, &t, "orders", "other", 5, Some(60_000)).unwrap().len(), 2);
        assert!(claim(&mut c, &t, "orders", "g", 5, Some(60_000)).unwrap().is_empty());
        // An expired claim comes back with its count grown.
        let expired = claim(&mut c, &t, "orders", "late", 1, Some(-1)).unwrap();
        let again = claim(&mut c, &t, "orders", "late", 1, Some(60_000)).unwrap();
        assert_eq!((again[0].id, again[0].delivery_count), (expired[0].id, 2));
    }

    #[test]
    fn park_keeps_ack_lets_the_sweep_remove_once_every_group_acked() {
        let (mut c, t) = open();
        join_group(&mut c, &t, "t", "g1").unwrap();
        join_group(&mut c, &t, "t", "g2").unwrap();
        publish(&mut c, &t, "t", &[msg("x")]).unwrap();
        publish(&mut c, &t, "empty", &[msg("nobody")]).unwrap();
        let id = claim(&mut c, &t, "t", "g1", 1, Some(0)).unwrap()[0].id;
        settle(&mut c, &t, "g1", id, Settle::Park).unwrap();
        assert!(claim(&mut c, &t, "t", "g1", 1, Some(0)).unwrap().is_empty(), "a parked message was handed out again");
        assert!(held(&mut c, &t, "t", "g1", id).unwrap());
        claim(&mut c, &t, "t", "g2", 1, Some(0)).unwrap();
        settle(&mut c, &t, "g2", id, Settle::Ack).unwrap();
        assert!(!held(&mut c, &t, "t", "g2", id).unwrap());
        assert_eq!(sweep(&mut c, &t, None).unwrap(), 0, "g1 parked it: it stays");
        settle(&mut c, &t, "g1", id, Settle::Ack).unwrap();
        assert_eq!(sweep(&mut c, &t, None).unwrap(), 1, "only the acknowledged message goes, not the one no group read");
        assert_eq!(sweep(&mut c, &t, Some(-1_000)).unwrap(), 1, "retention removes the rest");
    }
}
