//! Typed metadata of `pubsub.redis`: components-contrib's Redis settings for the pub/sub type,
//! decoded once at init so a bad value fails the component with the key named.
//!
//! The connection keys (`redisHost`, `redisPassword`, timeouts, retries...) are the state store's
//! ([`RedisConfig`]), with one difference contrib makes by component type: the state store's 2 s
//! `redisMinRetryInterval` default and its legacy `maxRetryBackoff`/`maxRetries` keys are state
//! only; a pub/sub connection gets go-redis's own 8 ms. The stream keys and their code defaults
//! are contrib's: `processingTimeout` 60 s and `redeliverInterval` 15 s (a bare integer is
//! milliseconds for these two), `queueDepth` 100, `concurrency` 10, `maxLenApprox` and `streamTTL`
//! off. `consumerID` names the consumer group (and the consumer, as contrib does); the runtime
//! fills it with the app id when the YAML leaves it out, as daprd's pub/sub processor does, and
//! a subscription's own `consumerID` metadata wins over it.
//! `maxDeliveryCount` (default 10) is rapr's poison limit (issue 11 B.6).

use std::time::Duration;

use crate::components::metadata::{ComponentMetadata, MetadataError};
use crate::components::state::redis::RedisConfig;
use crate::config::duration::BareInteger;

/// contrib's pub/sub defaults.
const PROCESSING_TIMEOUT: Duration = Duration::from_secs(60);
const REDELIVER_INTERVAL: Duration = Duration::from_secs(15);
const QUEUE_DEPTH: u64 = 100;
const CONCURRENCY: u64 = 10;
/// rapr's poison limit default.
const MAX_DELIVERY_COUNT: u64 = 10;
/// go-redis's minimum reconnection backoff, which a pub/sub connection keeps (contrib sets the
/// 2 s state default for state and lock stores only).
const GO_REDIS_MIN_BACKOFF: Duration = Duration::from_millis(8);

/// Decoded settings of one `pubsub.redis` component.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamsConfig {
    /// How to reach the server.
    pub conn: RedisConfig,
    /// The consumer group, and the consumer name inside it; a subscription's own `consumerID`
    /// wins, and a subscription with neither is refused.
    pub consumer_id: Option<String>,
    /// A pending message idle this long is handed out again; zero disables redelivery.
    pub processing_timeout: Duration,
    /// How often pending messages are checked; zero disables redelivery.
    pub redeliver_interval: Duration,
    /// Most messages one read takes.
    pub queue_depth: usize,
    /// Most handler calls in flight for the component.
    pub concurrency: usize,
    /// `XADD ... MAXLEN ~ n` when above zero.
    pub max_len_approx: i64,
    /// `XADD ... MINID ~ <now - ttl>` when set (and `max_len_approx` is not).
    pub stream_ttl: Option<Duration>,
    /// The poison limit.
    pub max_delivery_count: u32,
}

fn err(key: &str, reason: impl Into<String>) -> MetadataError {
    MetadataError { component: String::new(), key: key.to_string(), reason: reason.into() }
}

/// contrib's reading of `processingTimeout`/`redeliverInterval`: a bare unsigned integer is
/// milliseconds, anything else Go's syntax. A negative value has no meaning there: refused.
fn stream_duration(md: &mut ComponentMetadata, key: &str, default: Duration) -> Result<Duration, MetadataError> {
    match md.go_duration(&[key], BareInteger::Milliseconds)? {
        None => Ok(default),
        Some(d) => d.to_std().ok_or_else(|| err(key, "must not be negative")),
    }
}

/// A positive count; `what` explains a zero.
fn positive(md: &mut ComponentMetadata, key: &str, default: u64) -> Result<usize, MetadataError> {
    let n = md.u64(&[key], default)?;
    if n == 0 {
        return Err(err(key, "must be at least 1"));
    }
    usize::try_from(n).map_err(|_| err(key, format!("{n} is too large")))
}

fn refuse_if_set(md: &mut ComponentMetadata, key: &str, what: &str) -> Result<(), MetadataError> {
    if md.bool(&[key], false)? {
        return Err(err(key, format!("{what} is not supported by rapr's pubsub.redis; connect over plain TCP (a TLS-terminating proxy works)")));
    }
    Ok(())
}

impl StreamsConfig {
    /// Decodes and validates the component's metadata.
    pub fn from_metadata(md: &mut ComponentMetadata) -> Result<Self, MetadataError> {
        refuse_if_set(md, "enableTLS", "TLS")?;
        refuse_if_set(md, "failover", "Sentinel failover")?;
        let min_retry_set = md.string(&["redisMinRetryInterval"]).is_some();
        let mut conn = RedisConfig::from_metadata(md)?;
        if !min_retry_set {
            conn.min_retry_backoff = GO_REDIS_MIN_BACKOFF;
        }
        let consumer_id = md.string(&["consumerID"]).map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let processing_timeout = stream_duration(md, "processingTimeout", PROCESSING_TIMEOUT)?;
        let redeliver_interval = stream_duration(md, "redeliverInterval", REDELIVER_INTERVAL)?;
        let queue_depth = positive(md, "queueDepth", QUEUE_DEPTH)?;
        // contrib's common `concurrencyMode: single` (other brokers') means one at a time here
        // too; rapr also reads its words as values of `concurrency`.
        let single = md.string(&["concurrencyMode"]).is_some_and(|m| m.trim().eq_ignore_ascii_case("single"));
        let concurrency = match md.string(&["concurrency"]).map(|s| s.trim().to_ascii_lowercase()) {
            _ if single => 1,
            Some(s) if s == "single" => 1,
            Some(s) if s == "parallel" => CONCURRENCY as usize,
            Some(s) => {
                let n: u64 = s.parse().map_err(|_| err("concurrency", format!("{s:?} is not a positive integer, \"single\" or \"parallel\"")))?;
                if n == 0 {
                    return Err(err("concurrency", "must be at least 1"));
                }
                usize::try_from(n).map_err(|_| err("concurrency", format!("{n} is too large")))?
            }
            None => CONCURRENCY as usize,
        };
        let max_len_approx = match md.string(&["maxLenApprox"]) {
            None => 0,
            Some(v) => v.trim().parse::<i64>().map_err(|_| err("maxLenApprox", format!("{v:?} is not an integer")))?.max(0),
        };
        let stream_ttl = Some(md.duration(&["streamTTL"], Duration::ZERO)?).filter(|d| !d.is_zero());
        let max_delivery_count = positive(md, "maxDeliveryCount", MAX_DELIVERY_COUNT)?;
        let max_delivery_count = u32::try_from(max_delivery_count).map_err(|_| err("maxDeliveryCount", "is too large"))?;
        Ok(Self { conn, consumer_id, processing_timeout, redeliver_interval, queue_depth, concurrency, max_len_approx, stream_ttl, max_delivery_count })
    }

    /// Whether pending messages are ever handed out again (contrib: both settings non-zero).
    pub fn redelivers(&self) -> bool {
        !self.processing_timeout.is_zero() && !self.redeliver_interval.is_zero()
    }

    /// How long one blocking read waits for new entries: contrib blocks for the read timeout;
    /// capped so a cancelled subscription's read ends soon.
    pub fn block(&self) -> Duration {
        self.conn.read_timeout.unwrap_or(Duration::from_secs(3)).clamp(Duration::from_millis(100), Duration::from_secs(3))
    }

    /// The trimming argument of `XADD` at `now_ms` (Unix milliseconds): `MAXLEN ~ n` wins over
    /// `MINID ~ id`, as go-redis builds it.
    pub fn trim(&self, now_ms: u128) -> Option<(&'static str, String)> {
        if self.max_len_approx > 0 {
            return Some(("MAXLEN", self.max_len_approx.to_string()));
        }
        self.stream_ttl.map(|ttl| ("MINID", format!("{}-1", now_ms.saturating_sub(ttl.as_millis()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<StreamsConfig, MetadataError> {
        let p: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        StreamsConfig::from_metadata(&mut ComponentMetadata::new("r", &p))
    }

    #[test]
    fn defaults_follow_contrib() {
        let c = cfg(&[("redisHost", "localhost:6379"), ("consumerID", "app")]).unwrap();
        assert_eq!(c.processing_timeout, Duration::from_secs(60));
        assert_eq!(c.redeliver_interval, Duration::from_secs(15));
        assert_eq!((c.queue_depth, c.concurrency, c.max_len_approx, c.stream_ttl, c.max_delivery_count), (100, 10, 0, None, 10));
        assert_eq!(c.consumer_id.as_deref(), Some("app"));
        assert_eq!(cfg(&[("redisHost", "h")]).unwrap().consumer_id, None);
        assert_eq!(c.conn.min_retry_backoff, Duration::from_millis(8), "go-redis's, not the state store's 2 s");
        assert!(c.redelivers());
        assert_eq!(c.block(), Duration::from_secs(3));
        assert_eq!(c.trim(10_000), None);
    }

    #[test]
    fn bare_integers_are_milliseconds_for_the_stream_timings() {
        let c = cfg(&[("redisHost", "h"), ("consumerID", "a"), ("processingTimeout", "500"), ("redeliverInterval", "2s"), ("streamTTL", "10")]).unwrap();
        assert_eq!(c.processing_timeout, Duration::from_millis(500));
        assert_eq!(c.redeliver_interval, Duration::from_secs(2));
        assert_eq!(c.stream_ttl, Some(Duration::from_secs(10)), "streamTTL is a plain duration: seconds");
        assert_eq!(c.trim(60_000), Some(("MINID", "50000-1".to_string())));
        let c = cfg(&[("redisHost", "h"), ("consumerID", "a"), ("processingTimeout", "0")]).unwrap();
        assert!(!c.redelivers());
    }

    #[test]
    fn max_len_wins_over_ttl() {
        let c = cfg(&[("redisHost", "h"), ("consumerID", "a"), ("maxLenApprox", "1000"), ("streamTTL", "1m")]).unwrap();
        assert_eq!(c.trim(1), Some(("MAXLEN", "1000".to_string())));
    }

    #[test]
    fn concurrency_words() {
        let c = |v: &str| cfg(&[("redisHost", "h"), ("consumerID", "a"), ("concurrency", v)]).map(|c| c.concurrency);
        assert_eq!(c("single").unwrap(), 1);
        assert_eq!(c("parallel").unwrap(), 10);
        assert_eq!(c("3").unwrap(), 3);
        let mode = cfg(&[("redisHost", "h"), ("consumerID", "a"), ("concurrencyMode", "single")]).unwrap();
        assert_eq!(mode.concurrency, 1);
        assert_eq!(c("0").unwrap_err().key, "concurrency");
        assert_eq!(c("many").unwrap_err().key, "concurrency");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (pairs, key) in [
            (vec![("redisHost", "h"), ("consumerID", "a"), ("enableTLS", "true")], "enableTLS"),
            (vec![("redisHost", "h"), ("consumerID", "a"), ("processingTimeout", "-5")], "processingTimeout"),
            (vec![("redisHost", "h"), ("consumerID", "a"), ("redeliverInterval", "soon")], "redeliverInterval"),
            (vec![("redisHost", "h"), ("consumerID", "a"), ("queueDepth", "0")], "queueDepth"),
            (vec![("redisHost", "h"), ("consumerID", "a"), ("maxLenApprox", "x")], "maxLenApprox"),
            (vec![("redisHost", "h"), ("consumerID", "a"), ("maxDeliveryCount", "0")], "maxDeliveryCount"),
            (vec![("consumerID", "a")], "redisHost"),
        ] {
            assert_eq!(cfg(&pairs).unwrap_err().key, key, "{pairs:?}");
        }
    }
}
