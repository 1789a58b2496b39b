//! Time-to-live handling shared by every store: parsing `ttlInSeconds` from request metadata and
//! formatting the `ttlExpireTime` response metadata, so all stores agree on both.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{Metadata, StoreError};

/// Metadata key carrying a write's time to live.
pub const TTL_KEY: &str = "ttlInSeconds";
/// Response metadata key carrying an item's expiry instant.
pub const EXPIRE_KEY: &str = "ttlExpireTime";

/// Parses `ttlInSeconds`: `None` when absent or `-1` (never expire), seconds otherwise.
pub fn parse_ttl(metadata: &Metadata) -> Result<Option<i64>, StoreError> {
    let Some(raw) = metadata.get(TTL_KEY) else { return Ok(None) };
    let secs: i64 = raw.trim().parse().map_err(|_| {
        StoreError::InvalidRequest(format!("incorrect value for metadata '{TTL_KEY}': {raw}"))
    })?;
    match secs {
        -1 => Ok(None),
        s if s < -1 => Err(StoreError::InvalidRequest(format!(
            "incorrect value for metadata '{TTL_KEY}': {raw}: must be -1 or greater"
        ))),
        s => Ok(Some(s)),
    }
}

/// Formats an expiry instant (unix seconds) the way Dapr reports `ttlExpireTime` (RFC 3339, UTC).
pub fn format_expiry(unix_secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(v: &str) -> Metadata {
        Metadata::from([(TTL_KEY.to_string(), v.to_string())])
    }

    #[test]
    fn parses_ttl_values() {
        assert_eq!(parse_ttl(&Metadata::new()), Ok(None));
        assert_eq!(parse_ttl(&md("10")), Ok(Some(10)));
        assert_eq!(parse_ttl(&md("-1")), Ok(None));
        assert!(parse_ttl(&md("abc")).is_err());
        assert!(parse_ttl(&md("-5")).is_err());
    }

    #[test]
    fn formats_expiry_as_rfc3339() {
        assert_eq!(format_expiry(0), "1970-01-01T00:00:00Z");
    }
}
