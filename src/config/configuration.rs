//! The `Configuration` resource (dapr.io/v1alpha1), read from `--config`.
//!
//! Only what rapr acts on is typed (`features`); every other section is kept by name so the
//! loader can warn once about the parts not implemented yet instead of silently ignoring them.

use std::collections::BTreeMap;

/// A parsed configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigurationSpec {
    /// `metadata.name`.
    pub name: String,
    /// Preview features switched on (`spec.features[].enabled: true`).
    pub enabled_features: Vec<String>,
    /// Other `spec` sections present, by name, which rapr does not apply yet.
    pub unimplemented: Vec<String>,
}

/// Sections of `spec` that rapr applies.
const IMPLEMENTED: &[&str] = &["features"];

impl ConfigurationSpec {
    /// Builds the spec from the document's `metadata.name` and `spec` mapping.
    pub fn from_spec(name: &str, spec: &BTreeMap<String, yaml_serde::Value>) -> Result<Self, String> {
        let mut enabled_features = Vec::new();
        if let Some(features) = spec.get("features") {
            let list = features.as_sequence().ok_or("spec.features must be a list")?;
            for f in list {
                let fname = f.get("name").and_then(|v| v.as_str()).ok_or("spec.features[].name is required")?;
                let enabled = match f.get("enabled") {
                    None => false,
                    Some(v) => v.as_bool().ok_or_else(|| format!("spec.features[{fname}].enabled must be a boolean"))?,
                };
                if enabled {
                    enabled_features.push(fname.to_string());
                }
            }
        }
        let unimplemented =
            spec.keys().filter(|k| !IMPLEMENTED.contains(&k.as_str())).cloned().collect::<Vec<_>>();
        Ok(Self { name: name.to_string(), enabled_features, unimplemented })
    }
}
