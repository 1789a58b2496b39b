//! Typed metadata of `pubsub.sqlite`. There is no daprd component of this type, so the keys follow
//! the nearest Dapr broker: `processingTimeout` and `redeliverInterval` as contrib's Redis Streams
//! (same defaults, a bare integer read as milliseconds), `concurrencyMode` as contrib's
//! `pubsub.ConcurrencyMode`, `connectionString` / `busyTimeout` / `disableWAL` as `state.sqlite`.

use std::time::Duration;

use crate::components::metadata::{ComponentMetadata, MetadataError};
use crate::config::duration::BareInteger;

/// How one subscription runs its handler calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConcurrencyMode {
    /// One message at a time, in publish order.
    Single,
    /// Up to `concurrency` messages at once.
    Parallel,
}

impl ConcurrencyMode {
    /// Parses contrib's spelling (`single` / `parallel`).
    pub fn parse(v: &str) -> Option<Self> {
        match v.trim().to_ascii_lowercase().as_str() {
            "single" => Some(Self::Single),
            "parallel" => Some(Self::Parallel),
            _ => None,
        }
    }
}

/// The broker's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfig {
    /// File path or `file:` URI of the shared database.
    pub connection_string: String,
    /// Prefix of the broker's three tables (`<prefix>_messages`, `_groups`, `_deliveries`).
    pub table_prefix: String,
    /// The consumer group when a subscription does not name one (daprd sets it to the app id).
    pub consumer_id: Option<String>,
    /// How long a handed-out message stays claimed before another consumer may take it (a
    /// crashed consumer's messages come back after it); zero: never.
    pub processing_timeout: Duration,
    /// How long a message answered `Retry` waits before it is delivered again.
    pub redeliver_interval: Duration,
    /// How often a subscription looks for messages published by other processes (the ones of
    /// its own process wake it at once).
    pub poll_interval: Duration,
    /// Handler calls at once per subscription in `parallel` mode.
    pub concurrency: usize,
    /// Default mode of a subscription (its own `concurrencyMode` metadata wins).
    pub concurrency_mode: ConcurrencyMode,
    /// The poison limit the runtime applies.
    pub max_delivery_count: u32,
    /// Interval between sweeps of messages every group acknowledged; zero disables them.
    pub cleanup_interval: Duration,
    /// Messages older than this are removed whatever their state; zero (default) keeps a message
    /// until every consumer group of its topic acknowledged it.
    pub retention_period: Duration,
    /// How long a connection waits on a locked database (another process writing).
    pub busy_timeout: Duration,
    /// Use the rollback journal instead of WAL.
    pub disable_wal: bool,
}

impl BrokerConfig {
    /// Decodes and validates the component's metadata.
    pub fn from_metadata(md: &mut ComponentMetadata) -> Result<Self, MetadataError> {
        let ms = |md: &mut ComponentMetadata, names: &[&str], default: Duration| -> Result<Duration, MetadataError> {
            Ok(md.go_duration(names, BareInteger::Milliseconds)?.map_or(default, |d| d.clamped()))
        };
        let mode = match md.string(&["concurrencyMode"]) {
            None => ConcurrencyMode::Parallel,
            Some(v) => ConcurrencyMode::parse(&v).ok_or_else(|| err("concurrencyMode", format!("{v:?} is neither single nor parallel")))?,
        };
        let cfg = Self {
            connection_string: md.required(&["connectionString", "url"])?,
            table_prefix: md.string(&["tablePrefix"]).unwrap_or_else(|| "pubsub".into()),
            consumer_id: md.string(&["consumerID"]),
            processing_timeout: ms(md, &["processingTimeout"], Duration::from_secs(60))?,
            redeliver_interval: ms(md, &["redeliverInterval"], Duration::from_secs(15))?,
            poll_interval: ms(md, &["pollInterval"], Duration::from_millis(200))?,
            concurrency: md.u64(&["concurrency"], 10)?.clamp(1, 10_000) as usize,
            concurrency_mode: mode,
            max_delivery_count: md.u64(&["maxDeliveryCount"], 10)?.clamp(1, u32::MAX as u64) as u32,
            cleanup_interval: md.duration(&["cleanupInterval"], Duration::from_secs(60))?,
            retention_period: md.duration(&["retentionPeriod"], Duration::ZERO)?,
            busy_timeout: md.duration(&["busyTimeout"], Duration::from_secs(5))?,
            disable_wal: md.bool(&["disableWAL"], false)?,
        };
        if !valid_identifier(&cfg.table_prefix) {
            return Err(err("tablePrefix", format!("{:?} is not a valid table name (letters, digits and _ only)", cfg.table_prefix)));
        }
        if cfg.poll_interval.is_zero() {
            return Err(err("pollInterval", "must be above zero"));
        }
        Ok(cfg)
    }

    /// Whether the database lives in memory (one process only, no WAL).
    pub fn in_memory(&self) -> bool {
        self.connection_string.contains(":memory:") || self.connection_string.contains("mode=memory")
    }
}

fn err(key: &str, reason: impl Into<String>) -> MetadataError {
    MetadataError { component: String::new(), key: key.into(), reason: reason.into() }
}

/// Table names are interpolated into SQL, so only plain identifiers pass.
fn valid_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&str, &str)]) -> ComponentMetadata {
        let p: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ComponentMetadata::new("ps", &p)
    }

    #[test]
    fn defaults_follow_redis_streams() {
        let cfg = BrokerConfig::from_metadata(&mut md(&[("connectionString", "x.db")])).unwrap();
        assert_eq!(cfg.processing_timeout, Duration::from_secs(60));
        assert_eq!(cfg.redeliver_interval, Duration::from_secs(15));
        assert_eq!(cfg.max_delivery_count, 10);
        assert_eq!(cfg.concurrency_mode, ConcurrencyMode::Parallel);
        assert_eq!(cfg.retention_period, Duration::ZERO);
    }

    #[test]
    fn bare_integers_are_milliseconds_and_bad_values_name_their_key() {
        let cfg = BrokerConfig::from_metadata(&mut md(&[("connectionString", "x.db"), ("processingTimeout", "1500"), ("redeliverInterval", "2s")])).unwrap();
        assert_eq!(cfg.processing_timeout, Duration::from_millis(1500));
        assert_eq!(cfg.redeliver_interval, Duration::from_secs(2));
        let e = BrokerConfig::from_metadata(&mut md(&[("connectionString", "x.db"), ("tablePrefix", "a;b")])).unwrap_err();
        assert_eq!(e.key, "tablePrefix");
        let e = BrokerConfig::from_metadata(&mut md(&[("connectionString", "x.db"), ("concurrencyMode", "many")])).unwrap_err();
        assert_eq!(e.key, "concurrencyMode");
        assert!(BrokerConfig::from_metadata(&mut md(&[])).is_err());
    }
}
