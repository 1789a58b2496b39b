//! The state conformance suite: one set of checks every state store implementation runs against
//! its real backend (DESIGN.md §5), with a random key prefix per run.
//!
//! Each check belongs to a feature. A feature the store claims always runs (never skipped); a
//! feature it does not claim is checked to fail cleanly with `NotSupported`. `matrix` prints
//! which features ran for which store. How a store answers an ETag it did not issue differs per
//! store exactly as in components-contrib, so each run states its store's `EtagRules` and the
//! suite asserts the error kind, not merely that the write failed.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    Concurrency, DeleteRequest, Feature, GetRequest, Metadata, Query, SetRequest, StateOptions, StateStore,
    StoreError, TransactionOp,
};

/// What happened to one feature's checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Claimed and every check held.
    Passed,
    /// Not claimed; the store refused it cleanly.
    NotClaimed,
    /// A check failed.
    Failed(String),
}

/// One store's results, feature by feature.
#[derive(Debug, Clone)]
pub struct Report {
    /// Store label.
    pub store: String,
    /// (feature, outcome) in suite order.
    pub results: Vec<(&'static str, Outcome)>,
}

impl Report {
    /// Failures, as "feature: reason".
    pub fn failures(&self) -> Vec<String> {
        self.results
            .iter()
            .filter_map(|(f, o)| match o {
                Outcome::Failed(e) => Some(format!("{}: {f}: {e}", self.store)),
                _ => None,
            })
            .collect()
    }
}

/// The kind of ETag error a store reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtagFault {
    /// `StoreError::ETagMismatch` (daprd: 409 / ABORTED).
    Mismatch,
    /// `StoreError::ETagInvalid` (daprd: 400 / INVALID_ARGUMENT).
    Invalid,
}

/// How a store treats ETags, per store as components-contrib v1.18 does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtagRules {
    /// A write with an ETag this store could never have issued (`not-an-etag`).
    pub malformed_set: EtagFault,
    /// A delete with such an ETag.
    pub malformed_delete: EtagFault,
    /// A write or delete carrying an ETag for a key that does not exist succeeds (contrib's Redis
    /// Lua scripts) instead of being a mismatch.
    pub etag_on_missing_key_succeeds: bool,
}

impl EtagRules {
    /// Stores that never parse an ETag (in-memory, SQLite, MySQL): anything else is a mismatch.
    pub const OPAQUE: Self = Self { malformed_set: EtagFault::Mismatch, malformed_delete: EtagFault::Mismatch, etag_on_missing_key_succeeds: false };
    /// PostgreSQL v1 parses its `xmin` ETag (a uint32) on writes and deletes.
    pub const POSTGRES_V1: Self = Self { malformed_set: EtagFault::Invalid, malformed_delete: EtagFault::Invalid, etag_on_missing_key_succeeds: false };
    /// Redis parses the version on a write only; its scripts let an ETag through for a missing key.
    pub const REDIS: Self = Self { malformed_set: EtagFault::Invalid, malformed_delete: EtagFault::Mismatch, etag_on_missing_key_succeeds: true };
}

fn fault_of(e: &StoreError) -> Option<EtagFault> {
    match e {
        StoreError::ETagMismatch(_) => Some(EtagFault::Mismatch),
        StoreError::ETagInvalid(_) => Some(EtagFault::Invalid),
        _ => None,
    }
}

fn expect_fault(what: &str, want: EtagFault, got: Result<(), StoreError>) -> CheckResult {
    match &got {
        Err(e) if fault_of(e) == Some(want) => Ok(()),
        _ => Err(format!("{what} must be {want:?}, got {got:?}")),
    }
}

type CheckResult = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)*) => {
        if !$cond {
            return Err(format!($($msg)*));
        }
    };
}

struct Ctx {
    store: Arc<dyn StateStore>,
    prefix: String,
    rules: EtagRules,
}

impl Ctx {
    fn key(&self, k: &str) -> String {
        format!("{}{k}", self.prefix)
    }

    fn set(&self, k: &str, v: &str) -> SetRequest {
        SetRequest { key: self.key(k), value: Bytes::from(v.to_string()), is_json: true, ..Default::default() }
    }

    async fn get(&self, k: &str) -> Result<Option<super::StoredItem>, String> {
        self.store.get(GetRequest { key: self.key(k), ..Default::default() }).await.map_err(|e| e.to_string())
    }

    async fn put(&self, req: SetRequest) -> CheckResult {
        self.store.set(req).await.map_err(|e| e.to_string())
    }
}

async fn crud(c: &Ctx) -> CheckResult {
    ensure!(c.get("missing").await?.is_none(), "a missing key must read as none");
    c.put(c.set("a", r#"{"n":1}"#)).await?;
    let got = c.get("a").await?.ok_or("saved key not found")?;
    ensure!(got.data == Bytes::from_static(br#"{"n":1}"#), "read back {:?}", got.data);
    c.put(c.set("a", r#"{"n":2}"#)).await?;
    let got = c.get("a").await?.ok_or("overwritten key not found")?;
    ensure!(got.data == Bytes::from_static(br#"{"n":2}"#), "overwrite read back {:?}", got.data);
    let bin = SetRequest { key: c.key("bin"), value: Bytes::from_static(&[0, 159, 146, 150, 255]), is_json: false, ..Default::default() };
    c.put(bin).await?;
    let got = c.get("bin").await?.ok_or("binary key not found")?;
    ensure!(got.data.as_ref() == [0, 159, 146, 150, 255], "binary value changed: {:?}", got.data);
    c.store.delete(DeleteRequest { key: c.key("a"), ..Default::default() }).await.map_err(|e| e.to_string())?;
    ensure!(c.get("a").await?.is_none(), "deleted key still readable");
    c.store.delete(DeleteRequest { key: c.key("never"), ..Default::default() }).await.map_err(|e| format!("deleting a missing key must succeed: {e}"))?;
    Ok(())
}

async fn bulk(c: &Ctx) -> CheckResult {
    c.put(c.set("b1", "1")).await?;
    c.put(c.set("b2", "2")).await?;
    let reqs = ["b1", "nope", "b2"].iter().map(|k| GetRequest { key: c.key(k), ..Default::default() }).collect();
    let items = c.store.bulk_get(reqs).await.map_err(|e| e.to_string())?;
    ensure!(items.len() == 3, "bulk get returned {} items for 3 keys", items.len());
    ensure!(items[0].key == c.key("b1") && items[0].item.as_ref().is_some_and(|i| i.data == "1"), "b1 wrong: {:?}", items[0]);
    ensure!(items[1].item.is_none() && items[1].error.is_none(), "missing key must be empty: {:?}", items[1]);
    ensure!(items[2].item.as_ref().is_some_and(|i| i.data == "2"), "b2 wrong: {:?}", items[2]);
    Ok(())
}

async fn etag(c: &Ctx) -> CheckResult {
    c.put(c.set("e", "1")).await?;
    let first = c.get("e").await?.and_then(|i| i.etag).ok_or("no etag returned")?;
    let mut upd = c.set("e", "2");
    upd.etag = Some(first.clone());
    c.put(upd).await.map_err(|e| format!("update with the current etag failed: {e}"))?;
    let second = c.get("e").await?.and_then(|i| i.etag).ok_or("no etag after update")?;
    ensure!(second != first, "etag did not change on write");
    let mut stale = c.set("e", "3");
    stale.etag = Some(first.clone());
    match c.store.set(stale).await {
        Err(StoreError::ETagMismatch(_)) => {}
        other => return Err(format!("stale etag write must be a mismatch, got {other:?}")),
    }
    let bogus = || Some("not-an-etag".to_string());
    expect_fault("a write with a malformed etag", c.rules.malformed_set, c.store.set(SetRequest { etag: bogus(), ..c.set("e", "4") }).await)?;
    expect_fault(
        "a delete with a malformed etag",
        c.rules.malformed_delete,
        c.store.delete(DeleteRequest { key: c.key("e"), etag: bogus(), ..Default::default() }).await,
    )?;
    // Well-formed for this store but never issued for this key: a number always, a UUID where
    // the store does not parse ETags.
    let mut others = vec!["4294967295".to_string()];
    if c.rules.malformed_set == EtagFault::Mismatch {
        others.push(uuid::Uuid::new_v4().to_string());
    }
    for other in others {
        expect_fault("a write with another well-formed etag", EtagFault::Mismatch, c.store.set(SetRequest { etag: Some(other.clone()), ..c.set("e", "5") }).await)?;
    }
    match c.store.delete(DeleteRequest { key: c.key("e"), etag: Some(first), ..Default::default() }).await {
        Err(StoreError::ETagMismatch(_)) => {}
        other => return Err(format!("stale etag delete must be a mismatch, got {other:?}")),
    }
    c.store
        .delete(DeleteRequest { key: c.key("e"), etag: Some(second), ..Default::default() })
        .await
        .map_err(|e| format!("delete with the current etag failed: {e}"))?;
    ensure!(c.get("e").await?.is_none(), "etag delete left the key");
    etag_on_missing_key(c).await
}

/// An ETag given for a key that does not exist (never written, or deleted).
async fn etag_on_missing_key(c: &Ctx) -> CheckResult {
    let fw = StateOptions { concurrency: Concurrency::FirstWrite, ..Default::default() };
    let tag = if c.rules.malformed_set == EtagFault::Invalid { "12345".to_string() } else { uuid::Uuid::new_v4().to_string() };
    for (label, options) in [("last-write", StateOptions::default()), ("first-write", fw)] {
        let key = format!("absent-{label}");
        let set = c.store.set(SetRequest { etag: Some(tag.clone()), options, ..c.set(&key, "1") }).await;
        let del = c.store.delete(DeleteRequest { key: c.key(&format!("gone-{label}")), etag: Some(tag.clone()), options, ..Default::default() }).await;
        if c.rules.etag_on_missing_key_succeeds {
            set.map_err(|e| format!("{label} write with an etag on a missing key must succeed here, got {e}"))?;
            del.map_err(|e| format!("{label} delete with an etag on a missing key must succeed here, got {e}"))?;
        } else {
            expect_fault(&format!("a {label} write with an etag on a missing key"), EtagFault::Mismatch, set)?;
            expect_fault(&format!("a {label} delete with an etag on a missing key"), EtagFault::Mismatch, del)?;
            ensure!(c.get(&key).await?.is_none(), "a refused write with an etag created {key}");
        }
    }
    Ok(())
}

async fn first_write(c: &Ctx) -> CheckResult {
    let fw = StateOptions { concurrency: Concurrency::FirstWrite, ..Default::default() };
    c.put(SetRequest { options: fw, ..c.set("fw", "1") }).await.map_err(|e| format!("first write of a new key failed: {e}"))?;
    match c.store.set(SetRequest { options: fw, ..c.set("fw", "2") }).await {
        Err(StoreError::ETagMismatch(_)) => {}
        other => return Err(format!("first-write without etag on an existing key must be a mismatch, got {other:?}")),
    }
    let got = c.get("fw").await?.ok_or("first-write key vanished")?;
    ensure!(got.data == "1", "value changed by a refused write: {:?}", got.data);
    Ok(())
}

async fn ttl(c: &Ctx) -> CheckResult {
    let md = |v: &str| Metadata::from([(super::ttl::TTL_KEY.to_string(), v.to_string())]);
    c.put(SetRequest { metadata: md("1"), ..c.set("t", "1") }).await?;
    c.put(SetRequest { metadata: md("3600"), ..c.set("long", "1") }).await?;
    let long = c.get("long").await?.ok_or("ttl key not readable")?;
    ensure!(long.metadata.contains_key(super::ttl::EXPIRE_KEY), "no ttlExpireTime in {:?}", long.metadata);
    match c.store.set(SetRequest { metadata: md("abc"), ..c.set("bad", "1") }).await {
        Err(StoreError::InvalidRequest(_)) => {}
        other => return Err(format!("non-numeric ttl must be rejected, got {other:?}")),
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.get("t").await?.is_some() {
        ensure!(Instant::now() < deadline, "key with a 1s ttl still readable after 5s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(c.get("long").await?.is_some(), "long ttl key expired early");
    Ok(())
}

async fn transactions(c: &Ctx) -> CheckResult {
    c.put(c.set("tx-del", "x")).await?;
    let ops = vec![
        TransactionOp::Set(c.set("tx1", "1")),
        TransactionOp::Set(c.set("tx2", "2")),
        TransactionOp::Delete(DeleteRequest { key: c.key("tx-del"), ..Default::default() }),
    ];
    c.store.transact(ops, Metadata::new()).await.map_err(|e| e.to_string())?;
    ensure!(c.get("tx1").await?.is_some() && c.get("tx2").await?.is_some(), "transaction writes missing");
    ensure!(c.get("tx-del").await?.is_none(), "transaction delete not applied");
    // Atomicity: a failing operation (stale etag) must leave every other operation unapplied.
    let stale = uuid::Uuid::new_v4().to_string();
    let ops = vec![
        TransactionOp::Set(c.set("tx3", "3")),
        TransactionOp::Delete(DeleteRequest { key: c.key("tx1"), ..Default::default() }),
        TransactionOp::Set(SetRequest { etag: Some(stale), ..c.set("tx2", "changed") }),
    ];
    ensure!(c.store.transact(ops, Metadata::new()).await.is_err(), "a transaction with a stale etag must fail");
    ensure!(c.get("tx3").await?.is_none(), "failed transaction applied a write");
    ensure!(c.get("tx1").await?.is_some(), "failed transaction applied a delete");
    ensure!(c.get("tx2").await?.is_some_and(|i| i.data == "2"), "failed transaction changed a value");
    // Inside a transaction an ETag is judged as outside: a malformed one is this store's fault kind.
    let ops = vec![TransactionOp::Set(SetRequest { etag: Some("not-an-etag".into()), ..c.set("tx2", "bogus") })];
    expect_fault("a transaction write with a malformed etag", c.rules.malformed_set, c.store.transact(ops, Metadata::new()).await)?;
    let ops = vec![TransactionOp::Delete(DeleteRequest { key: c.key("tx2"), etag: Some("not-an-etag".into()), ..Default::default() })];
    expect_fault("a transaction delete with a malformed etag", c.rules.malformed_delete, c.store.transact(ops, Metadata::new()).await)?;
    ensure!(c.get("tx2").await?.is_some_and(|i| i.data == "2"), "a refused transaction changed a value");
    Ok(())
}

async fn query(c: &Ctx) -> CheckResult {
    for (k, v) in [("q1", r#"{"state":"CA","n":1}"#), ("q2", r#"{"state":"WA","n":2}"#), ("q3", r#"{"state":"CA","n":3}"#)] {
        c.put(c.set(k, v)).await?;
    }
    let q = Query::parse(br#"{"filter":{"EQ":{"state":"CA"}},"sort":[{"key":"n","order":"DESC"}],"page":{"limit":1}}"#).map_err(|e| e.to_string())?;
    let page = c.store.query(&c.prefix, q, Metadata::new()).await.map_err(|e| e.to_string())?;
    ensure!(page.results.len() == 1 && page.results[0].key == c.key("q3"), "first page wrong: {:?}", page.results);
    let token = page.token.ok_or("no token for the next page")?;
    let q = Query::parse(format!(r#"{{"filter":{{"EQ":{{"state":"CA"}}}},"sort":[{{"key":"n","order":"DESC"}}],"page":{{"limit":1,"token":"{token}"}}}}"#).as_bytes())
        .map_err(|e| e.to_string())?;
    let page = c.store.query(&c.prefix, q, Metadata::new()).await.map_err(|e| e.to_string())?;
    ensure!(page.results.len() == 1 && page.results[0].key == c.key("q1"), "second page wrong: {:?}", page.results);
    Ok(())
}

async fn refuses<T: std::fmt::Debug>(fut: impl std::future::Future<Output = Result<T, StoreError>>) -> Outcome {
    match fut.await {
        Err(StoreError::NotSupported(_)) => Outcome::NotClaimed,
        other => Outcome::Failed(format!("unclaimed feature must answer NotSupported, got {other:?}")),
    }
}

fn outcome(r: CheckResult) -> Outcome {
    r.map_or_else(Outcome::Failed, |_| Outcome::Passed)
}

/// Runs the suite against `store`, labelled `label`, whose ETags follow `rules`.
pub async fn run(label: &str, store: Arc<dyn StateStore>, rules: EtagRules) -> Report {
    let prefix = format!("conformance-{}||", uuid::Uuid::new_v4().simple());
    let c = Ctx { store: Arc::clone(&store), prefix, rules };
    let has = |f: Feature| store.features().contains(&f);
    let mut results = vec![("crud", outcome(crud(&c).await)), ("bulk get", outcome(bulk(&c).await))];
    if has(Feature::ETag) {
        results.push(("etag", outcome(etag(&c).await)));
        results.push(("first-write", outcome(first_write(&c).await)));
    } else {
        results.push(("etag", Outcome::NotClaimed));
        results.push(("first-write", Outcome::NotClaimed));
    }
    results.push(("ttl", if has(Feature::Ttl) { outcome(ttl(&c).await) } else { Outcome::NotClaimed }));
    results.push((
        "transactions",
        if has(Feature::Transactional) { outcome(transactions(&c).await) } else { refuses(store.transact(vec![], Metadata::new())).await },
    ));
    results.push((
        "query",
        if has(Feature::QueryApi) { outcome(query(&c).await) } else { refuses(store.query(&c.prefix, Query::default(), Metadata::new())).await },
    ));
    Report { store: label.to_string(), results }
}

/// A feature-by-store table: `pass`, `FAIL`, or `-` (not claimed, refused cleanly).
pub fn matrix(reports: &[Report]) -> String {
    let mut out = String::new();
    let Some(first) = reports.first() else { return out };
    let _ = write!(out, "{:<16}", "feature");
    for r in reports {
        let _ = write!(out, "{:<18}", r.store);
    }
    out.push('\n');
    for (i, (feature, _)) in first.results.iter().enumerate() {
        let _ = write!(out, "{feature:<16}");
        for r in reports {
            let cell = match r.results.get(i).map(|(_, o)| o) {
                Some(Outcome::Passed) => "pass",
                Some(Outcome::NotClaimed) => "-",
                Some(Outcome::Failed(_)) => "FAIL",
                None => "?",
            };
            let _ = write!(out, "{cell:<18}");
        }
        out.push('\n');
    }
    out
}
