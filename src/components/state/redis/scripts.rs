//! The Lua scripts behind `state.redis`, and how operations are encoded for them.
//!
//! Layout (Dapr's): each key is a hash with `data` (the value bytes as given) and `version` (an
//! integer bumped by `HINCRBY` on every write; the ETag is its decimal form). One write script
//! serves single writes, deletes and transactions alike: it checks every ETag first and only then
//! applies every operation, so a transaction with one stale ETag changes nothing. As contrib's
//! scripts, an ETag is compared only with a version that exists: an ETag for a missing key (or a
//! hash without `version`) lets the write or delete through. A write's ETag is parsed as an
//! integer first (contrib's `strconv.Atoi`: not one is invalid); a delete's never is, it is
//! compared as given, and `0` means "no ETag" for both as in contrib. Redis runs a
//! script atomically, which is what makes both phases one step. One read script answers one or
//! many keys in a round trip with each key's TTL, and reads a plain string key (pre-hash Dapr
//! data) as a value without an ETag, as Dapr's store falls back to `GET`.

use bytes::Bytes;
use redis::Script;

use super::super::{Concurrency, DeleteRequest, SetRequest, StoreError};

/// Error code the write script answers when an ETag check fails; the detail is the 1-based op.
pub const MISMATCH_CODE: &str = "ETAG_MISMATCH";

const READ: &str = r#"
local out = {}
for i, key in ipairs(KEYS) do
  local t = redis.call("TYPE", key)["ok"]
  if t == "hash" then
    local data = redis.call("HGET", key, "data")
    local version = redis.call("HGET", key, "version")
    if data and version then
      out[i] = {1, data, version, redis.call("TTL", key)}
    else
      out[i] = {3, "", "", -1}
    end
  elseif t == "string" then
    out[i] = {2, redis.call("GET", key), "", redis.call("TTL", key)}
  else
    out[i] = {0, "", "", -2}
  end
end
return out
"#;

const WRITE: &str = r#"
local n = #KEYS
for i = 1, n do
  local key, kind, etag = KEYS[i], ARGV[4*i-3], ARGV[4*i-2]
  local t = redis.call("TYPE", key)["ok"]
  if etag ~= "" then
    local current = false
    if t == "hash" then current = redis.call("HGET", key, "version") end
    if current and current ~= "" and current ~= etag then return redis.error_reply("ETAG_MISMATCH " .. i) end
  elseif kind == "F" and t ~= "none" then
    return redis.error_reply("ETAG_MISMATCH " .. i)
  end
end
for i = 1, n do
  local key, kind, ttl = KEYS[i], ARGV[4*i-3], tonumber(ARGV[4*i-1])
  if kind == "D" then
    redis.call("DEL", key)
  else
    local t = redis.call("TYPE", key)["ok"]
    if t ~= "hash" and t ~= "none" then redis.call("DEL", key) end
    redis.call("HSET", key, "data", ARGV[4*i])
    redis.call("HINCRBY", key, "version", 1)
    if ttl > 0 then redis.call("EXPIRE", key, ttl) else redis.call("PERSIST", key) end
  end
end
return n
"#;

/// The two scripts, hashed once (`EVALSHA`, falling back to `EVAL` after a server restart).
pub struct Scripts {
    /// Reads keys.
    pub read: Script,
    /// Checks then applies writes and deletes.
    pub write: Script,
}

impl Scripts {
    /// Hashes the scripts.
    pub fn new() -> Self {
        Self { read: Script::new(READ), write: Script::new(WRITE) }
    }
}

/// One operation as the write script takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOp {
    /// Full key.
    pub key: String,
    /// `S` set, `F` first-write set (the key must not exist unless an ETag is given), `D` delete.
    pub kind: &'static str,
    /// Normalised ETag, empty for none.
    pub etag: String,
    /// Seconds to live; zero or less persists.
    pub ttl: i64,
    /// Value bytes.
    pub data: Bytes,
}

/// A write's ETag as contrib's `parseETag` reads it: a decimal integer (sign allowed, as Go's
/// `strconv.Atoi`), `0` meaning none; anything else is invalid.
fn set_etag(raw: Option<&str>) -> Result<String, StoreError> {
    match raw.filter(|e| !e.is_empty()) {
        None => Ok(String::new()),
        Some(e) => match e.parse::<i64>() {
            Ok(0) => Ok(String::new()),
            Ok(v) => Ok(v.to_string()),
            Err(_) => Err(StoreError::ETagInvalid(e.to_string())),
        },
    }
}

/// A delete's ETag, never parsed (contrib passes it to the script as given); `0` means none.
fn delete_etag(raw: Option<&str>) -> String {
    raw.filter(|e| *e != "0").unwrap_or_default().to_string()
}

fn require_key(key: &str, what: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidRequest(format!("missing key in {what} operation")));
    }
    Ok(())
}

/// Encodes a set; `default_ttl` applies unless the request carries `ttlInSeconds` (`-1` persists).
pub fn set_op(req: SetRequest, default_ttl: Option<i64>) -> Result<WriteOp, StoreError> {
    require_key(&req.key, "set")?;
    let ttl = if req.metadata.get(super::super::ttl::TTL_KEY).is_some_and(|v| !v.is_empty()) { req.ttl()? } else { default_ttl };
    let kind = if req.options.concurrency == Concurrency::FirstWrite { "F" } else { "S" };
    Ok(WriteOp { etag: set_etag(req.etag.as_deref())?, key: req.key, kind, ttl: ttl.unwrap_or(0), data: req.value })
}

/// Encodes a delete.
pub fn delete_op(req: DeleteRequest) -> Result<WriteOp, StoreError> {
    require_key(&req.key, "delete")?;
    Ok(WriteOp { etag: delete_etag(req.etag.as_deref()), key: req.key, kind: "D", ttl: 0, data: Bytes::new() })
}

/// One key as the read script answers it: `(kind, data, version, ttl)`.
pub type ReadRow = (i64, Vec<u8>, String, i64);

/// Row kinds of the read script.
pub mod row {
    /// No such key.
    pub const MISSING: i64 = 0;
    /// A Dapr hash.
    pub const HASH: i64 = 1;
    /// A plain string value (no ETag).
    pub const STRING: i64 = 2;
    /// A hash without `data` or `version`.
    pub const BROKEN: i64 = 3;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::state::{Metadata, StateOptions};

    #[test]
    fn write_etags_are_integers_and_delete_etags_are_never_parsed() {
        assert_eq!(set_etag(None).unwrap(), "");
        assert_eq!(set_etag(Some("")).unwrap(), "");
        assert_eq!(set_etag(Some("0")).unwrap(), "");
        assert_eq!(set_etag(Some("007")).unwrap(), "7");
        assert_eq!(set_etag(Some("-1")).unwrap(), "-1");
        assert!(matches!(set_etag(Some("abc")), Err(StoreError::ETagInvalid(_))));
        assert!(matches!(set_etag(Some(" 7")), Err(StoreError::ETagInvalid(_))));
        let del = |e: &str| delete_op(DeleteRequest { key: "k".into(), etag: Some(e.into()), ..Default::default() }).unwrap().etag;
        assert_eq!(del("abc"), "abc");
        assert_eq!(del("007"), "007");
        assert_eq!(del("0"), "");
    }

    #[test]
    fn request_ttl_overrides_the_default() {
        let md = |v: &str| Metadata::from([("ttlInSeconds".to_string(), v.to_string())]);
        let req = |m: Metadata| SetRequest { key: "k".into(), metadata: m, ..Default::default() };
        assert_eq!(set_op(req(Metadata::new()), Some(60)).unwrap().ttl, 60);
        assert_eq!(set_op(req(md("5")), Some(60)).unwrap().ttl, 5);
        assert_eq!(set_op(req(md("-1")), Some(60)).unwrap().ttl, 0);
        assert!(matches!(set_op(req(md("x")), None), Err(StoreError::InvalidRequest(_))));
        let fw = SetRequest { options: StateOptions { concurrency: Concurrency::FirstWrite, ..Default::default() }, ..req(Metadata::new()) };
        assert_eq!(set_op(fw, None).unwrap().kind, "F");
        assert!(set_op(SetRequest::default(), None).is_err());
    }
}
