//! `Category`: the building blocks rapr runs components for, and `Instance`, one running
//! component of any of them.
//!
//! These two enums are the only closed lists of categories in the component machinery: the
//! registry, the host, the supervisor and the directory are generic over them. Adding a category
//! is a variant here, its folder, its facade and one `register` line in the registry
//! (docs/architecture.md §1).

use std::sync::Arc;

use crate::components::secretstores::SecretStore;
use crate::components::state::StateStore;

/// A building block with components rapr implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// `state.*`
    State,
    /// `secretstores.*`
    SecretStores,
}

impl Category {
    /// The category of a Dapr type (`state.redis` -> `State`); `None` for a building block rapr
    /// does not implement yet (shown as unsupported, never loaded).
    pub fn of(type_name: &str) -> Option<Self> {
        match type_name.split('.').next().unwrap_or_default() {
            "state" => Some(Category::State),
            "secretstores" => Some(Category::SecretStores),
            _ => None,
        }
    }

    /// Dapr's name of the category (the type's prefix).
    pub fn as_str(self) -> &'static str {
        match self {
            Category::State => "state",
            Category::SecretStores => "secretstores",
        }
    }
}

/// One initialised component: the category's trait object.
#[derive(Clone)]
pub enum Instance {
    /// A state store.
    State(Arc<dyn StateStore>),
    /// A secret store.
    Secret(Arc<dyn SecretStore>),
}

impl Instance {
    /// Its category.
    pub fn category(&self) -> Category {
        match self {
            Instance::State(_) => Category::State,
            Instance::Secret(_) => Category::SecretStores,
        }
    }

    /// Capabilities for `/v1.0/metadata`.
    pub fn capabilities(&self) -> Vec<&'static str> {
        match self {
            Instance::State(s) => s.features().iter().map(|f| f.as_str()).collect(),
            Instance::Secret(s) => s.features().to_vec(),
        }
    }

    /// Whether the backend answers (the host's health probe).
    pub async fn ping(&self) -> Result<(), String> {
        match self {
            Instance::State(s) => s.ping().await.map_err(|e| e.to_string()),
            Instance::Secret(s) => s.ping().await.map_err(|e| e.to_string()),
        }
    }

    /// Releases the backend's resources (after the in-flight calls drained).
    pub async fn close(&self) {
        match self {
            Instance::State(s) => s.close().await,
            Instance::Secret(_) => {}
        }
    }
}
