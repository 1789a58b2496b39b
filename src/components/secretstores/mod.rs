//! The secret store contract (`SecretStore`) and its implementations: `secretstores.local.file`
//! and `secretstores.local.env`. Secrets are name → key/value maps, as Dapr returns them.

pub mod client;
pub mod kind;
pub mod local_env;
pub mod local_file;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

pub use client::SecretClient;

use crate::components::registry::{warn_unread, ComponentError, Registry};
use local_env::EnvSecretStore;
use local_file::{FileSecretStore, FileStoreError};

/// Registers the secret stores rapr ships.
pub fn register(reg: &mut Registry) {
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
}

/// One secret: its key/value pairs (one pair unless the store is multi-valued).
pub type Secret = BTreeMap<String, String>;

/// Request metadata (`metadata.*` query parameters, gRPC metadata map).
pub type Metadata = std::collections::HashMap<String, String>;

/// Errors a secret store reports.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SecretError {
    /// No secret by that name.
    #[error("secret {0} not found")]
    NotFound(String),
    /// The backend failed.
    #[error("{0}")]
    Backend(String),
    /// The store did not answer in time.
    #[error("the secret store did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The store's process is gone.
    #[error("the secret store is unavailable: {0}")]
    Unavailable(String),
}

/// The contract of a secret store implementation.
#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// Capabilities reported in metadata (`MULTIPLE_KEY_VALUES_PER_SECRET`).
    fn features(&self) -> &'static [&'static str];

    /// One secret by name.
    async fn get(&self, name: &str, metadata: &Metadata) -> Result<Secret, SecretError>;

    /// Every secret, by name.
    async fn bulk_get(&self, metadata: &Metadata) -> Result<BTreeMap<String, Secret>, SecretError>;

    /// Checks the backend answers (the host's health probe); the local stores have nothing to
    /// reach, so the default is healthy.
    async fn ping(&self) -> Result<(), SecretError> {
        Ok(())
    }
}
