//! The component registry: which implementation serves which (category, type, version).
//!
//! Data, not code paths: one map keyed by (category, type, version) whose factories build an
//! `Instance`. Each category registers its implementations (`CategoryKind::register`, in its
//! folder), so adding an implementation never edits this file; a category's `add_*` method and
//! its `Factory` variant come from its line in `categories.rs`. An unknown type lists what
//! exists, and never crashes the sidecar (the supervisor marks the component failed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::components::categories::Factory;
use crate::components::category::{Category, Instance};
use crate::components::metadata::{ComponentMetadata, MetadataError};
use crate::components::state::StateStore;
use crate::config::ComponentSpec;

/// Why a component could not start.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ComponentError {
    /// No implementation for the type/version.
    #[error("component {name}: unknown type {type_name}/{version}; known {category} types: {known}")]
    UnknownType {
        /// Component name.
        name: String,
        /// Requested type.
        type_name: String,
        /// Requested version.
        version: String,
        /// Its category.
        category: String,
        /// What exists in that category.
        known: String,
    },
    /// Metadata missing or invalid.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The implementation failed to initialise.
    #[error("component {name}: init failed: {reason}")]
    Init {
        /// Component name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Init exceeded `initTimeout`.
    #[error("init did not finish within {0:?}")]
    InitTimeout(Duration),
}

impl ComponentError {
    /// Whether retrying can help (a down server can come back; a bad type cannot).
    pub fn is_permanent(&self) -> bool {
        matches!(self, ComponentError::UnknownType { .. } | ComponentError::Metadata(_))
    }
}

/// Every implementation rapr ships, keyed by (category, type, version).
pub struct Registry {
    factories: BTreeMap<(Category, String, String), Factory>,
}

impl Default for Registry {
    fn default() -> Self {
        let mut reg = Self { factories: BTreeMap::new() };
        reg.register_categories();
        reg
    }
}

/// Warns once about metadata keys an implementation did not read.
pub fn warn_unread(name: &str, md: &ComponentMetadata) {
    let unread = md.unread();
    if !unread.is_empty() {
        tracing::warn!(component = %name, keys = ?unread, "metadata keys not used by this component");
    }
}

impl Registry {
    /// Registers `factory` under type names and a version (the generated `add_*` methods call it).
    pub(crate) fn add(&mut self, category: Category, types: &[&str], version: &str, factory: Factory) {
        for t in types {
            self.factories.insert((category, t.to_string(), version.to_string()), factory);
        }
    }

    /// Builds and initialises the component of `spec` (its `secretKeyRef`s already resolved).
    pub async fn build(&self, spec: &ComponentSpec) -> Result<Instance, ComponentError> {
        let category = Category::of(&spec.type_name);
        let found = category.and_then(|c| self.factories.get(&(c, spec.type_name.clone(), spec.version.clone())).copied());
        let Some(factory) = found else {
            let known: Vec<String> =
                self.factories.keys().filter(|(c, _, _)| Some(*c) == category).map(|(_, t, v)| format!("{t}/{v}")).collect();
            return Err(ComponentError::UnknownType {
                name: spec.name.clone(),
                type_name: spec.type_name.clone(),
                version: spec.version.clone(),
                category: spec.category().to_string(),
                known: known.join(", "),
            });
        };
        let md = ComponentMetadata::new(&spec.name, &spec.literal_metadata());
        factory.build(spec.name.clone(), md).await
    }

    /// Builds a state store (conformance suites and tools that want the trait object itself).
    pub async fn build_state(&self, spec: &ComponentSpec) -> Result<Arc<dyn StateStore>, ComponentError> {
        match self.build(spec).await? {
            Instance::State(s) => Ok(s),
            other => Err(ComponentError::Init { name: spec.name.clone(), reason: format!("a {} component, not a state store", other.category().as_str()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(type_name: &str) -> ComponentSpec {
        ComponentSpec::new("c", type_name)
    }

    #[tokio::test]
    async fn builds_by_category_and_lists_only_that_category_when_unknown() {
        let reg = Registry::default();
        assert_eq!(reg.build(&spec("state.in-memory")).await.unwrap().category(), Category::State);
        assert_eq!(reg.build(&spec("secretstores.local.env")).await.unwrap().category(), Category::SecretStores);
        let Err(err) = reg.build(&spec("state.nosuch")).await else { panic!("an unknown type must fail") };
        let text = err.to_string();
        assert!(err.is_permanent());
        assert!(text.contains("state.sqlite/v1") && !text.contains("secretstores"), "{text}");
        let Err(err) = reg.build(&spec("secretstores.nosuch")).await else { panic!("an unknown type must fail") };
        assert!(err.to_string().contains("secretstores.local.file/v1") && !err.to_string().contains("state."), "{err}");
    }
}
