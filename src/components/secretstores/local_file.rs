//! `secretstores.local.file`: secrets from a JSON file, as Dapr's store. Nested objects and
//! arrays are flattened with `nestedSeparator` (default `:`): `{"db": {"pw": "x"}}` is the secret
//! `db:pw`. With `multiValued: true` each top-level key is one secret whose (flattened) fields
//! are its key/value pairs. The file is read once at init: a file that is not JSON fails init.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::Value;

use super::{Metadata, Secret, SecretError, SecretStore};
use crate::components::metadata::{ComponentMetadata, MetadataError};

/// The JSON-file store.
#[derive(Debug, Clone, Default)]
pub struct FileSecretStore {
    secrets: BTreeMap<String, Secret>,
    multi_valued: bool,
}

/// Why the store could not load.
#[derive(Debug, thiserror::Error)]
pub enum FileStoreError {
    /// Metadata missing or invalid.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The file could not be read or parsed.
    #[error("secrets file {path}: {reason}")]
    File {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn flatten(prefix: &str, sep: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    let join = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}{sep}{k}") };
    match v {
        Value::Object(m) => m.iter().for_each(|(k, v)| flatten(&join(k), sep, v, out)),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| flatten(&join(&i.to_string()), sep, v, out)),
        other => {
            out.insert(prefix.to_string(), scalar(other));
        }
    }
}

impl FileSecretStore {
    /// Reads the metadata and loads the file.
    pub fn from_metadata(md: &mut ComponentMetadata) -> Result<Self, FileStoreError> {
        let path = md.required(&["secretsFile"])?;
        let sep = md.string(&["nestedSeparator"]).unwrap_or_else(|| ":".into());
        let multi_valued = md.bool(&["multiValued"], false)?;
        let err = |reason: String| FileStoreError::File { path: path.clone(), reason };
        let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| err(format!("not valid JSON: {e}")))?;
        let Value::Object(top) = doc else { return Err(err("must hold a JSON object".into())) };
        Ok(Self::from_object(top, &sep, multi_valued))
    }

    /// Builds the secrets from a parsed top-level object.
    pub fn from_object(top: serde_json::Map<String, Value>, sep: &str, multi_valued: bool) -> Self {
        let mut secrets = BTreeMap::new();
        if multi_valued {
            for (name, v) in top {
                let mut fields = BTreeMap::new();
                match &v {
                    Value::Object(_) | Value::Array(_) => flatten("", sep, &v, &mut fields),
                    other => {
                        fields.insert(name.clone(), scalar(other));
                    }
                }
                secrets.insert(name, fields);
            }
        } else {
            let mut flat = BTreeMap::new();
            flatten("", sep, &Value::Object(top), &mut flat);
            for (k, v) in flat {
                secrets.insert(k.clone(), BTreeMap::from([(k, v)]));
            }
        }
        Self { secrets, multi_valued }
    }
}

#[async_trait]
impl SecretStore for FileSecretStore {
    fn features(&self) -> &'static [&'static str] {
        if self.multi_valued {
            &["MULTIPLE_KEY_VALUES_PER_SECRET"]
        } else {
            &[]
        }
    }

    async fn get(&self, name: &str, _metadata: &Metadata) -> Result<Secret, SecretError> {
        self.secrets.get(name).cloned().ok_or_else(|| SecretError::NotFound(name.to_string()))
    }

    async fn bulk_get(&self, _metadata: &Metadata) -> Result<BTreeMap<String, Secret>, SecretError> {
        Ok(self.secrets.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store(v: Value, multi: bool) -> FileSecretStore {
        let Value::Object(m) = v else { unreachable!() };
        FileSecretStore::from_object(m, ":", multi)
    }

    #[tokio::test]
    async fn flattens_nested_secrets() {
        let s = store(json!({"a": "1", "db": {"user": "u", "pw": "p"}, "list": ["x", 5], "flag": true}), false);
        let md = Metadata::new();
        assert_eq!(s.get("db:pw", &md).await.unwrap(), BTreeMap::from([("db:pw".into(), "p".into())]));
        assert_eq!(s.get("list:1", &md).await.unwrap()["list:1"], "5");
        assert_eq!(s.get("flag", &md).await.unwrap()["flag"], "true");
        assert_eq!(s.get("db", &md).await, Err(SecretError::NotFound("db".into())));
        assert_eq!(s.bulk_get(&md).await.unwrap().len(), 6);
    }

    #[tokio::test]
    async fn multi_valued_groups_by_top_level_key() {
        let s = store(json!({"db": {"user": "u", "pw": "p", "opts": {"ssl": "on"}}, "plain": "v"}), true);
        let md = Metadata::new();
        let db = s.get("db", &md).await.unwrap();
        assert_eq!(db.len(), 3);
        assert_eq!(db["opts:ssl"], "on");
        assert_eq!(s.get("plain", &md).await.unwrap()["plain"], "v");
        assert_eq!(s.features(), &["MULTIPLE_KEY_VALUES_PER_SECRET"]);
    }
}
