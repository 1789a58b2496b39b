//! Reading the Redis Streams replies `pubsub.redis` uses (`XREADGROUP`, `XCLAIM`, extended
//! `XPENDING`) from raw values, so an unexpected shape is an error naming the command rather
//! than a panic, and deleted entries (a nil entry, or an entry without fields, once the stream
//! was trimmed) are reported apart from live ones.

use std::collections::HashMap;

use ::redis::Value;
use bytes::Bytes;

/// One stream entry as `XREADGROUP`/`XCLAIM` return it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The entry id (`<ms>-<seq>`).
    pub id: String,
    /// The `data` field: the published payload.
    pub data: Bytes,
    /// The `metadata` field: the publish request's metadata as JSON, when present.
    pub metadata: Option<Vec<u8>>,
}

/// A batch read: live entries and the ids of entries the stream no longer has.
#[derive(Debug, Default, PartialEq)]
pub struct Batch {
    /// Entries to deliver.
    pub entries: Vec<Entry>,
    /// Ids still pending whose entry was trimmed away.
    pub gone: Vec<String>,
}

/// One pending entry of extended `XPENDING`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The entry id.
    pub id: String,
    /// How many times it was handed out.
    pub deliveries: u32,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

fn bad(cmd: &str, what: &str) -> String {
    format!("unexpected {cmd} reply: {what}")
}

/// An entry `[id, [field, value, ...]]`; a nil entry or nil fields add to `gone` when the id
/// is known.
fn entry(cmd: &str, v: &Value, batch: &mut Batch) -> Result<(), String> {
    let parts = match v {
        Value::Nil => return Ok(()),
        Value::Array(p) if p.len() == 2 => p,
        _ => return Err(bad(cmd, "an entry is not [id, fields]")),
    };
    let id = text(&parts[0]).ok_or_else(|| bad(cmd, "an entry id is not a string"))?;
    let flat: Vec<&Value> = match &parts[1] {
        Value::Nil => {
            batch.gone.push(id);
            return Ok(());
        }
        Value::Array(f) => f.iter().collect(),
        Value::Map(m) => m.iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => return Err(bad(cmd, "entry fields are not a list")),
    };
    let mut fields: HashMap<String, Vec<u8>> = HashMap::new();
    for pair in flat.chunks(2) {
        if let [k, v] = pair {
            if let (Some(k), Some(v)) = (text(k), bytes(v)) {
                fields.insert(k, v);
            }
        }
    }
    let data = Bytes::from(fields.remove("data").unwrap_or_default());
    batch.entries.push(Entry { id, data, metadata: fields.remove("metadata") });
    Ok(())
}

/// `XREADGROUP ... STREAMS <one stream> >`: nil on timeout, else `[[stream, [entry...]]]` (or a
/// map of stream to entries under RESP3).
pub fn read_group(v: &Value) -> Result<Batch, String> {
    let mut batch = Batch::default();
    let streams: Vec<&Value> = match v {
        Value::Nil => return Ok(batch),
        Value::Array(s) => s
            .iter()
            .map(|s| match s {
                Value::Array(p) if p.len() == 2 => Ok(&p[1]),
                _ => Err(bad("XREADGROUP", "a stream is not [name, entries]")),
            })
            .collect::<Result<_, _>>()?,
        Value::Map(m) => m.iter().map(|(_, e)| e).collect(),
        _ => return Err(bad("XREADGROUP", "not a list of streams")),
    };
    for entries in streams {
        match entries {
            Value::Array(es) => es.iter().try_for_each(|e| entry("XREADGROUP", e, &mut batch))?,
            Value::Nil => {}
            _ => return Err(bad("XREADGROUP", "entries are not a list")),
        }
    }
    Ok(batch)
}

/// `XCLAIM`: a list of entries (nil entries for deleted ones before Redis 7).
pub fn claim(v: &Value) -> Result<Batch, String> {
    let mut batch = Batch::default();
    match v {
        Value::Nil => {}
        Value::Array(es) => es.iter().try_for_each(|e| entry("XCLAIM", e, &mut batch))?,
        _ => return Err(bad("XCLAIM", "not a list of entries")),
    }
    Ok(batch)
}

/// Extended `XPENDING`: `[[id, consumer, idle-ms, deliveries], ...]`.
pub fn pending(v: &Value) -> Result<Vec<Pending>, String> {
    let rows = match v {
        Value::Nil => return Ok(vec![]),
        Value::Array(r) => r,
        _ => return Err(bad("XPENDING", "not a list")),
    };
    rows.iter()
        .map(|r| match r {
            Value::Array(p) if p.len() == 4 => {
                let id = text(&p[0]).ok_or_else(|| bad("XPENDING", "an id is not a string"))?;
                let deliveries = match &p[3] {
                    Value::Int(n) => u32::try_from(*n).unwrap_or(u32::MAX),
                    other => text(other).and_then(|s| s.parse().ok()).ok_or_else(|| bad("XPENDING", "a delivery count is not a number"))?,
                };
                Ok(Pending { id, deliveries })
            }
            _ => Err(bad("XPENDING", "a row is not [id, consumer, idle, deliveries]")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::BulkString(x.as_bytes().to_vec())
    }

    fn e(id: &str, fields: &[(&str, &str)]) -> Value {
        Value::Array(vec![s(id), Value::Array(fields.iter().flat_map(|(k, v)| [s(k), s(v)]).collect())])
    }

    #[test]
    fn reads_a_group_batch() {
        let v = Value::Array(vec![Value::Array(vec![s("t"), Value::Array(vec![e("1-0", &[("data", "a"), ("metadata", "{}")]), e("2-0", &[("data", "b")])])])]);
        let b = read_group(&v).unwrap();
        assert_eq!(b.entries.len(), 2);
        assert_eq!(b.entries[0], Entry { id: "1-0".into(), data: Bytes::from_static(b"a"), metadata: Some(b"{}".to_vec()) });
        assert_eq!(b.entries[1].metadata, None);
        assert_eq!(read_group(&Value::Nil).unwrap(), Batch::default());
    }

    #[test]
    fn claim_reports_deleted_entries() {
        let v = Value::Array(vec![e("1-0", &[("data", "a")]), Value::Nil, Value::Array(vec![s("3-0"), Value::Nil])]);
        let b = claim(&v).unwrap();
        assert_eq!(b.entries.len(), 1);
        assert_eq!(b.gone, vec!["3-0".to_string()]);
    }

    #[test]
    fn pending_rows() {
        let v = Value::Array(vec![Value::Array(vec![s("1-0"), s("c"), Value::Int(70000), Value::Int(3)])]);
        assert_eq!(pending(&v).unwrap(), vec![Pending { id: "1-0".into(), deliveries: 3 }]);
    }

    #[test]
    fn odd_shapes_are_errors_not_panics() {
        assert!(read_group(&Value::Int(1)).is_err());
        assert!(read_group(&Value::Array(vec![Value::Int(1)])).is_err());
        assert!(claim(&Value::Array(vec![Value::Array(vec![Value::Int(1), Value::Nil])])).is_err());
        assert!(pending(&Value::Array(vec![Value::Array(vec![s("1-0")])])).is_err());
    }
}
