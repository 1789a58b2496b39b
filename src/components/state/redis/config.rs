//! Typed metadata of `state.redis`: Dapr's keys, aliases and defaults (components-contrib's Redis
//! settings), decoded once at init so a bad value fails the component with the key named.
//!
//! Durations follow Dapr's Redis rule, which differs from other components: a plain integer is
//! milliseconds and a negative one disables the timeout. Features rapr's Redis client does not
//! offer here (TLS, Sentinel failover, cluster, Entra ID) fail init naming the key, rather than
//! silently connecting in a way the operator did not ask for.

use std::time::Duration;

use crate::components::metadata::{parse_duration, ComponentMetadata, MetadataError};

/// Decoded settings of one `state.redis` component.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// Host name or address (no port).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// ACL user name (Redis 6+).
    pub username: Option<String>,
    /// Password (`AUTH`).
    pub password: Option<String>,
    /// Database selected after connecting.
    pub db: i64,
    /// Reconnection attempts per request before it fails.
    pub max_retries: usize,
    /// Smallest delay between reconnection attempts.
    pub min_retry_backoff: Duration,
    /// Largest delay between reconnection attempts.
    pub max_retry_backoff: Duration,
    /// Connect timeout.
    pub dial_timeout: Duration,
    /// Read timeout; `None` waits forever.
    pub read_timeout: Option<Duration>,
    /// Write timeout; `None` waits forever.
    pub write_timeout: Option<Duration>,
    /// Store-wide default time to live, seconds (`ttlInSeconds`).
    pub default_ttl: Option<i64>,
}

/// Keys Dapr documents for this store that tune its Go connection pool or belong to other
/// building blocks; accepted so Dapr YAML loads unchanged, with no effect here.
const ACCEPTED: &[&str] = &[
    "queryIndexes",
    "poolSize",
    "poolTimeout",
    "maxConnAge",
    "minIdleConns",
    "idleCheckFrequency",
    "idleTimeout",
    "sentinelMasterName",
    "sentinelUsername",
    "sentinelPassword",
    "insecureSkipTLSVerify",
    "clientCert",
    "clientKey",
    "redeliverInterval",
    "processingTimeout",
    "consumerID",
];

fn err(key: &str, reason: impl Into<String>) -> MetadataError {
    MetadataError { component: String::new(), key: key.to_string(), reason: reason.into() }
}

/// A Redis-style duration: plain integer milliseconds (negative: disabled), or Go syntax.
fn redis_duration(md: &mut ComponentMetadata, names: &[&str], default: Option<Duration>) -> Result<Option<Duration>, MetadataError> {
    let Some(raw) = md.string(names) else { return Ok(default) };
    let v = raw.trim();
    if let Ok(ms) = v.parse::<i64>() {
        return Ok((ms > 0).then(|| Duration::from_millis(ms.unsigned_abs())));
    }
    let d = parse_duration(v).ok_or_else(|| err(names[0], format!("{raw:?} is not a duration")))?;
    Ok((!d.is_zero()).then_some(d))
}

fn integer(md: &mut ComponentMetadata, names: &[&str]) -> Result<Option<i64>, MetadataError> {
    match md.string(names) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| err(names[0], format!("{v:?} is not an integer"))),
    }
}

/// Splits `host:port`, `host` (port 6379 or `redisPort`) or `[v6]:port`.
fn split_host(raw: &str, port_md: Option<i64>) -> Result<(String, u16), MetadataError> {
    let raw = raw.trim();
    if raw.contains(',') {
        return Err(err("redisHost", format!("{raw:?} lists several hosts; cluster and sentinel modes are not supported")));
    }
    if raw.contains("://") {
        return Err(err("redisHost", format!("{raw:?} must be host:port, not a URL")));
    }
    let bad = |why: &str| err("redisHost", format!("{raw:?} is not a valid host:port: {why}"));
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (h, tail) = rest.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        (h.to_string(), tail.strip_prefix(':'))
    } else {
        match raw.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => return Err(bad("IPv6 addresses need brackets")),
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (raw.to_string(), None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(bad("no host name"));
    }
    let port = match (port, port_md) {
        (Some(p), md_port) => {
            let p: u16 = p.parse().ok().filter(|p| *p > 0).ok_or_else(|| bad("the port is not a number in 1..65535"))?;
            if md_port.is_some_and(|m| m != i64::from(p)) {
                return Err(err("redisPort", format!("redisHost already names port {p}; remove one of them")));
            }
            p
        }
        (None, Some(m)) => u16::try_from(m).ok().filter(|p| *p > 0).ok_or_else(|| err("redisPort", format!("{m} is not a port")))?,
        (None, None) => 6379,
    };
    Ok((host, port))
}

fn refuse_if_set(md: &mut ComponentMetadata, key: &str, what: &str) -> Result<(), MetadataError> {
    if md.bool(&[key], false)? {
        return Err(err(key, format!("{what} is not supported by rapr's state.redis; connect over plain TCP (a TLS-terminating proxy works)")));
    }
    Ok(())
}

impl RedisConfig {
    /// Decodes and validates the component's metadata.
    pub fn from_metadata(md: &mut ComponentMetadata) -> Result<Self, MetadataError> {
        let raw_host = md.required(&["redisHost"])?;
        let port_md = integer(md, &["redisPort"])?;
        let (host, port) = split_host(&raw_host, port_md)?;
        refuse_if_set(md, "enableTLS", "TLS")?;
        refuse_if_set(md, "failover", "Sentinel failover")?;
        refuse_if_set(md, "useEntraID", "Entra ID authentication")?;
        refuse_if_set(md, "useOIDC", "OIDC authentication")?;
        if let Some(kind) = md.string(&["redisType"]) {
            if !kind.eq_ignore_ascii_case("node") {
                return Err(err("redisType", format!("{kind:?} is not supported; only \"node\" is")));
            }
        }
        let db = integer(md, &["redisDB"])?.unwrap_or(0);
        if db < 0 {
            return Err(err("redisDB", format!("{db} is not a database number")));
        }
        // Dapr: -1 disables retries, default 3.
        let max_retries = integer(md, &["redisMaxRetries", "maxRetries"])?.map_or(3, |n| n.max(0) as usize);
        let min_retry_backoff = redis_duration(md, &["redisMinRetryInterval"], Some(Duration::from_millis(8)))?.unwrap_or(Duration::from_millis(1));
        let max_retry_backoff =
            redis_duration(md, &["redisMaxRetryInterval", "maxRetryBackoff"], Some(Duration::from_millis(512)))?.unwrap_or(min_retry_backoff);
        let dial_timeout = redis_duration(md, &["dialTimeout"], Some(Duration::from_secs(5)))?.unwrap_or(Duration::from_secs(5));
        let read_timeout = redis_duration(md, &["readTimeout"], Some(Duration::from_secs(3)))?;
        let write_timeout = redis_duration(md, &["writeTimeout"], read_timeout)?;
        let default_ttl = integer(md, &["ttlInSeconds"])?.filter(|t| *t > 0);
        for key in ACCEPTED {
            md.string(&[key]);
        }
        Ok(Self {
            host,
            port,
            username: md.string(&["redisUsername"]),
            password: md.string(&["redisPassword"]),
            db,
            max_retries,
            min_retry_backoff,
            max_retry_backoff: max_retry_backoff.max(min_retry_backoff),
            dial_timeout,
            read_timeout,
            write_timeout,
            default_ttl,
        })
    }

    /// Deadline of one store call: long enough for a reconnect attempt and an answer.
    pub fn call_timeout(&self) -> Duration {
        let io = self.read_timeout.max(self.write_timeout).unwrap_or(Duration::from_secs(30));
        self.dial_timeout.max(io)
    }

    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<RedisConfig, MetadataError> {
        let p: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        RedisConfig::from_metadata(&mut ComponentMetadata::new("r", &p))
    }

    #[test]
    fn defaults_follow_dapr() {
        let c = cfg(&[("redisHost", "localhost:6380")]).unwrap();
        assert_eq!((c.host.as_str(), c.port, c.db, c.max_retries), ("localhost", 6380, 0, 3));
        assert_eq!(c.read_timeout, Some(Duration::from_secs(3)));
        assert_eq!(c.write_timeout, c.read_timeout);
        assert_eq!(c.call_timeout(), Duration::from_secs(5));
        assert_eq!(cfg(&[("redisHost", "h")]).unwrap().port, 6379);
        assert_eq!(cfg(&[("redisHost", "[::1]:7000")]).unwrap().address(), "[::1]:7000");
    }

    #[test]
    fn durations_are_milliseconds_when_plain() {
        let c = cfg(&[("redisHost", "h:1"), ("dialTimeout", "250"), ("readTimeout", "-1"), ("writeTimeout", "2s")]).unwrap();
        assert_eq!(c.dial_timeout, Duration::from_millis(250));
        assert_eq!(c.read_timeout, None);
        assert_eq!(c.write_timeout, Some(Duration::from_secs(2)));
    }

    #[test]
    fn bad_values_name_the_key() {
        for (pairs, key) in [
            (vec![], "redisHost"),
            (vec![("redisHost", "h:notaport")], "redisHost"),
            (vec![("redisHost", "h:1,h:2")], "redisHost"),
            (vec![("redisHost", "h:1"), ("enableTLS", "true")], "enableTLS"),
            (vec![("redisHost", "h:1"), ("redisDB", "x")], "redisDB"),
            (vec![("redisHost", "h:1"), ("ttlInSeconds", "soon")], "ttlInSeconds"),
            (vec![("redisHost", "h:1"), ("redisType", "cluster")], "redisType"),
            (vec![("redisHost", "h:1"), ("redisPort", "2")], "redisPort"),
        ] {
            assert_eq!(cfg(&pairs).unwrap_err().key, key, "{pairs:?}");
        }
        assert!(cfg(&[("redisHost", "h:1"), ("enableTLS", "false"), ("ttlInSeconds", "-1")]).unwrap().default_ttl.is_none());
    }
}
