//! How a value sits in Dapr's `value jsonb, isbinary boolean` columns, how an `xmin` ETag is
//! read and checked, and how driver errors become `StoreError`s.
//!
//! JSON documents are stored as themselves (`isbinary = false`); any other bytes as a JSON string
//! of their base64 (`isbinary = true`), exactly as Dapr's component writes them. Values travel as
//! text (`value::text`, `CAST($n::text AS jsonb)`) so numbers keep their exact digits; PostgreSQL
//! prints jsonb with a space after `:` and `,`, which `minify` removes so a value reads back
//! byte-for-byte as the compact JSON it was saved as.

use base64::Engine;
use bytes::Bytes;

use super::super::ttl::{self, EXPIRE_KEY};
use super::super::{Metadata, SetRequest, StoreError, StoredItem};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The text to cast to jsonb and the `isbinary` flag for a write.
pub fn encode_value(req: &SetRequest) -> (String, bool) {
    if req.is_json && serde_json::from_slice::<serde::de::IgnoredAny>(&req.value).is_ok() {
        return (String::from_utf8_lossy(&req.value).into_owned(), false);
    }
    // A JSON string never needs escaping for base64's alphabet.
    (format!("\"{}\"", B64.encode(&req.value)), true)
}

/// Decodes a row's `value::text`, `isbinary`, `xmin::text` and expiry (unix seconds).
pub fn decode_item(value: &str, is_binary: bool, etag: String, expires: Option<i64>) -> Result<StoredItem, StoreError> {
    let data = if is_binary {
        let s: String = serde_json::from_str(value)
            .map_err(|e| StoreError::Backend(format!("binary value is not a json string: {e}")))?;
        Bytes::from(B64.decode(s.as_bytes()).map_err(|e| StoreError::Backend(format!("binary value is not base64: {e}")))?)
    } else {
        Bytes::from(minify(value))
    };
    let mut metadata = Metadata::new();
    if let Some(t) = expires {
        metadata.insert(EXPIRE_KEY.to_string(), ttl::format_expiry(t));
    }
    Ok(StoredItem { data, etag: Some(etag), metadata })
}

/// Removes the whitespace PostgreSQL puts between JSON tokens, leaving strings untouched.
pub fn minify(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

/// An ETag is a row's `xmin`: a transaction id, so a uint32 in decimal. Anything else could not
/// have been issued by this store and is invalid; the canonical text is what SQL compares.
pub fn parse_etag(etag: &str) -> Result<String, StoreError> {
    etag.parse::<u32>().map(|n| n.to_string()).map_err(|_| StoreError::ETagInvalid(etag.to_string()))
}

/// A driver error with its cause (tokio-postgres' own text is only "db error").
pub fn pg_err(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(describe(&e))
}

/// The error and its cause chain as one line.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minify_keeps_strings() {
        assert_eq!(minify(r#"{"a": 1, "b": [1, 2.50], "c": "x : , \" y"}"#), r#"{"a":1,"b":[1,2.50],"c":"x : , \" y"}"#);
    }

    #[test]
    fn values_round_trip() {
        let json = SetRequest { value: Bytes::from_static(br#"{"n":1}"#), is_json: true, ..Default::default() };
        assert_eq!(encode_value(&json), (r#"{"n":1}"#.to_string(), false));
        let not_json = SetRequest { value: Bytes::from_static(b"{oops"), is_json: true, ..Default::default() };
        let (text, bin) = encode_value(&not_json);
        assert!(bin);
        assert_eq!(decode_item(&text, bin, "1".into(), None).unwrap().data, Bytes::from_static(b"{oops"));
        let item = decode_item(r#""AJ+SlP8=""#, true, "7".into(), Some(0)).unwrap();
        assert_eq!(item.data.as_ref(), [0, 159, 146, 148, 255]);
        assert_eq!(item.metadata.get(EXPIRE_KEY).map(String::as_str), Some("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn etags_are_uint32() {
        assert_eq!(parse_etag("0042"), Ok("42".into()));
        assert!(matches!(parse_etag("not-an-etag"), Err(StoreError::ETagInvalid(_))));
        assert!(matches!(parse_etag("4294967296"), Err(StoreError::ETagInvalid(_))));
    }
}
