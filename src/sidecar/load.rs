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
}
