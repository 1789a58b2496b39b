//! The secret store contract (`SecretStore`) and its implementations: `secretstores.local.file`
//! and `secretstores.local.env`. Secrets are name → key/value maps, as Dapr returns them.

pub mod host;
pub mod local_env;
pub mod local_file;

use std::collections::BTreeMap;

use async_trait::async_trait;

pub use host::{SecretClient, SecretStoreHost};

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
}
