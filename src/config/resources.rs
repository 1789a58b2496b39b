//! Parses Dapr resources (multi-document YAML) and the `--config` Configuration from text. Pure:
//! reading files and directories is the sidecar's loader (`sidecar/load.rs`).
//!
//! Parsing never fails as a whole: each bad document becomes a `ResourceError` naming its file
//! (and component and key where known), and the rest still loads. The supervisor then marks such
//! components failed, so the sidecar keeps serving (DESIGN.md §5).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::component::{ComponentSpec, MetadataItem, SecretKeyRef};
use super::configuration::ConfigurationSpec;

/// Dapr's default component init timeout.
const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A resource that could not be loaded.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{}{}: {reason}", file.display(), component.as_ref().map(|c| format!(": component {c}")).unwrap_or_default())]
pub struct ResourceError {
    /// File the document came from.
    pub file: PathBuf,
    /// Component name, when the document got that far.
    pub component: Option<String>,
    /// What is wrong.
    pub reason: String,
}

/// Everything loaded from the resource paths.
#[derive(Debug, Default)]
pub struct Resources {
    /// Components in load order, already filtered by scope.
    pub components: Vec<ComponentSpec>,
    /// Documents that failed to load.
    pub errors: Vec<ResourceError>,
    /// Kinds found that rapr does not apply yet (kind name, file), for one warning each.
    pub skipped_kinds: Vec<(String, PathBuf)>,
    /// `Resiliency` documents (file, YAML), parsed and scope-filtered by `crate::resiliency`.
    pub resiliency: Vec<(PathBuf, yaml_serde::Value)>,
    /// `HTTPEndpoint` resources for this app, their `secretKeyRef`s not yet resolved.
    pub http_endpoints: Vec<super::http_endpoint::PendingHttpEndpoint>,
    /// Declarative `Subscription`s for this app, in load order, their routes already compiled once.
    pub subscriptions: Vec<crate::pubsub::Subscription>,
    /// Component names already taken (a second one with the same name is an error).
    seen: HashSet<String>,
}

#[derive(Deserialize)]
struct Header {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

#[derive(Deserialize, Default)]
struct ObjectMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawComponentSpec {
    #[serde(rename = "type")]
    type_name: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    metadata: Option<Vec<RawMetadataItem>>,
    #[serde(default)]
    init_timeout: Option<String>,
    #[serde(default)]
    ignore_errors: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMetadataItem {
    name: String,
    #[serde(default)]
    value: Option<yaml_serde::Value>,
    #[serde(default)]
    secret_key_ref: Option<RawSecretKeyRef>,
}

#[derive(Deserialize)]
struct RawSecretKeyRef {
    name: String,
    #[serde(default)]
    key: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawAuth {
    #[serde(default)]
    secret_store: Option<String>,
}

#[derive(Deserialize)]
struct RawComponent {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: RawComponentSpec,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    auth: Option<RawAuth>,
}

#[derive(Deserialize)]
struct RawConfiguration {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<BTreeMap<String, yaml_serde::Value>>,
}

impl Resources {
    /// Adds the resources of one file's `text` (every document) for `app_id`.
    pub fn add_file(&mut self, file: &Path, text: &str, app_id: &str) {
        for doc in yaml_serde::Deserializer::from_str(text) {
            let value = match yaml_serde::Value::deserialize(doc) {
                Ok(v) => v,
                Err(e) => {
                    self.errors.push(ResourceError { file: file.to_path_buf(), component: None, reason: format!("invalid YAML: {e}") });
                    // The stream cannot resynchronise after a syntax error.
                    break;
                }
            };
            let mut seen = std::mem::take(&mut self.seen);
            load_document(value, file, app_id, &mut seen, self);
            self.seen = seen;
        }
    }
}

fn load_document(value: yaml_serde::Value, file: &Path, app_id: &str, seen: &mut HashSet<String>, out: &mut Resources) {
    if value.is_null() {
        return;
    }
    let err = |component: Option<String>, reason: String| ResourceError { file: file.to_path_buf(), component, reason };
    let header: Header = match yaml_serde::from_value(value.clone()) {
        Ok(h) => h,
        Err(e) => return out.errors.push(err(None, format!("not a resource: {e}"))),
    };
    if !header.api_version.starts_with("dapr.io/") {
        tracing::debug!(file = %file.display(), api_version = %header.api_version, "skipping a document that is not a Dapr resource");
        return;
    }
    match header.kind.as_str() {
        "Component" => {
            let name = value.get("metadata").and_then(|m| m.get("name")).and_then(|n| n.as_str()).map(str::to_string);
            match parse_component(value, file) {
                Ok(spec) if !spec.scopes.is_empty() && !spec.scopes.iter().any(|s| s == app_id) => {
                    tracing::info!(component = %spec.name, "component is scoped to other apps; not loaded");
                }
                Ok(spec) if !seen.insert(spec.name.clone()) => {
                    out.errors.push(err(Some(spec.name), "a component with this name is already loaded".into()));
                }
                Ok(spec) => out.components.push(spec),
                Err(reason) => out.errors.push(err(name, reason)),
            }
        }
        "Configuration" => tracing::debug!(file = %file.display(), "Configuration in a resources path is read only through --config"),
        "Resiliency" => out.resiliency.push((file.to_path_buf(), value)),
        "HTTPEndpoint" => match super::http_endpoint::parse(value, file, app_id) {
            Ok(Some(ep)) => out.http_endpoints.push(ep),
            Ok(None) => {}
            Err(e) => out.errors.push(e),
        },
        "Subscription" => match super::subscription::parse(value, &header.api_version, file, app_id) {
            Ok(Some(sub)) => out.subscriptions.push(sub),
            Ok(None) => {}
            Err(e) => out.errors.push(e),
        },
        other => out.skipped_kinds.push((other.to_string(), file.to_path_buf())),
    }
}

fn parse_component(value: yaml_serde::Value, file: &Path) -> Result<ComponentSpec, String> {
    let raw: RawComponent = yaml_serde::from_value(value).map_err(|e| format!("invalid Component: {e}"))?;
    if raw.metadata.name.trim().is_empty() {
        return Err("metadata.name is required".into());
    }
    if !raw.spec.type_name.contains('.') {
        return Err(format!("spec.type {:?} must look like <category>.<name>", raw.spec.type_name));
    }
    // daprd reads it with time.ParseDuration and uses its default when that fails (a bare
    // integer included); zero or less would fail every init there, so it is refused here.
    let init_timeout = match raw.spec.init_timeout.as_deref().map(|t| (t, super::duration::parse(t, super::duration::BareInteger::Rejected))) {
        None | Some((_, Err(_))) => DEFAULT_INIT_TIMEOUT,
        Some((t, Ok(d))) => d.to_std().filter(|d| !d.is_zero()).ok_or_else(|| format!("spec.initTimeout {t:?} is not a positive duration"))?,
    };
    let mut metadata = Vec::new();
    for item in raw.spec.metadata.unwrap_or_default() {
        let value = match item.value {
            None | Some(yaml_serde::Value::Null) => None,
            Some(yaml_serde::Value::String(s)) => Some(s),
            Some(yaml_serde::Value::Bool(b)) => Some(b.to_string()),
            Some(yaml_serde::Value::Number(n)) => Some(n.to_string()),
            Some(other) => Some(
                serde_json::to_string(&other).map_err(|e| format!("metadata {}: unsupported value: {e}", item.name))?,
            ),
        };
        if value.is_none() && item.secret_key_ref.is_none() {
            return Err(format!("metadata {}: has neither value nor secretKeyRef", item.name));
        }
        let secret_key_ref = item.secret_key_ref.map(|r| SecretKeyRef { key: r.key.unwrap_or_else(|| r.name.clone()), name: r.name });
        metadata.push(MetadataItem { name: item.name, value, secret_key_ref });
    }
    Ok(ComponentSpec {
        name: raw.metadata.name,
        namespace: raw.metadata.namespace,
        type_name: raw.spec.type_name,
        version: raw.spec.version.filter(|v| !v.is_empty()).unwrap_or_else(|| "v1".into()),
        metadata,
        scopes: raw.scopes.unwrap_or_default(),
        init_timeout,
        ignore_errors: raw.spec.ignore_errors.unwrap_or(false),
        secret_store: raw.auth.and_then(|a| a.secret_store),
        source: file.to_path_buf(),
    })
}

/// Parses the Configuration named by `--config` from its `text`.
pub fn parse_configuration(file: &Path, text: &str) -> Result<ConfigurationSpec, ResourceError> {
    let err = |reason: String| ResourceError { file: file.to_path_buf(), component: None, reason };
    for doc in yaml_serde::Deserializer::from_str(text) {
        let value = yaml_serde::Value::deserialize(doc).map_err(|e| err(format!("invalid YAML: {e}")))?;
        let header: Header = yaml_serde::from_value(value.clone()).map_err(|e| err(format!("not a resource: {e}")))?;
        if header.kind == "Configuration" {
            let raw: RawConfiguration = yaml_serde::from_value(value).map_err(|e| err(format!("invalid Configuration: {e}")))?;
            return ConfigurationSpec::from_spec(&raw.metadata.name, &raw.spec.unwrap_or_default()).map_err(err);
        }
    }
    Err(err("no Configuration document found".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(files: &[(&str, &str)]) -> Resources {
        let mut r = Resources::default();
        for (name, text) in files {
            r.add_file(Path::new(name), text, "app");
        }
        r
    }

    #[test]
    fn parses_multi_document_files_and_reports_bad_ones() {
        let r = parse(&[
            ("a.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: one\nspec:\n  type: state.in-memory\n  version: v1\n  metadata:\n  - name: n\n    value: 3\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: two\nspec:\n  type: state.sqlite\n  ignoreErrors: true\n  initTimeout: 10s\nscopes: [other]\n"),
            ("b.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: [broken\n"),
            ("c.yml", "apiVersion: dapr.io/v1alpha1\nkind: Unknown\nmetadata:\n  name: s\n"),
            ("e.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: one\nspec:\n  type: state.in-memory\n"),
        ]);
        assert_eq!(r.components.len(), 1, "scoped component skipped");
        assert_eq!(r.components[0].name, "one");
        assert_eq!(r.components[0].metadata_value("N"), Some("3"));
        assert_eq!(r.errors.len(), 2);
        assert!(r.errors[0].file.ends_with("b.yaml"));
        assert!(r.errors[0].to_string().contains("invalid YAML"));
        assert!(r.errors[1].to_string().contains("already loaded"), "names are unique across files: {}", r.errors[1]);
        assert_eq!(r.skipped_kinds[0].0, "Unknown");
    }

    #[test]
    fn init_timeout_as_daprd_reads_it() {
        for (i, (t, want)) in [("1m30s", Duration::from_secs(90)), ("never", DEFAULT_INIT_TIMEOUT), ("10", DEFAULT_INIT_TIMEOUT), ("500ms", Duration::from_millis(500))].into_iter().enumerate() {
            let text = format!("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: c{i}\nspec:\n  type: state.in-memory\n  initTimeout: {t:?}\n");
            let r = parse(&[(&format!("t{i}.yaml"), &text)]);
            let c = r.components.iter().find(|c| c.name == format!("c{i}")).unwrap();
            assert_eq!(c.init_timeout, want, "{t}");
        }
    }

    #[test]
    fn component_errors_name_the_component() {
        let r = parse(&[("a.yaml", "apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: bad
spec:
  type: state.sqlite
  initTimeout: 0s
")]);
        assert!(r.components.is_empty());
        assert_eq!(r.errors[0].component.as_deref(), Some("bad"));
        assert!(r.errors[0].to_string().contains("component bad"), "{}", r.errors[0]);
    }

    #[test]
    fn configuration_reports_unimplemented_sections() {
        let text = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: cfg\nspec:\n  features:\n  - name: Foo\n    enabled: true\n  - name: Bar\n    enabled: false\n  mtls:\n    enabled: true\n";
        let c = parse_configuration(Path::new("c.yaml"), text).unwrap();
        assert_eq!(c.enabled_features, vec!["Foo".to_string()]);
        assert_eq!(c.unimplemented, vec!["mtls".to_string()]);
    }
}
