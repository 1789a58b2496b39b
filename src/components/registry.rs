//! The component registry: which implementation serves which Dapr type and version.
//!
//! Data, not code paths: `add(&["state.sqlite"], "v1", factory)`. An unknown type lists what
//! exists, and never crashes the sidecar (the supervisor marks the component failed).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::components::metadata::{ComponentMetadata, MetadataError};
use crate::components::secretstores::local_env::EnvSecretStore;
use crate::components::secretstores::local_file::{FileSecretStore, FileStoreError};
use crate::components::secretstores::SecretStore;
use crate::components::state::{memory::MemoryStore, sqlite, StateStore};
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

type StateFuture = Pin<Box<dyn Future<Output = Result<Arc<dyn StateStore>, ComponentError>> + Send>>;
type StateFactory = fn(String, ComponentMetadata) -> StateFuture;
type SecretFactory = fn(String, ComponentMetadata) -> Result<Arc<dyn SecretStore>, ComponentError>;

/// Every implementation rapr ships, by category.
pub struct Registry {
    state: BTreeMap<(String, String), StateFactory>,
    secret: BTreeMap<(String, String), SecretFactory>,
}

impl Default for Registry {
    fn default() -> Self {
        let mut reg = Self { state: BTreeMap::new(), secret: BTreeMap::new() };
        reg.add_secret(&["secretstores.local.file"], "v1", |name, mut md| {
            let store = FileSecretStore::from_metadata(&mut md).map_err(|e| match e {
                FileStoreError::Metadata(m) => ComponentError::Metadata(m),
                FileStoreError::File { .. } => ComponentError::Init { name: name.clone(), reason: e.to_string() },
            })?;
            warn_unread(&name, &md);
            Ok(Arc::new(store) as Arc<dyn SecretStore>)
        });
        reg.add_secret(&["secretstores.local.env"], "v1", |name, mut md| {
            let store = EnvSecretStore::from_metadata(&mut md)?;
            warn_unread(&name, &md);
            Ok(Arc::new(store) as Arc<dyn SecretStore>)
        });
        reg.add_state(&["state.in-memory"], "v1", |_name, _md| Box::pin(async { Ok(Arc::new(MemoryStore::new()) as Arc<dyn StateStore>) }));
        reg.add_state(&["state.sqlite", "state.sqlite3"], "v1", |name, mut md| {
            Box::pin(async move {
                let cfg = sqlite::SqliteConfig::from_metadata(&mut md).map_err(|mut e| {
                    e.component = name.clone();
                    e
                })?;
                warn_unread(&name, &md);
                let store = sqlite::SqliteStore::open(&name, cfg)
                    .await
                    .map_err(|e| ComponentError::Init { name: name.clone(), reason: e.to_string() })?;
                Ok(Arc::new(store) as Arc<dyn StateStore>)
            })
        });
        crate::components::state::redis::register(&mut reg);
        crate::components::state::postgres::register(&mut reg);
        crate::components::state::mysql::register(&mut reg);
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
    /// Registers a state store factory under type names and a version.
    pub fn add_state(&mut self, types: &[&str], version: &str, factory: StateFactory) {
        for t in types {
            self.state.insert((t.to_string(), version.to_string()), factory);
        }
    }

    /// Registers a secret store factory under type names and a version.
    pub fn add_secret(&mut self, types: &[&str], version: &str, factory: SecretFactory) {
        for t in types {
            self.secret.insert((t.to_string(), version.to_string()), factory);
        }
    }

    /// Categories rapr implements; components of other categories are reported as unsupported.
    pub fn implements_category(&self, category: &str) -> bool {
        matches!(category, "state" | "secretstores")
    }

    /// Builds the secret store of `spec`.
    pub async fn build_secret(&self, spec: &ComponentSpec) -> Result<Arc<dyn SecretStore>, ComponentError> {
        let key = (spec.type_name.clone(), spec.version.clone());
        let Some(factory) = self.secret.get(&key) else {
            return Err(unknown(spec, self.secret.keys()));
        };
        let md = ComponentMetadata::new(&spec.name, &spec.literal_metadata());
        let store = factory(spec.name.clone(), md)?;
        Ok(store)
    }

    /// Builds and initialises the state store of `spec`.
    pub async fn build_state(&self, spec: &ComponentSpec) -> Result<Arc<dyn StateStore>, ComponentError> {
        let key = (spec.type_name.clone(), spec.version.clone());
        let Some(factory) = self.state.get(&key) else {
            return Err(unknown(spec, self.state.keys()));
        };
        let md = ComponentMetadata::new(&spec.name, &spec.literal_metadata());
        factory(spec.name.clone(), md).await
    }

}

fn unknown<'a>(spec: &ComponentSpec, known: impl Iterator<Item = &'a (String, String)>) -> ComponentError {
    let known: Vec<String> = known.map(|(t, v)| format!("{t}/{v}")).collect();
    ComponentError::UnknownType {
        name: spec.name.clone(),
        type_name: spec.type_name.clone(),
        version: spec.version.clone(),
        category: spec.category().to_string(),
        known: known.join(", "),
    }
}
