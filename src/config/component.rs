//! The `Component` resource (dapr.io/v1alpha1) as rapr holds it after loading.

use std::path::PathBuf;
use std::time::Duration;

/// A reference to a secret that resolves a metadata value (resolved in a later issue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretKeyRef {
    /// Secret name in the store.
    pub name: String,
    /// Key within the secret (defaults to the name).
    pub key: String,
}

/// One `name`/`value` pair of a component's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataItem {
    /// Key as written.
    pub name: String,
    /// Literal value, stringified (YAML numbers and booleans included).
    pub value: Option<String>,
    /// Secret reference, when the value comes from a secret store.
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// A loaded component definition.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentSpec {
    /// `metadata.name`: how apps address the component.
    pub name: String,
    /// `metadata.namespace`, if any.
    pub namespace: Option<String>,
    /// `spec.type`, e.g. `state.sqlite`.
    pub type_name: String,
    /// `spec.version`, e.g. `v1`.
    pub version: String,
    /// `spec.metadata`.
    pub metadata: Vec<MetadataItem>,
    /// `scopes`: app ids allowed to load it; empty means all.
    pub scopes: Vec<String>,
    /// `spec.initTimeout` (Dapr's default 5s).
    pub init_timeout: Duration,
    /// `spec.ignoreErrors`: a failure does not make the sidecar unhealthy.
    pub ignore_errors: bool,
    /// `auth.secretStore`, the store resolving `secretKeyRef`s.
    pub secret_store: Option<String>,
    /// The file it was read from.
    pub source: PathBuf,
}

impl ComponentSpec {
    /// A `v1` component with daprd's defaults (5 s `initTimeout`, no metadata, no scopes): what
    /// tests, benches and embedded defaults build before adding their metadata.
    pub fn new(name: &str, type_name: &str) -> Self {
        Self {
            name: name.into(),
            namespace: None,
            type_name: type_name.into(),
            version: "v1".into(),
            metadata: vec![],
            scopes: vec![],
            init_timeout: Duration::from_secs(5),
            ignore_errors: false,
            secret_store: None,
            source: PathBuf::new(),
        }
    }

    /// The same with literal metadata pairs added.
    pub fn with_metadata<'a>(mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        self.metadata.extend(pairs.into_iter().map(|(k, v)| MetadataItem { name: k.into(), value: Some(v.into()), secret_key_ref: None }));
        self
    }

    /// The building-block category: the part of the type before the first dot (`state`).
    pub fn category(&self) -> &str {
        self.type_name.split('.').next().unwrap_or_default()
    }

    /// Literal metadata pairs (secret references resolve to nothing until secret stores exist).
    pub fn literal_metadata(&self) -> Vec<(String, String)> {
        self.metadata.iter().filter_map(|m| m.value.clone().map(|v| (m.name.clone(), v))).collect()
    }

    /// The value of a metadata key, compared case-insensitively.
    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        self.metadata.iter().find(|m| m.name.eq_ignore_ascii_case(key)).and_then(|m| m.value.as_deref())
    }
}
