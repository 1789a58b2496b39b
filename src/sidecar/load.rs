//! Reading the sidecar's inputs from disk: every resource file under `--resources-path`
//! (repeatable; files or directories, `.yaml`/`.yml`, sorted per directory so load order is
//! stable) and the `--config` file. The parsing is config's (pure); this file only does the I/O.
//!
//! Loading never fails as a whole: a file that cannot be read is a `ResourceError` like a bad
//! document, and the rest still loads.

use std::path::{Path, PathBuf};

use crate::config::{parse_configuration, ConfigurationSpec, ResourceError, Resources};

/// Loads every resource under `paths` for `app_id`.
pub fn load_resources(paths: &[PathBuf], app_id: &str) -> Resources {
    let mut out = Resources::default();
    let files = resource_files(paths, &mut out.errors);
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => out.add_file(&file, &text, app_id),
            Err(e) => out.errors.push(ResourceError { file, component: None, reason: format!("cannot read: {e}") }),
        }
    }
    out
}

/// Loads the Configuration named by `--config`.
pub fn load_configuration(file: &Path) -> Result<ConfigurationSpec, ResourceError> {
    let text = std::fs::read_to_string(file).map_err(|e| ResourceError { file: file.to_path_buf(), component: None, reason: format!("cannot read: {e}") })?;
    parse_configuration(file, &text)
}

/// Loads several `--config` files as daprd's standalone loader: each file's first document is
/// decoded over the result of the ones before, so a later file's mappings merge key by key into
/// the earlier ones and its lists and values replace theirs.
pub fn load_configurations(files: &[PathBuf]) -> Result<ConfigurationSpec, ResourceError> {
    let [first, rest @ ..] = files else { return Ok(ConfigurationSpec::default()) };
    if rest.is_empty() {
        return load_configuration(first);
    }
    let mut merged = yaml_serde::Value::Null;
    for file in files {
        let err = |reason: String| ResourceError { file: file.clone(), component: None, reason };
        let text = std::fs::read_to_string(file).map_err(|e| err(format!("cannot read: {e}")))?;
        let value: yaml_serde::Value = yaml_serde::Deserializer::from_str(&text)
            .next()
            .map(|doc| <yaml_serde::Value as serde::Deserialize>::deserialize(doc).map_err(|e| err(format!("invalid YAML: {e}"))))
            .transpose()?
            .unwrap_or(yaml_serde::Value::Null);
        merge(&mut merged, value);
    }
    let text = yaml_serde::to_string(&merged).map_err(|e| ResourceError { file: first.clone(), component: None, reason: format!("cannot merge: {e}") })?;
    let names = files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(",");
    parse_configuration(Path::new(&names), &text)
}

/// Go's decoding into an existing value: mappings merge recursively, everything else replaces.
fn merge(into: &mut yaml_serde::Value, from: yaml_serde::Value) {
    match (into, from) {
        (yaml_serde::Value::Mapping(a), yaml_serde::Value::Mapping(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (slot, from) => *slot = from,
    }
}

/// Every YAML file under the paths, sorted per directory so load order is stable.
fn resource_files(paths: &[PathBuf], errors: &mut Vec<ResourceError>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_file() {
            files.push(path.clone());
            continue;
        }
        match std::fs::read_dir(path) {
            Ok(entries) => {
                let mut found: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
                    .collect();
                found.sort();
                files.extend(found);
            }
            Err(e) => errors.push(ResourceError { file: path.clone(), component: None, reason: format!("cannot read resources path: {e}") }),
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_yaml_files_in_order_and_reports_what_cannot_be_read() {
        let dir = tempfile::tempdir().unwrap();
        let component = |name: &str| format!("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: state.in-memory\n");
        std::fs::write(dir.path().join("b.yml"), component("second")).unwrap();
        std::fs::write(dir.path().join("a.yaml"), component("first")).unwrap();
        std::fs::write(dir.path().join("d.txt"), "ignored").unwrap();
        let missing = dir.path().join("nope");
        let r = load_resources(&[dir.path().to_path_buf(), missing.clone()], "app");
        let names: Vec<&str> = r.components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["first", "second"]);
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.errors[0].file, missing);
        assert!(load_configuration(&missing).unwrap_err().reason.starts_with("cannot read"));
    }

    #[test]
    fn later_configurations_merge_over_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        let b = dir.path().join("b.yaml");
        std::fs::write(&a, "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: a\nspec:\n  logging:\n    apiLogging:\n      enabled: true\n      obfuscateURLs: true\n  features:\n  - name: One\n    enabled: true\n").unwrap();
        std::fs::write(&b, "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: b\nspec:\n  logging:\n    apiLogging:\n      obfuscateURLs: false\n  features:\n  - name: Two\n    enabled: true\n").unwrap();
        let c = load_configurations(&[a, b]).unwrap();
        assert_eq!(c.name, "b");
        assert!(c.api_logging.enabled, "kept from the first file");
        assert!(!c.api_logging.obfuscate_urls, "replaced by the second");
        assert_eq!(c.enabled_features, ["Two"], "lists replace");
    }
}
