//! The W3C `baggage` header as daprd's tracing middleware treats it (`handleHTTPBaggage`,
//! `handleBaggage`): a valid header is echoed on the answer, an invalid one refuses the request
//! (HTTP 400, gRPC InvalidArgument). Validity follows OpenTelemetry Go's `baggage.Parse`, which
//! daprd calls: members `key=value` (optionally `;property`) separated by commas, keys RFC 7230
//! tokens, values W3C baggage octets with valid percent escapes, at most 8192 bytes and 64
//! members. The value is never put into the span context (daprd keeps the two apart too).

/// The W3C header name.
pub const HEADER: &str = "baggage";

const MAX_BYTES: usize = 8192;
const MAX_MEMBERS: usize = 64;

/// Why a baggage header is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BaggageError {
    /// Longer than the W3C limit.
    #[error("baggage exceeds {MAX_BYTES} bytes")]
    TooLong,
    /// More members than the limit.
    #[error("baggage has more than {MAX_MEMBERS} members")]
    TooManyMembers,
    /// A member that is not `key=value`.
    #[error("invalid baggage list-member: {0:?}")]
    Member(String),
    /// A key that is not a token.
    #[error("invalid baggage key: {0:?}")]
    Key(String),
    /// A value with characters baggage does not allow.
    #[error("invalid baggage value: {0:?}")]
    Value(String),
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// W3C baggage octets, with every `%` starting a two-digit hex escape.
fn is_value(s: &str) -> bool {
    let b = s.as_bytes();
    let octet = |c: u8| c == 0x21 || (0x23..=0x2b).contains(&c) || (0x2d..=0x3a).contains(&c) || (0x3c..=0x5b).contains(&c) || (0x5d..=0x7e).contains(&c);
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit) && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
            continue;
        }
        if !octet(b[i]) {
            return false;
        }
        i += 1;
    }
    true
}

/// Checks the request's `baggage` values (joined by commas, as daprd joins them) and returns
/// the text to echo, `None` without baggage.
pub fn check(values: &[&str]) -> Result<Option<String>, BaggageError> {
    if values.is_empty() {
        return Ok(None);
    }
    let joined = values.join(",");
    if joined.len() > MAX_BYTES {
        return Err(BaggageError::TooLong);
    }
    let mut members = 0;
    for member in joined.split(',') {
        let (key_value, properties) = member.split_once(';').unwrap_or((member, ""));
        let (k, v) = key_value.split_once('=').ok_or_else(|| BaggageError::Member(member.to_string()))?;
        if !is_token(k.trim()) {
            return Err(BaggageError::Key(k.trim().to_string()));
        }
        if !is_value(v.trim()) {
            return Err(BaggageError::Value(v.trim().to_string()));
        }
        for p in properties.split(';').filter(|p| !p.trim().is_empty()) {
            let (pk, pv) = p.split_once('=').unwrap_or((p, ""));
            if !is_token(pk.trim()) || !is_value(pv.trim()) {
                return Err(BaggageError::Member(member.to_string()));
            }
        }
        members += 1;
    }
    if members > MAX_MEMBERS {
        return Err(BaggageError::TooManyMembers);
    }
    Ok(Some(joined))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_baggage_is_echoed_joined() {
        assert_eq!(check(&[]), Ok(None));
        assert_eq!(check(&["userId=alice", "serverNode=DF%2028;prop"]), Ok(Some("userId=alice,serverNode=DF%2028;prop".into())));
        assert_eq!(check(&[" k = v "]), Ok(Some(" k = v ".into())), "whitespace around key and value is allowed");
    }

    #[test]
    fn invalid_baggage_is_refused() {
        assert!(matches!(check(&["novalue"]), Err(BaggageError::Member(_))));
        assert!(matches!(check(&["bad key=v"]), Err(BaggageError::Key(_))));
        assert!(matches!(check(&["k=a b"]), Err(BaggageError::Value(_))));
        assert!(matches!(check(&["k=%zz"]), Err(BaggageError::Value(_))));
        assert!(matches!(check(&["k=%4"]), Err(BaggageError::Value(_))));
        let many: Vec<String> = (0..65).map(|i| format!("k{i}=v")).collect();
        assert_eq!(check(&many.iter().map(String::as_str).collect::<Vec<_>>()), Err(BaggageError::TooManyMembers));
        assert_eq!(check(&[&"k=".repeat(5000)]), Err(BaggageError::TooLong));
    }
}
