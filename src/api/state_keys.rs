//! Dapr's state key scheme: `appid||key` by default, or the store's `keyPrefix` strategy
//! (`appid`, `name`, `namespace`, `none`, or a custom prefix), so data is shared with Dapr.

use crate::config::ComponentSpec;

/// The separator Dapr puts between prefix parts and the key.
pub const SEPARATOR: &str = "||";

/// A key that cannot be stored (it contains the separator).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("input key/keyPrefix '{0}' can't contain '||'")]
pub struct IllegalKey(pub String);

/// How one store prefixes keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPrefix(Option<String>);

impl KeyPrefix {
    /// Builds the strategy from the component's `keyPrefix` metadata.
    pub fn from_spec(spec: &ComponentSpec, app_id: &str) -> Result<Self, String> {
        let strategy = spec.metadata_value("keyPrefix").unwrap_or("appid").to_ascii_lowercase();
        let app = (!app_id.is_empty()).then(|| app_id.to_string());
        let prefix = match strategy.as_str() {
            "" | "appid" => app,
            "name" => Some(spec.name.clone()),
            "none" => None,
            "namespace" => match (std::env::var("NAMESPACE").ok().filter(|n| !n.is_empty()), app) {
                (Some(ns), Some(app)) => Some(format!("{ns}.{app}")),
                (None, app) => app,
                (Some(_), None) => None,
            },
            custom => Some(custom.to_string()),
        };
        if let Some(p) = &prefix {
            if p.contains(SEPARATOR) {
                return Err(IllegalKey(p.clone()).to_string());
            }
        }
        Ok(Self(prefix))
    }

    /// A strategy with a fixed prefix (tests).
    pub fn fixed(prefix: Option<&str>) -> Self {
        Self(prefix.map(str::to_string))
    }

    /// The stored key for an app key.
    pub fn apply(&self, key: &str) -> Result<String, IllegalKey> {
        if key.contains(SEPARATOR) {
            return Err(IllegalKey(key.to_string()));
        }
        Ok(match &self.0 {
            Some(p) => format!("{p}{SEPARATOR}{key}"),
            None => key.to_string(),
        })
    }

    /// The prefix every stored key of this app starts with (for queries).
    pub fn scan_prefix(&self) -> String {
        self.0.as_ref().map(|p| format!("{p}{SEPARATOR}")).unwrap_or_default()
    }

    /// The app key of a stored key, as Dapr strips it: the second `||` part when there is one.
    pub fn strip(stored: &str) -> &str {
        let mut parts = stored.split(SEPARATOR);
        match (parts.next(), parts.next()) {
            (Some(_), Some(second)) => second,
            _ => stored,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(prefix: Option<&str>) -> ComponentSpec {
        ComponentSpec::new("store", "state.in-memory").with_metadata(prefix.map(|p| ("keyPrefix", p)))
    }

    #[test]
    fn strategies() {
        assert_eq!(KeyPrefix::from_spec(&spec(None), "app").unwrap().apply("k").unwrap(), "app||k");
        assert_eq!(KeyPrefix::from_spec(&spec(Some("name")), "app").unwrap().apply("k").unwrap(), "store||k");
        assert_eq!(KeyPrefix::from_spec(&spec(Some("none")), "app").unwrap().apply("k").unwrap(), "k");
        assert_eq!(KeyPrefix::from_spec(&spec(Some("MyPrefix")), "app").unwrap().apply("k").unwrap(), "myprefix||k");
        assert_eq!(KeyPrefix::from_spec(&spec(None), "").unwrap().apply("k").unwrap(), "k");
        assert!(KeyPrefix::from_spec(&spec(Some("a||b")), "app").is_err());
    }

    #[test]
    fn illegal_keys_and_strip() {
        assert_eq!(KeyPrefix::fixed(None).apply("a||b"), Err(IllegalKey("a||b".into())));
        assert_eq!(KeyPrefix::strip("app||k"), "k");
        assert_eq!(KeyPrefix::strip("k"), "k");
        assert_eq!(KeyPrefix::strip("a||b||c"), "b");
    }
}
