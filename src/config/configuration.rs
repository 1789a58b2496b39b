//! The `Configuration` resource (dapr.io/v1alpha1), read from `--config`.
//!
//! Only what rapr acts on is typed (`features`, `secrets`, `nameResolution`, `tracing`, `metric`);
//! every other section is kept by name so the
//! loader can warn once about the parts not implemented yet instead of silently ignoring them.

use std::collections::BTreeMap;

pub use super::tracing_spec::{OtelSpec, TracingSpec, DEFAULT_SAMPLING_RATE};
use super::tracing_spec::tracing_spec;

/// Access rules of one secret store (`spec.secrets.scopes[]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecretScope {
    /// `defaultAccess: deny` (default allow).
    pub default_deny: bool,
    /// `allowedSecrets`: when non-empty, only these are readable.
    pub allowed: Vec<String>,
    /// `deniedSecrets`.
    pub denied: Vec<String>,
}

impl SecretScope {
    /// Dapr's rule: an allow list decides alone; else a denied key is denied; else the default.
    pub fn allows(&self, key: &str) -> bool {
        if !self.allowed.is_empty() {
            return self.allowed.iter().any(|k| k == key);
        }
        if self.denied.iter().any(|k| k == key) {
            return false;
        }
        !self.default_deny
    }
}

/// A parsed configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigurationSpec {
    /// `metadata.name`.
    pub name: String,
    /// Preview features switched on (`spec.features[].enabled: true`).
    pub enabled_features: Vec<String>,
    /// Features switched off (`enabled: false`): a default-on one stays off.
    pub disabled_features: Vec<String>,
    /// Secret access rules by store name.
    pub secret_scopes: BTreeMap<String, SecretScope>,
    /// `spec.nameResolution` with `component: sqlite`: its `connectionString`.
    pub name_resolution_db: Option<std::path::PathBuf>,
    /// `spec.tracing`: sampling and exporters.
    pub tracing: TracingSpec,
    /// `spec.metric` (or `spec.metrics`): Prometheus switches.
    pub metric: MetricSpec,
    /// `spec.logging.apiLogging`.
    pub api_logging: ApiLoggingSpec,
    /// Other `spec` sections present, by name, which rapr does not apply yet.
    pub unimplemented: Vec<String>,
}

/// `spec.logging.apiLogging` (all false by default, as daprd's).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ApiLoggingSpec {
    /// `enabled`: API logging when `--enable-api-logging` is not given.
    pub enabled: bool,
    /// `obfuscateURLs`: log the route, not the path.
    pub obfuscate_urls: bool,
    /// `omitHealthChecks`: leave health checks out of the API log.
    pub omit_health_checks: bool,
}

fn api_logging_spec(spec: &BTreeMap<String, yaml_serde::Value>) -> Result<ApiLoggingSpec, String> {
    let Some(a) = spec.get("logging").and_then(|l| l.get("apiLogging")) else { return Ok(ApiLoggingSpec::default()) };
    Ok(ApiLoggingSpec {
        enabled: flag(a.get("enabled"), "logging.apiLogging.enabled")?.unwrap_or(false),
        obfuscate_urls: flag(a.get("obfuscateURLs"), "logging.apiLogging.obfuscateURLs")?.unwrap_or(false),
        omit_health_checks: flag(a.get("omitHealthChecks"), "logging.apiLogging.omitHealthChecks")?.unwrap_or(false),
    })
}

/// `spec.metric` (daprd's `MetricSpec`; `spec.metrics` is read the same way).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    /// `enabled` (default true; `--enable-metrics false` also turns metrics off).
    pub enabled: bool,
    /// `http.increasedCardinality`: label HTTP metrics with the (normalised) path. daprd's
    /// default is still true (its warning says it will change).
    pub increased_cardinality: bool,
    /// `http.excludeVerbs`: no `method` label value.
    pub exclude_verbs: bool,
    /// `http.pathMatching`: the patterns HTTP paths are labelled with.
    pub path_matching: Vec<String>,
    /// `latencyDistributionBuckets` (ms; absent or empty: daprd's defaults).
    pub latency_buckets: Option<Vec<f64>>,
    /// `rules`, one entry per rule and label.
    pub rules: Vec<MetricRule>,
    /// `recordErrorCodes`: daprd's `dapr_error_code_total`, which rapr does not record (warned).
    pub record_error_codes: bool,
}

/// One label of a `spec.metric.rules[]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRule {
    /// The metric (`dapr_http_server_request_count`).
    pub name: String,
    /// The label.
    pub label: String,
    /// `(replacement, regex)` pairs, as the YAML maps them.
    pub regex: Vec<(String, String)>,
}

impl Default for MetricSpec {
    fn default() -> Self {
        Self { enabled: true, increased_cardinality: true, exclude_verbs: false, path_matching: Vec::new(), latency_buckets: None, rules: Vec::new(), record_error_codes: false }
    }
}

/// Sections of `spec` that rapr applies.
const IMPLEMENTED: &[&str] = &["features", "secrets", "nameResolution", "tracing", "metric", "metrics", "logging"];

pub(super) fn flag(v: Option<&yaml_serde::Value>, what: &str) -> Result<Option<bool>, String> {
    match v {
        None => Ok(None),
        Some(v) => match (v.as_bool(), v.as_str()) {
            (Some(b), _) => Ok(Some(b)),
            (None, Some(s)) => s.parse().map(Some).map_err(|_| format!("{what} must be a boolean, not {s:?}")),
            _ => Err(format!("{what} must be a boolean")),
        },
    }
}

fn metric_spec(spec: &BTreeMap<String, yaml_serde::Value>) -> Result<MetricSpec, String> {
    let Some(m) = spec.get("metric").or_else(|| spec.get("metrics")) else { return Ok(MetricSpec::default()) };
    let http = m.get("http");
    let latency_buckets = match m.get("latencyDistributionBuckets") {
        None => None,
        Some(v) => {
            let list = v.as_sequence().ok_or("spec.metric.latencyDistributionBuckets must be a list of integers")?;
            let b = list.iter().map(|i| i.as_i64().map(|n| n as f64)).collect::<Option<Vec<f64>>>();
            Some(b.ok_or("spec.metric.latencyDistributionBuckets must be a list of integers")?).filter(|b| !b.is_empty())
        }
    };
    let mut rules = Vec::new();
    for r in m.get("rules").and_then(|r| r.as_sequence()).into_iter().flatten() {
        let name = r.get("name").and_then(|v| v.as_str()).unwrap_or_default().to_string();
        for l in r.get("labels").and_then(|l| l.as_sequence()).into_iter().flatten() {
            let label = l.get("name").and_then(|v| v.as_str()).unwrap_or_default().to_string();
            let regex = l
                .get("regex")
                .and_then(|v| v.as_mapping())
                .map(|map| map.iter().filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string()))).collect())
                .unwrap_or_default();
            rules.push(MetricRule { name: name.clone(), label, regex });
        }
    }
    Ok(MetricSpec {
        enabled: flag(m.get("enabled"), "spec.metric.enabled")?.unwrap_or(true),
        increased_cardinality: flag(http.and_then(|h| h.get("increasedCardinality")), "spec.metric.http.increasedCardinality")?.unwrap_or(true),
        exclude_verbs: flag(http.and_then(|h| h.get("excludeVerbs")), "spec.metric.http.excludeVerbs")?.unwrap_or(false),
        path_matching: strings(http.and_then(|h| h.get("pathMatching")), "spec.metric.http.pathMatching")?,
        latency_buckets,
        rules,
        record_error_codes: flag(m.get("recordErrorCodes"), "spec.metric.recordErrorCodes")?.unwrap_or(false),
    })
}

fn name_resolution_db(spec: &BTreeMap<String, yaml_serde::Value>) -> Result<Option<std::path::PathBuf>, String> {
    let Some(nr) = spec.get("nameResolution") else { return Ok(None) };
    let component = nr.get("component").and_then(|c| c.as_str()).unwrap_or("sqlite");
    if !component.eq_ignore_ascii_case("sqlite") {
        return Err(format!("spec.nameResolution.component {component:?} is not supported by rapr (use sqlite)"));
    }
    Ok(nr.get("configuration").and_then(|c| c.get("connectionString")).and_then(|c| c.as_str()).map(std::path::PathBuf::from))
}

fn strings(v: Option<&yaml_serde::Value>, what: &str) -> Result<Vec<String>, String> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let list = v.as_sequence().ok_or_else(|| format!("{what} must be a list"))?;
    list.iter().map(|i| i.as_str().map(str::to_string).ok_or_else(|| format!("{what} must hold strings"))).collect()
}

fn secret_scopes(spec: &BTreeMap<String, yaml_serde::Value>) -> Result<BTreeMap<String, SecretScope>, String> {
    let mut out = BTreeMap::new();
    let Some(scopes) = spec.get("secrets").and_then(|s| s.get("scopes")) else { return Ok(out) };
    for scope in scopes.as_sequence().ok_or("spec.secrets.scopes must be a list")? {
        let store = scope.get("storeName").and_then(|v| v.as_str()).ok_or("spec.secrets.scopes[].storeName is required")?;
        let default_deny = match scope.get("defaultAccess").and_then(|v| v.as_str()) {
            None => false,
            Some(a) if a.eq_ignore_ascii_case("allow") => false,
            Some(a) if a.eq_ignore_ascii_case("deny") => true,
            Some(a) => return Err(format!("spec.secrets.scopes[{store}].defaultAccess must be allow or deny, not {a:?}")),
        };
        let allowed = strings(scope.get("allowedSecrets"), "allowedSecrets")?;
        let denied = strings(scope.get("deniedSecrets"), "deniedSecrets")?;
        out.insert(store.to_string(), SecretScope { default_deny, allowed, denied });
    }
    Ok(out)
}

/// daprd v1.18's features that are on unless a Configuration switches them off
/// (`pkg/config` `defaultFeatures`); `/v1.0/metadata` lists them among the enabled ones.
pub const DEFAULT_FEATURES: &[&str] = &[HOT_RELOAD, "WorkflowsRemoteActivityReminder"];

/// Resource folders are watched and components and subscriptions reloaded (default on).
pub const HOT_RELOAD: &str = "HotReload";

impl ConfigurationSpec {
    /// Adds the default-on features a Configuration did not switch off, as daprd's
    /// `SetDefaultFeatures` (also when there is no `--config`).
    pub fn with_default_features(mut self) -> Self {
        for f in DEFAULT_FEATURES {
            if !self.enabled_features.iter().any(|e| e == f) && !self.disabled_features.iter().any(|d| d == f) {
                self.enabled_features.push((*f).to_string());
            }
        }
        self
    }

    /// Whether feature `name` is on.
    pub fn feature_enabled(&self, name: &str) -> bool {
        self.enabled_features.iter().any(|e| e == name)
    }

    /// Builds the spec from the document's `metadata.name` and `spec` mapping.
    pub fn from_spec(name: &str, spec: &BTreeMap<String, yaml_serde::Value>) -> Result<Self, String> {
        let (mut enabled_features, mut disabled_features) = (Vec::new(), Vec::new());
        if let Some(features) = spec.get("features") {
            let list = features.as_sequence().ok_or("spec.features must be a list")?;
            for f in list {
                let fname = f.get("name").and_then(|v| v.as_str()).ok_or("spec.features[].name is required")?;
                let enabled = match f.get("enabled") {
                    None => false,
                    Some(v) => v.as_bool().ok_or_else(|| format!("spec.features[{fname}].enabled must be a boolean"))?,
                };
                if enabled {
                    enabled_features.push(fname.to_string());
                } else {
                    disabled_features.push(fname.to_string());
                }
            }
        }
        let unimplemented =
            spec.keys().filter(|k| !IMPLEMENTED.contains(&k.as_str())).cloned().collect::<Vec<_>>();
        Ok(Self {
            name: name.to_string(),
            enabled_features,
            disabled_features,
            secret_scopes: secret_scopes(spec)?,
            name_resolution_db: name_resolution_db(spec)?,
            tracing: tracing_spec(spec)?,
            metric: metric_spec(spec)?,
            api_logging: api_logging_spec(spec)?,
            unimplemented,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_scope_rules() {
        let deny_default = SecretScope { default_deny: true, allowed: vec![], denied: vec![] };
        assert!(!deny_default.allows("a"));
        let allow_list = SecretScope { default_deny: true, allowed: vec!["a".into()], denied: vec!["a".into()] };
        assert!(allow_list.allows("a"), "the allow list decides alone");
        assert!(!allow_list.allows("b"));
        let deny_list = SecretScope { default_deny: false, allowed: vec![], denied: vec!["b".into()] };
        assert!(deny_list.allows("a") && !deny_list.allows("b"));
    }

    #[test]
    fn parses_secret_scopes() {
        let spec: BTreeMap<String, yaml_serde::Value> = yaml_serde::from_str(
            "secrets:\n  scopes:\n  - storeName: local\n    defaultAccess: deny\n    allowedSecrets: [\"a\"]\n",
        )
        .unwrap();
        let c = ConfigurationSpec::from_spec("c", &spec).unwrap();
        assert!(c.secret_scopes["local"].default_deny);
        assert_eq!(c.secret_scopes["local"].allowed, vec!["a".to_string()]);
        assert!(c.unimplemented.is_empty());
    }

    #[test]
    fn parses_tracing_and_metric() {
        let spec: BTreeMap<String, yaml_serde::Value> = yaml_serde::from_str(
            "tracing:\n  samplingRate: \"0.5\"\n  otel:\n    endpointAddress: 127.0.0.1:4318\n    isSecure: false\n    protocol: http\nmetric:\n  enabled: true\n  http:\n    increasedCardinality: true\n",
        )
        .unwrap();
        let c = ConfigurationSpec::from_spec("c", &spec).unwrap();
        assert_eq!(c.tracing.sampling_rate, 0.5);
        assert_eq!(c.tracing.otel, Some(OtelSpec { endpoint: "127.0.0.1:4318".into(), is_secure: false, protocol: Some("http".into()), ..Default::default() }));
        assert!(c.metric.enabled && c.metric.increased_cardinality);
        assert!(c.unimplemented.is_empty());
        let none = ConfigurationSpec::from_spec("c", &BTreeMap::new()).unwrap();
        assert_eq!((none.tracing.sampling_rate, none.metric.enabled, none.metric.increased_cardinality), (DEFAULT_SAMPLING_RATE, true, true));
    }

    #[test]
    fn metric_spec_as_daprd_reads_it() {
        let spec: BTreeMap<String, yaml_serde::Value> = yaml_serde::from_str(
            "metrics:\n  latencyDistributionBuckets: [5, 50]\n  recordErrorCodes: true\n  http:\n    increasedCardinality: false\n    excludeVerbs: true\n    pathMatching: [\"/orders/{id}\"]\n  rules:\n  - name: dapr_http_server_request_count\n    labels:\n    - name: path\n      regex:\n        \"/orders/x\": \"/orders/.+\"\n",
        )
        .unwrap();
        let m = ConfigurationSpec::from_spec("c", &spec).unwrap().metric;
        assert_eq!(m.latency_buckets, Some(vec![5.0, 50.0]));
        assert!(m.record_error_codes && m.exclude_verbs && !m.increased_cardinality);
        assert_eq!(m.path_matching, vec!["/orders/{id}".to_string()]);
        let rule = MetricRule { name: "dapr_http_server_request_count".into(), label: "path".into(), regex: vec![("/orders/x".into(), "/orders/.+".into())] };
        assert_eq!(m.rules, vec![rule]);
        let bad: BTreeMap<String, yaml_serde::Value> = yaml_serde::from_str("metric:\n  latencyDistributionBuckets: [\"a\"]\n").unwrap();
        assert!(ConfigurationSpec::from_spec("c", &bad).is_err());
    }
}
