//! Typed decoding of a component's Dapr metadata (the `name`/`value` list of its YAML).
//!
//! One helper for every implementation: case-insensitive keys, aliases, string to bool, number
//! and duration (Go syntax `"10s"`, `"1h"`, or a bare integer of seconds, as dapr/kit's metadata
//! decoder reads them), and errors that name the component and key.
//! Keys the runtime itself reads (`keyPrefix`, `actorStateStore`...) are accepted everywhere.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::config::duration::{self, BareInteger, GoDuration};

pub mod templates;

/// Metadata keys read by the runtime rather than by a component implementation.
const RUNTIME_KEYS: &[&str] = &["keyprefix", "actorstatestore", "outboxpublishpubsub", "outboxpublishtopic", "consumerid"];

/// A metadata value that could not be decoded.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("component {component}: metadata {key}: {reason}")]
pub struct MetadataError {
    /// The component's name.
    pub component: String,
    /// The offending key.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A component's metadata, read once per key by the implementation that owns it.
#[derive(Debug, Clone)]
pub struct ComponentMetadata {
    component: String,
    values: HashMap<String, String>,
    read: BTreeSet<String>,
}

impl ComponentMetadata {
    /// Wraps the resolved name/value pairs of `component`.
    pub fn new(component: &str, pairs: &[(String, String)]) -> Self {
        let values = pairs.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
        Self { component: component.to_string(), values, read: BTreeSet::new() }
    }

    fn error(&self, key: &str, reason: impl Into<String>) -> MetadataError {
        MetadataError { component: self.component.clone(), key: key.to_string(), reason: reason.into() }
    }

    /// The raw string under any of `names` (first is canonical), if set and not empty.
    pub fn string(&mut self, names: &[&str]) -> Option<String> {
        for name in names {
            let k = name.to_ascii_lowercase();
            self.read.insert(k.clone());
            if let Some(v) = self.values.get(&k).filter(|v| !v.is_empty()) {
                return Some(v.clone());
            }
        }
        None
    }

    /// A string that must be present.
    pub fn required(&mut self, names: &[&str]) -> Result<String, MetadataError> {
        self.string(names).ok_or_else(|| self.error(names[0], "is required"))
    }

    /// A boolean (`true/false`, `1/0`, `yes/no`, `on/off`).
    pub fn bool(&mut self, names: &[&str], default: bool) -> Result<bool, MetadataError> {
        match self.string(names) {
            None => Ok(default),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" | "y" => Ok(true),
                "false" | "0" | "no" | "off" | "n" => Ok(false),
                _ => Err(self.error(names[0], format!("{v:?} is not a boolean"))),
            },
        }
    }

    /// A non-negative integer.
    pub fn u64(&mut self, names: &[&str], default: u64) -> Result<u64, MetadataError> {
        match self.string(names) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| self.error(names[0], format!("{v:?} is not a non-negative integer"))),
        }
    }

    /// A duration as dapr/kit's metadata decoder reads it: Go syntax (`"500ms"`, `"10s"`, `"1h"`)
    /// or a bare integer of seconds. `"0"` or a negative value gives `Duration::ZERO` (Dapr's
    /// "disabled").
    pub fn duration(&mut self, names: &[&str], default: Duration) -> Result<Duration, MetadataError> {
        Ok(self.go_duration(names, BareInteger::Seconds)?.map_or(default, GoDuration::clamped))
    }

    /// A signed duration whose bare-integer unit is `bare` (e.g. milliseconds for contrib's
    /// Redis settings), for readers that give a negative value a meaning of their own.
    pub fn go_duration(&mut self, names: &[&str], bare: BareInteger) -> Result<Option<GoDuration>, MetadataError> {
        match self.string(names) {
            None => Ok(None),
            Some(v) => duration::parse(&v, bare).map(Some).map_err(|e| self.error(names[0], format!("{v:?} is not a duration: {e}"))),
        }
    }

    /// Keys set in the YAML that neither the implementation nor the runtime read.
    pub fn unread(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .values
            .keys()
            .filter(|k| !self.read.contains(*k) && !RUNTIME_KEYS.contains(&k.as_str()))
            .cloned()
            .collect();
        keys.sort();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&str, &str)]) -> ComponentMetadata {
        let p: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ComponentMetadata::new("store", &p)
    }

    #[test]
    fn keys_are_case_insensitive_with_aliases() {
        let mut m = md(&[("ConnectionString", "a.db")]);
        assert_eq!(m.string(&["connectionString"]).as_deref(), Some("a.db"));
        let mut m = md(&[("url", "b.db")]);
        assert_eq!(m.string(&["connectionString", "url"]).as_deref(), Some("b.db"));
    }

    #[test]
    fn typed_values_and_errors_name_component_and_key() {
        let mut m = md(&[("timeout", "10s"), ("flag", "maybe"), ("n", "-3")]);
        assert_eq!(m.duration(&["timeout"], Duration::ZERO), Ok(Duration::from_secs(10)));
        let e = m.bool(&["flag"], false).unwrap_err();
        assert_eq!(e.to_string(), "component store: metadata flag: \"maybe\" is not a boolean");
        assert!(m.u64(&["n"], 0).is_err());
        assert!(m.required(&["missing"]).is_err());
    }

    #[test]
    fn durations_as_dapr_kit_metadata_reads_them() {
        let mut m = md(&[("a", "1h"), ("b", "0"), ("c", "-1"), ("d", "500ms"), ("e", "soon"), ("f", "30"), ("g", "1.5"), ("h", "250")]);
        let zero = Duration::ZERO;
        assert_eq!(m.duration(&["a"], zero), Ok(Duration::from_secs(3600)));
        assert_eq!(m.duration(&["b"], Duration::from_secs(9)), Ok(zero));
        assert_eq!(m.duration(&["c"], Duration::from_secs(9)), Ok(zero), "negative is disabled");
        assert_eq!(m.duration(&["d"], zero), Ok(Duration::from_millis(500)));
        assert_eq!(m.duration(&["f"], zero), Ok(Duration::from_secs(30)), "bare integers are seconds");
        assert_eq!(m.duration(&["missing"], Duration::from_secs(7)), Ok(Duration::from_secs(7)));
        let e = m.duration(&["e"], zero).unwrap_err();
        assert_eq!(e.key, "e");
        assert!(e.reason.contains("\"soon\" is not a duration"), "{e}");
        assert!(m.duration(&["g"], zero).is_err(), "a bare fraction has no unit");
        assert_eq!(m.go_duration(&["h"], BareInteger::Milliseconds), Ok(Some(GoDuration(250_000_000))));
        assert_eq!(m.go_duration(&["c"], BareInteger::Milliseconds), Ok(Some(GoDuration(-1_000_000))));
    }

    #[test]
    fn unread_keys_skip_runtime_keys() {
        let mut m = md(&[("a", "1"), ("keyPrefix", "none"), ("b", "2")]);
        m.string(&["a"]);
        assert_eq!(m.unread(), vec!["b".to_string()]);
    }
}
