//! Typed metadata of `state.redis`: Dapr's keys, aliases and defaults (components-contrib's Redis
//! settings), decoded once at init so a bad value fails the component with the key named.
//!
//! Durations follow Dapr's Redis rule, which differs from other components: a plain integer is
//! milliseconds. Zero means go-redis's own default and a negative value disables the setting, as
//! contrib hands both to go-redis unchanged (`readTimeout: 0` is 3 s, `redisMaxRetries: 0` is 3
//! retries, `-1` none). Contrib's state defaults: 3 retries, a 2 s minimum retry interval (or the
//! legacy `maxRetryBackoff`, integer nanoseconds, when `redisMinRetryInterval` is absent) and
//! go-redis's 512 ms maximum; a minimum above the maximum waits the maximum, as go-redis does. Features rapr's Redis client does not
//! offer here (TLS, Sentinel failover, cluster, Entra ID) fail init naming the key, rather than
//! silently connecting in a way the operator did not ask for.

use std::time::Duration;

use crate::components::metadata::{ComponentMetadata, MetadataError};
use crate::config::duration::BareInteger;

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
    /// Smallest delay between reconnection attempts, as configured (it may exceed the largest:
    /// `retry_delays` settles that).
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
    // Legacy; read only when `redisMinRetryInterval` is absent (contrib ignores it otherwise).
    "maxRetryBackoff",
];

fn err(key: &str, reason: impl Into<String>) -> MetadataError {
    MetadataError { component: String::new(), key: key.to_string(), reason: reason.into() }
}

/// go-redis's defaults for a zero setting.
const GO_REDIS_RETRIES: usize = 3;
const GO_REDIS_MIN_BACKOFF: Duration = Duration::from_millis(8);
const GO_REDIS_MAX_BACKOFF: Duration = Duration::from_millis(512);
const GO_REDIS_DIAL: Duration = Duration::from_secs(5);
const GO_REDIS_READ: Duration = Duration::from_secs(3);
/// contrib's state default for `redisMinRetryInterval`.
const CONTRIB_MIN_RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// A setting as go-redis reads it: zero takes its default, negative disables it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum GoRedis {
    Default,
    Disabled,
    Set(Duration),
}

impl GoRedis {
    /// The value with go-redis's `default` for zero; `None` when disabled.
    fn or(self, default: Duration) -> Option<Duration> {
        match self {
            GoRedis::Default => Some(default),
            GoRedis::Disabled => None,
            GoRedis::Set(d) => Some(d),
        }
    }
}

/// A Redis-style duration (contrib's `Duration.DecodeString`): plain integer milliseconds, or Go
/// syntax; `None` when the key is absent.
fn redis_duration(md: &mut ComponentMetadata, names: &[&str]) -> Result<Option<GoRedis>, MetadataError> {
    let Some(d) = md.go_duration(names, BareInteger::Milliseconds)? else { return Ok(None) };
    Ok(Some(match d.to_std() {
        None => GoRedis::Disabled,
        Some(d) if d.is_zero() => GoRedis::Default,
        Some(d) => GoRedis::Set(d),
    }))
}

/// contrib's legacy `maxRetryBackoff`: read only when `redisMinRetryInterval` is absent, an
/// integer of nanoseconds (contrib converts it with `time.Duration(n)`), into the minimum.
fn legacy_min_retry(md: &mut ComponentMetadata) -> Result<GoRedis, MetadataError> {
    let Some(raw) = md.string(&["maxRetryBackoff"]).filter(|v| !v.is_empty()) else { return Ok(GoRedis::Set(CONTRIB_MIN_RETRY_INTERVAL)) };
    let n: i64 = raw.parse().map_err(|e| err("maxRetryBackoff", format!("redis store error: can't parse maxRetryBackoff field: {e}")))?;
    Ok(match n {
        0 => GoRedis::Default,
        n if n < 0 => GoRedis::Disabled,
        n => GoRedis::Set(Duration::from_nanos(n.unsigned_abs())),
    })
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
        // contrib's default is 3; go-redis reads 0 as its default (3) and -1 as no retries.
        let max_retries = match integer(md, &["redisMaxRetries", "maxRetries"])? {
            None | Some(0) => GO_REDIS_RETRIES,
            Some(n) if n < 0 => 0,
            Some(n) => n as usize,
        };
        let min_retry = match redis_duration(md, &["redisMinRetryInterval"])? {
            Some(d) => d,
            None => legacy_min_retry(md)?,
        };
        // Disabled backoff (-1) retries at once.
        let min_retry_backoff = min_retry.or(GO_REDIS_MIN_BACKOFF).unwrap_or(Duration::ZERO);
        let max_retry_backoff = redis_duration(md, &["redisMaxRetryInterval"])?.unwrap_or(GoRedis::Default).or(GO_REDIS_MAX_BACKOFF).unwrap_or(Duration::ZERO);
        let dial_timeout = redis_duration(md, &["dialTimeout"])?.unwrap_or(GoRedis::Default).or(GO_REDIS_DIAL).unwrap_or(GO_REDIS_DIAL);
        let read_timeout = redis_duration(md, &["readTimeout"])?.unwrap_or(GoRedis::Default).or(GO_REDIS_READ);
        // go-redis: a zero write timeout is the read timeout.
        let write_timeout = match redis_duration(md, &["writeTimeout"])?.unwrap_or(GoRedis::Default) {
            GoRedis::Default => read_timeout,
            other => other.or(GO_REDIS_READ),
        };
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
            max_retry_backoff,
            dial_timeout,
            read_timeout,
            write_timeout,
            default_ttl,
        })
    }

    /// The (min, max) reconnection delays to use: go-redis waits the maximum whenever the
    /// minimum exceeds it, so contrib's 2 s minimum under the 512 ms default maximum waits 512 ms.
    pub fn retry_delays(&self) -> (Duration, Duration) {
        (self.min_retry_backoff.min(self.max_retry_backoff), self.max_retry_backoff)
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
        assert_eq!(c.min_retry_backoff, Duration::from_secs(2), "contrib's state default");
        assert_eq!(c.max_retry_backoff, Duration::from_millis(512), "go-redis's default");
        assert_eq!(c.retry_delays(), (Duration::from_millis(512), Duration::from_millis(512)));
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
    fn zero_means_go_redis_defaults() {
        let c = cfg(&[("redisHost", "h:1"), ("readTimeout", "0"), ("redisMaxRetries", "0"), ("dialTimeout", "0s"), ("redisMaxRetryInterval", "0")]).unwrap();
        assert_eq!(c.read_timeout, Some(Duration::from_secs(3)));
        assert_eq!(c.write_timeout, Some(Duration::from_secs(3)));
        assert_eq!(c.max_retries, 3);
        assert_eq!(c.dial_timeout, Duration::from_secs(5));
        assert_eq!(c.max_retry_backoff, Duration::from_millis(512));
        assert_eq!(cfg(&[("redisHost", "h:1"), ("redisMaxRetries", "-1")]).unwrap().max_retries, 0);
        assert_eq!(cfg(&[("redisHost", "h:1"), ("maxRetries", "7")]).unwrap().max_retries, 7);
        assert_eq!(cfg(&[("redisHost", "h:1"), ("redisMinRetryInterval", "0")]).unwrap().min_retry_backoff, Duration::from_millis(8));
    }

    #[test]
    fn legacy_max_retry_backoff_is_the_minimum_in_nanoseconds() {
        let c = cfg(&[("redisHost", "h:1"), ("maxRetryBackoff", "100000000")]).unwrap();
        assert_eq!(c.min_retry_backoff, Duration::from_millis(100));
        assert_eq!(c.max_retry_backoff, Duration::from_millis(512), "the legacy key never sets the maximum");
        let c = cfg(&[("redisHost", "h:1"), ("maxRetryBackoff", "100000000"), ("redisMinRetryInterval", "50")]).unwrap();
        assert_eq!(c.min_retry_backoff, Duration::from_millis(50), "the new key wins");
        assert_eq!(cfg(&[("redisHost", "h:1"), ("maxRetryBackoff", "1s")]).unwrap_err().key, "maxRetryBackoff");
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
