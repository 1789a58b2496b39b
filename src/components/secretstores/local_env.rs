//! `secretstores.local.env`: secrets from the sidecar's environment variables, as Dapr's store:
//! an optional `prefix` is prepended on lookup and stripped in bulk answers; `DAPR_*` and
//! `APP_API_TOKEN` are never exposed; a missing variable reads as an empty value.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{Metadata, Secret, SecretError, SecretStore};
use crate::components::metadata::{ComponentMetadata, MetadataError};

/// The environment-variable store.
#[derive(Debug, Clone, Default)]
pub struct EnvSecretStore {
    prefix: String,
}

impl EnvSecretStore {
    /// Reads `prefix` from the component metadata.
    pub fn from_metadata(md: &mut ComponentMetadata) -> Result<Self, MetadataError> {
        Ok(Self { prefix: md.string(&["prefix"]).unwrap_or_default() })
    }
}

fn allowed(var: &str) -> bool {
    let upper = var.to_ascii_uppercase();
    upper != "APP_API_TOKEN" && !upper.starts_with("DAPR_")
}

#[async_trait]
impl SecretStore for EnvSecretStore {
    fn features(&self) -> &'static [&'static str] {
        &[]
    }

    async fn get(&self, name: &str, _metadata: &Metadata) -> Result<Secret, SecretError> {
        let var = format!("{}{name}", self.prefix);
        let value = if allowed(&var) { std::env::var(&var).unwrap_or_default() } else { String::new() };
        Ok(BTreeMap::from([(name.to_string(), value)]))
    }

    async fn bulk_get(&self, _metadata: &Metadata) -> Result<BTreeMap<String, Secret>, SecretError> {
        Ok(std::env::vars()
            .filter(|(k, _)| allowed(k) && k.len() > self.prefix.len() && k.starts_with(&self.prefix))
            .map(|(k, v)| {
                let name = k[self.prefix.len()..].to_string();
                (name.clone(), BTreeMap::from([(name, v)]))
            })
            .collect())
    }
}
