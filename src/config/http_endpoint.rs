//! The `HTTPEndpoint` resource (dapr.io/v1alpha1): an external HTTP service callable by name
//! through the invoke API, with headers added to every call.

use std::path::Path;

use serde::Deserialize;

use super::resources::ResourceError;

/// A loaded endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpEndpointSpec {
    /// `metadata.name`: the id apps invoke.
    pub name: String,
    /// `spec.baseUrl`.
    pub base_url: String,
    /// `spec.headers` (literal values).
    pub headers: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct Raw {
    metadata: RawMeta,
    spec: RawSpec,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawMeta {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    base_url: String,
    #[serde(default)]
    headers: Vec<RawHeader>,
    #[serde(default)]
    client_tls: Option<yaml_serde::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawHeader {
    name: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    secret_key_ref: Option<yaml_serde::Value>,
}

/// Parses one `HTTPEndpoint` document; `None` when scoped to other apps.
pub fn parse(value: yaml_serde::Value, file: &Path, app_id: &str) -> Result<Option<HttpEndpointSpec>, ResourceError> {
    let err = |component: Option<String>, reason: String| ResourceError { file: file.to_path_buf(), component, reason };
    let raw: Raw = yaml_serde::from_value(value).map_err(|e| err(None, format!("invalid HTTPEndpoint: {e}")))?;
    let name = raw.metadata.name;
    if raw.scopes.as_ref().is_some_and(|s| !s.is_empty() && !s.iter().any(|a| a == app_id)) {
        return Ok(None);
    }
    let base = raw.spec.base_url.trim_end_matches('/').to_string();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(err(Some(name), format!("spec.baseUrl {base:?} must start with http:// or https://")));
    }
    if raw.spec.client_tls.is_some() {
        return Err(err(Some(name), "spec.clientTLS is not supported by rapr yet".into()));
    }
    let mut headers = Vec::new();
    for h in raw.spec.headers {
        match (h.value, h.secret_key_ref) {
            (Some(v), _) => headers.push((h.name.to_ascii_lowercase(), v)),
            (None, Some(_)) => return Err(err(Some(name), format!("header {}: secretKeyRef in HTTPEndpoint headers is not supported by rapr yet", h.name))),
            (None, None) => return Err(err(Some(name), format!("header {} has neither value nor secretKeyRef", h.name))),
        }
    }
    Ok(Some(HttpEndpointSpec { name, base_url: base, headers }))
}
