//! The one `secretKeyRef` resolver, used by components and `HTTPEndpoint`s alike.
//!
//! A resource names its store in `auth.secretStore`; every secret it references is read once
//! from that store (as the supervisor last published it in the directory), then each reference
//! looks its key up. What a caller does with a failure is its own policy: a component starts
//! without the value, as daprd's secret processor does (pkg/runtime/processor/secret), while an
//! `HTTPEndpoint` becomes a failed resource (docs/runtime-semantics.md).

use std::collections::BTreeMap;

use crate::components::directory::Directory;
use crate::components::secretstores::{Secret, SecretClient};
use crate::config::component::SecretKeyRef;

/// Why a reference has no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// The resource has no `auth.secretStore`.
    #[error("uses secretKeyRef but auth.secretStore is not set (there is no default secret store in self-hosted mode)")]
    NoStoreSet,
    /// No secret store by that name exists.
    #[error("secret store {0} is not configured")]
    StoreNotConfigured(String),
    /// The store exists but is not ready (failed or starting).
    #[error("secret store {store} is not ready: {why}")]
    StoreNotReady {
        /// The store.
        store: String,
        /// Its last error.
        why: String,
    },
    /// Reading the secret failed.
    #[error("secret {name} from secret store {store}: {error}")]
    Secret {
        /// Secret name.
        name: String,
        /// The store.
        store: String,
        /// The store's error.
        error: String,
    },
    /// The secret has no such key.
    #[error("secret {name} in secret store {store} has no key {key}")]
    MissingKey {
        /// Secret name.
        name: String,
        /// The store.
        store: String,
        /// The key.
        key: String,
    },
}

impl RefError {
    /// Whether the store itself is missing for good (no store set or none by that name).
    pub fn is_permanent(&self) -> bool {
        matches!(self, RefError::NoStoreSet | RefError::StoreNotConfigured(_))
    }
}

/// The secrets one resource references, read once each.
#[derive(Debug, Default)]
pub struct SecretRefs {
    store: String,
    fetched: BTreeMap<String, Result<Secret, String>>,
}

impl SecretRefs {
    /// Reads every secret `refs` name (each once) from `store` as published in `directory`.
    /// Fails only when the store cannot be used at all; a secret that cannot be read fails the
    /// references to it, in `value`.
    pub async fn fetch<'r>(directory: &Directory, store: Option<&str>, refs: impl IntoIterator<Item = &'r SecretKeyRef>) -> Result<Self, RefError> {
        let mut names: Vec<&str> = Vec::new();
        for r in refs {
            if !names.contains(&r.name.as_str()) {
                names.push(&r.name);
            }
        }
        if names.is_empty() {
            return Ok(Self::default());
        }
        let store = store.ok_or(RefError::NoStoreSet)?;
        let client = client(directory, store)?;
        let mut fetched = BTreeMap::new();
        for name in names {
            let secret = client.get(name.to_string(), Default::default()).await.map_err(|e| e.to_string());
            fetched.insert(name.to_string(), secret);
        }
        Ok(Self { store: store.to_string(), fetched })
    }

    /// Answers as if `store` had been read (parsers' unit tests).
    #[cfg(test)]
    pub(crate) fn answered(store: &str, fetched: BTreeMap<String, Result<Secret, String>>) -> Self {
        Self { store: store.to_string(), fetched }
    }

    /// The value of one reference.
    pub fn value(&self, r: &SecretKeyRef) -> Result<String, RefError> {
        match self.fetched.get(&r.name) {
            Some(Ok(secret)) => secret
                .get(&r.key)
                .cloned()
                .ok_or_else(|| RefError::MissingKey { name: r.name.clone(), store: self.store.clone(), key: r.key.clone() }),
            Some(Err(e)) => Err(RefError::Secret { name: r.name.clone(), store: self.store.clone(), error: e.clone() }),
            None => Err(RefError::Secret { name: r.name.clone(), store: self.store.clone(), error: "the secret was not read".into() }),
        }
    }
}

fn client(directory: &Directory, store: &str) -> Result<SecretClient, RefError> {
    match (directory.secrets.get(store), directory.secrets_unavailable.get(store)) {
        (Some(client), _) => Ok(client.clone()),
        (None, Some(why)) => Err(RefError::StoreNotReady { store: store.to_string(), why: why.clone() }),
        (None, None) => Err(RefError::StoreNotConfigured(store.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::components::secretstores::local_file::FileSecretStore;
    use crate::components::metadata::ComponentMetadata;

    fn r(name: &str, key: &str) -> SecretKeyRef {
        SecretKeyRef { name: name.into(), key: key.into() }
    }

    #[tokio::test]
    async fn reads_each_secret_once_and_reports_each_reference() {
        let file = std::env::temp_dir().join(format!("rapr-refs-{}.json", std::process::id()));
        std::fs::write(&file, r#"{"a": "a-value"}"#).unwrap();
        let mut md = ComponentMetadata::new("file", &[("secretsFile".to_string(), file.display().to_string())]);
        let store = FileSecretStore::from_metadata(&mut md).unwrap();
        let mut d = Directory::default();
        d.secrets.insert("env".into(), SecretClient::new(Arc::new(store), Duration::from_secs(5), TaskTracker::new()));
        let refs = [r("a", "a"), r("a", "other"), r("missing", "missing")];
        let s = SecretRefs::fetch(&d, Some("env"), &refs).await.unwrap();
        assert_eq!(s.fetched.len(), 2, "one read per secret name");
        assert_eq!(s.value(&refs[0]).unwrap(), "a-value");
        assert!(matches!(s.value(&refs[1]), Err(RefError::MissingKey { .. })));
        assert!(matches!(s.value(&refs[2]), Err(RefError::Secret { .. })));
        assert_eq!(SecretRefs::fetch(&d, None, &refs).await.unwrap_err(), RefError::NoStoreSet);
        assert_eq!(SecretRefs::fetch(&d, Some("nope"), &refs).await.unwrap_err(), RefError::StoreNotConfigured("nope".into()));
        assert!(SecretRefs::fetch(&d, None, &[]).await.is_ok(), "no reference needs no store");
        let _ = std::fs::remove_file(file);
    }
}
