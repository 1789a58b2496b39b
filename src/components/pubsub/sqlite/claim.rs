//! The consume path's SQL: claiming the messages a group may have now and recording the
//! consumer's outcomes. Kept apart from the schema because it is the hot path: every statement
//! here is an index seek (`prepare_cached`, so parsed once per connection), and one transaction
//! carries a whole batch of outcomes plus the next claim, so a busy subscription pays one write
//! per round rather than two per message.
//!
//! Where a group's next messages come from (see the layout in `store.rs`):
//! - new ones: the topic's messages above the group's `claimed_to` cursor, in id order;
//! - due ones: its pending delivery rows whose claim ended or whose retry time came
//!   (`visible_ms <= now`), through the partial index of pending rows.
//!
//! The two lists are merged by id, so a batch holds the lowest ids the group may have: in
//! `single` mode messages still arrive in publish order.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::store::{now_ms, Claimed, Settle, Tables, ACKED, PARKED, PENDING};
use crate::components::sqlite_pool::db_err;
use crate::components::state::StoreError;

/// Hands up to `limit` messages of `topic` that `group` may have now, claimed until
/// `now + lease_ms` (`None`: claimed for good, until settled). The tests' view of a claim; the
/// consumer always goes through [`settle_and_claim`].
#[cfg(test)]
pub fn claim(conn: &mut Connection, t: &Tables, topic: &str, group: &str, limit: usize, lease_ms: Option<i64>) -> Result<Vec<Claimed>, StoreError> {
    settle_and_claim(conn, t, topic, group, &[], limit, lease_ms)
}

/// Records `outcomes` of `group`, then claims up to `limit` messages, in one transaction: the
/// outcomes and the claim commit together or not at all (a lost outcome leaves the claim to
/// expire: the message comes again, at least once).
pub fn settle_and_claim(
    conn: &mut Connection,
    t: &Tables,
    topic: &str,
    group: &str,
    outcomes: &[(i64, Settle)],
    limit: usize,
    lease_ms: Option<i64>,
) -> Result<Vec<Claimed>, StoreError> {
    // Nothing to record: a cheap read first, so an idle poll takes no write lock.
    if outcomes.is_empty() && (limit == 0 || !claimable(conn, t, topic, group)?) {
        return Ok(Vec::new());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    for &(id, how) in outcomes {
        settle_one(&tx, t, group, id, how)?;
    }
    let out = if limit == 0 { Vec::new() } else { claim_in(&tx, t, topic, group, limit, lease_ms)? };
    tx.commit().map_err(db_err)?;
    Ok(out)
}

/// Records `group`'s decision about message `id` (its own transaction; the tests' view).
#[cfg(test)]
pub fn settle(conn: &mut Connection, t: &Tables, group: &str, id: i64, how: Settle) -> Result<(), StoreError> {
    settle_one(conn, t, group, id, how)
}

/// Callers order by `+d.message_id`: the unary plus keeps the planner from walking the primary
/// key (every row of the group, acknowledged ones included) just to skip the sort of the few
/// due rows.
fn due_sql(t: &Tables, select: &str, tail: &str) -> String {
    format!(
        "SELECT {select} FROM {d} d JOIN {m} m ON m.id = d.message_id
         WHERE d.grp = ?1 AND d.state = {PENDING} AND d.visible_ms <= ?3 AND m.topic = ?2 {tail}",
        m = t.messages,
        d = t.deliveries,
    )
}

/// `?4`: the group's cursor. The `NOT EXISTS` only matters for a group with no `groups` row (the
/// store's own tests claim without joining); with one, nothing above the cursor has a row.
fn new_sql(t: &Tables, select: &str, tail: &str) -> String {
    format!(
        "SELECT {select} FROM {m} m WHERE m.topic = ?2 AND m.id > ?4
         AND NOT EXISTS (SELECT 1 FROM {d} d WHERE d.grp = ?1 AND d.message_id = m.id) {tail}",
        m = t.messages,
        d = t.deliveries,
    )
}

fn cursor(conn: &Connection, t: &Tables, topic: &str, group: &str) -> Result<i64, StoreError> {
    let sql = format!("SELECT claimed_to FROM {} WHERE topic = ?1 AND grp = ?2", t.groups);
    let c: Option<i64> = conn.prepare_cached(&sql).and_then(|mut s| s.query_row(params![topic, group], |r| r.get(0)).optional()).map_err(db_err)?;
    Ok(c.unwrap_or(0))
}

/// Whether `group` has anything to claim on `topic` now (read only).
fn claimable(conn: &Connection, t: &Tables, topic: &str, group: &str) -> Result<bool, StoreError> {
    let from = cursor(conn, t, topic, group)?;
    let sql = format!("SELECT EXISTS ({}) OR EXISTS ({})", due_sql(t, "1", ""), new_sql(t, "1", ""));
    conn.prepare_cached(&sql).and_then(|mut s| s.query_row(params![group, topic, now_ms(), from], |r| r.get(0))).map_err(db_err)
}

fn claim_in(conn: &Connection, t: &Tables, topic: &str, group: &str, limit: usize, lease_ms: Option<i64>) -> Result<Vec<Claimed>, StoreError> {
    let now = now_ms();
    let from = cursor(conn, t, topic, group)?;
    let row = |r: &rusqlite::Row<'_>| -> rusqlite::Result<Claimed> {
        let count: i64 = r.get(3)?;
        Ok(Claimed { id: r.get(0)?, data: r.get(1)?, content_type: r.get(2)?, delivery_count: count.saturating_add(1).clamp(1, u32::MAX as i64) as u32 })
    };
    let cols = "m.id, m.data, m.content_type";
    let mut out: Vec<Claimed> = Vec::with_capacity(limit);
    {
        let mut due = conn.prepare_cached(&due_sql(t, &format!("{cols}, d.delivery_count"), "ORDER BY +d.message_id LIMIT ?4")).map_err(db_err)?;
        for r in due.query_map(params![group, topic, now, limit as i64], row).map_err(db_err)? {
            out.push(r.map_err(db_err)?);
        }
        let mut new = conn.prepare_cached(&new_sql(t, &format!("{cols}, 0"), "ORDER BY m.id LIMIT ?5")).map_err(db_err)?;
        // `?3` (now) is unused by this query; bound so the numbering matches `claimable`'s.
        for r in new.query_map(params![group, topic, now, from, limit as i64], row).map_err(db_err)? {
            out.push(r.map_err(db_err)?);
        }
    }
    out.sort_by_key(|c| c.id);
    out.truncate(limit);
    let visible = lease_ms.map_or(i64::MAX, |l| now.saturating_add(l));
    let mut mark = conn
        .prepare_cached(&format!(
            "INSERT INTO {} (grp, message_id, state, delivery_count, visible_ms) VALUES (?1, ?2, {PENDING}, ?3, ?4)
             ON CONFLICT (grp, message_id) DO UPDATE SET delivery_count = excluded.delivery_count, visible_ms = excluded.visible_ms",
            t.deliveries
        ))
        .map_err(db_err)?;
    for c in &out {
        mark.execute(params![group, c.id, c.delivery_count, visible]).map_err(db_err)?;
    }
    // Due ids are at or below the cursor, so the highest id above it is the last new one taken;
    // every new message below that one was taken in this batch too (both lists are id-ordered).
    if let Some(top) = out.iter().map(|c| c.id).filter(|&id| id > from).max() {
        conn.prepare_cached(&format!("UPDATE {} SET claimed_to = ?3 WHERE topic = ?1 AND grp = ?2 AND claimed_to < ?3", t.groups))
            .and_then(|mut s| s.execute(params![topic, group, top]))
            .map_err(db_err)?;
    }
    Ok(out)
}

fn settle_one(conn: &Connection, t: &Tables, group: &str, id: i64, how: Settle) -> Result<(), StoreError> {
    let d = &t.deliveries;
    let (sql, visible) = match how {
        Settle::Ack => (format!("UPDATE {d} SET state = {ACKED} WHERE grp = ?1 AND message_id = ?2 AND ?3 >= 0"), 0),
        Settle::Park => (format!("UPDATE {d} SET state = {PARKED} WHERE grp = ?1 AND message_id = ?2 AND ?3 >= 0"), 0),
        Settle::RetryAt(at) => (format!("UPDATE {d} SET visible_ms = ?3 WHERE grp = ?1 AND message_id = ?2 AND state = {PENDING}"), at),
        // Not handed out after all: the claim did not count as a delivery.
        Settle::Release => (
            format!("UPDATE {d} SET visible_ms = ?3, delivery_count = MAX(delivery_count - 1, 0) WHERE grp = ?1 AND message_id = ?2 AND state = {PENDING}"),
            0,
        ),
    };
    conn.prepare_cached(&sql).and_then(|mut s| s.execute(params![group, id, visible])).map_err(db_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::pubsub::sqlite::store::{held, join_group, migrate, publish, test_db as open, NewMessage};

    fn publish_n(c: &mut Connection, t: &Tables, topic: &str, n: usize) {
        let msgs: Vec<NewMessage> = (0..n).map(|i| NewMessage { data: format!("m{i}").into_bytes(), content_type: None }).collect();
        publish(c, t, topic, &msgs).unwrap();
    }

    fn ids(c: &[Claimed]) -> Vec<i64> {
        c.iter().map(|c| c.id).collect()
    }

    #[test]
    fn claims_are_index_seeks_not_walks_over_settled_messages() {
        // The consume path's cost must not grow with the acknowledged rows the sweep has not
        // removed yet (issue 11: a scan from the topic's first message made each claim O(backlog)).
        let (c, t) = open();
        for sql in [
            due_sql(&t, "m.id", "ORDER BY +d.message_id LIMIT ?4"),
            new_sql(&t, "m.id", "ORDER BY m.id LIMIT ?5"),
            format!("SELECT EXISTS ({}) OR EXISTS ({})", due_sql(&t, "1", ""), new_sql(&t, "1", "")),
        ] {
            let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let unbound = rusqlite::params_from_iter(std::iter::repeat_n(0, stmt.parameter_count()));
            let plan: Vec<String> = stmt.query_map(unbound, |r| r.get::<_, String>(3)).unwrap().map(|r| r.unwrap()).collect();
            assert!(plan.iter().all(|step| !step.starts_with("SCAN") || step == "SCAN CONSTANT ROW"), "a claim query walks a table: {plan:#?}\n{sql}");
            assert!(plan.iter().any(|step| step.contains("idx_ps_deliveries_due") || step.contains("idx_ps_messages_topic")), "{plan:#?}");
        }
    }

    #[test]
    fn one_transaction_records_outcomes_then_claims_the_lowest_ids_due_or_new() {
        let (mut c, t) = open();
        join_group(&mut c, &t, "t", "g").unwrap();
        publish_n(&mut c, &t, "t", 6);
        let first = claim(&mut c, &t, "t", "g", 3, Some(60_000)).unwrap();
        assert_eq!(ids(&first), vec![1, 2, 3]);
        let outcomes = [(1, Settle::Ack), (2, Settle::RetryAt(0)), (3, Settle::Park)];
        let next = settle_and_claim(&mut c, &t, "t", "g", &outcomes, 3, Some(60_000)).unwrap();
        assert_eq!(ids(&next), vec![2, 4, 5], "the retried message (due now) comes first, then new ones in order");
        assert_eq!(next[0].delivery_count, 2);
        assert!(!held(&mut c, &t, "t", "g", 1).unwrap(), "the ack was not recorded");
        assert!(held(&mut c, &t, "t", "g", 3).unwrap(), "a parked message is kept");
        assert_eq!(ids(&claim(&mut c, &t, "t", "g", 5, Some(60_000)).unwrap()), vec![6]);
        assert!(claim(&mut c, &t, "t", "g", 5, Some(60_000)).unwrap().is_empty());
        // Outcomes alone (no free slot) are recorded too.
        assert!(settle_and_claim(&mut c, &t, "t", "g", &[(6, Settle::Ack)], 0, None).unwrap().is_empty());
        assert!(!held(&mut c, &t, "t", "g", 6).unwrap());
    }

    #[test]
    fn a_file_made_before_the_cursor_gets_it_from_the_delivery_rows() {
        let mut c = Connection::open_in_memory().unwrap();
        let t = Tables::new("ps");
        // The schema of the previous version: no `claimed_to`, no partial index.
        c.execute_batch(
            "CREATE TABLE ps_messages (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, data BLOB NOT NULL, content_type TEXT, published_ms INTEGER NOT NULL);
             CREATE TABLE ps_groups (topic TEXT NOT NULL, grp TEXT NOT NULL, created_ms INTEGER NOT NULL, PRIMARY KEY (topic, grp));
             CREATE TABLE ps_deliveries (grp TEXT NOT NULL, message_id INTEGER NOT NULL, state INTEGER NOT NULL, delivery_count INTEGER NOT NULL, visible_ms INTEGER NOT NULL, PRIMARY KEY (grp, message_id)) WITHOUT ROWID;
             INSERT INTO ps_groups VALUES ('t', 'g', 0), ('t', 'late', 0);
             INSERT INTO ps_messages (topic, data, published_ms) VALUES ('t', x'00', 0), ('t', x'01', 0), ('t', x'02', 0), ('t', x'03', 0);
             INSERT INTO ps_deliveries VALUES ('g', 1, 1, 1, 0), ('g', 2, 0, 1, 9223372036854775807);",
        )
        .unwrap();
        migrate(&mut c, &t).unwrap();
        migrate(&mut c, &t).unwrap();
        assert_eq!(cursor(&c, &t, "t", "g").unwrap(), 2);
        assert_eq!(cursor(&c, &t, "t", "late").unwrap(), 0);
        assert_eq!(ids(&claim(&mut c, &t, "t", "g", 10, Some(60_000)).unwrap()), vec![3, 4], "acked 1 and claimed 2 stay out");
        assert_eq!(ids(&claim(&mut c, &t, "t", "late", 10, Some(60_000)).unwrap()), vec![1, 2, 3, 4]);
        assert_eq!(cursor(&c, &t, "t", "late").unwrap(), 4);
    }
}
