//! The `HTTPEndpoint` resource (dapr.io/v1alpha1): an external HTTP service callable by name
//! through the invoke API, with headers added to every call and, for `https://` base URLs, the
//! `clientTLS` trust and identity (checked here, so a bad PEM fails at load like any resource
//! error rather than on the first call).

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
    /// `spec.clientTLS`, when set.
    pub client_tls: Option<ClientTlsSpec>,
}

/// `spec.clientTLS`: PEM documents (inline `value`s).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientTlsSpec {
    /// `rootCA`: replaces the trusted roots.
    pub root_ca: Option<String>,
    /// `certificate`: the client's certificate chain, for servers requiring mutual TLS.
    pub certificate: Option<String>,
    /// `privateKey`: the key of `certificate`.
    pub private_key: Option<String>,
}

/// Never prints the private key (specs are logged and shown in errors).
impl std::fmt::Debug for ClientTlsSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTlsSpec")
            .field("root_ca", &self.root_ca.is_some())
            .field("certificate", &self.certificate.is_some())
            .field("private_key", &self.private_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
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
    #[serde(default, rename = "clientTLS")]
    client_tls: Option<RawClientTls>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawClientTls {
    #[serde(default, rename = "rootCA")]
    root_ca: Option<RawDocument>,
    #[serde(default)]
    certificate: Option<RawDocument>,
    #[serde(default)]
    private_key: Option<RawDocument>,
    #[serde(default)]
    renegotiation: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDocument {
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    secret_key_ref: Option<yaml_serde::Value>,
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
    let client_tls = match raw.spec.client_tls {
        Some(t) => Some(client_tls(&name, t).map_err(|reason| err(Some(name.clone()), reason))?),
        None => None,
    };
    let mut headers = Vec::new();
    for h in raw.spec.headers {
        match (h.value, h.secret_key_ref) {
            (Some(v), _) => headers.push((h.name.to_ascii_lowercase(), v)),
            (None, Some(_)) => return Err(err(Some(name), format!("header {}: secretKeyRef in HTTPEndpoint headers is not supported by rapr yet", h.name))),
            (None, None) => return Err(err(Some(name), format!("header {} has neither value nor secretKeyRef", h.name))),
        }
    }
    Ok(Some(HttpEndpointSpec { name, base_url: base, headers, client_tls }))
}

fn client_tls(name: &str, raw: RawClientTls) -> Result<ClientTlsSpec, String> {
    let document = |field: &str, d: Option<RawDocument>| match d {
        None => Ok(None),
        Some(RawDocument { value: Some(v), .. }) if !v.trim().is_empty() => Ok(Some(v)),
        Some(RawDocument { secret_key_ref: Some(_), .. }) => Err(format!("spec.clientTLS.{field}: secretKeyRef is not supported by rapr yet; give the PEM as value")),
        Some(_) => Ok(None),
    };
    let spec = ClientTlsSpec {
        root_ca: document("rootCA", raw.root_ca)?,
        certificate: document("certificate", raw.certificate)?,
        private_key: document("privateKey", raw.private_key)?,
    };
    match raw.renegotiation.as_deref() {
        None | Some("Never") => {}
        // rustls never renegotiates; a server that asks for it fails the handshake.
        Some(r @ ("OnceAsClient" | "FreelyAsClient")) => {
            tracing::warn!(http_endpoint = %name, renegotiation = %r, "clientTLS.renegotiation is not supported by rapr (TLS renegotiation is never done); ignored");
        }
        Some(other) => return Err(format!("invalid renegotiation value {other} for http endpoint {name}")),
    }
    if spec.certificate.is_some() && spec.private_key.is_none() {
        // daprd loads a client identity only with the key; say so rather than silently ignore.
        tracing::warn!(http_endpoint = %name, "clientTLS.certificate without clientTLS.privateKey; no client certificate is sent");
    }
    crate::invoke::tls::endpoint_config(&spec, rustls::RootCertStore::empty).map_err(|e| format!("spec.clientTLS: {e}"))?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<Option<HttpEndpointSpec>, ResourceError> {
        parse(yaml_serde::from_str(yaml).unwrap(), Path::new("ep.yaml"), "me")
    }

    fn with_tls(client_tls: &str) -> String {
        format!("kind: HTTPEndpoint\nmetadata:\n  name: ext\nspec:\n  baseUrl: https://example.invalid\n  clientTLS:\n{client_tls}")
    }

    fn ca_pem() -> String {
        rcgen::generate_simple_self_signed(vec!["example.invalid".to_string()]).unwrap().cert.pem()
    }

    #[test]
    fn root_ca_value_is_kept_and_checked() {
        let pem = ca_pem();
        let indented: String = pem.lines().map(|l| format!("        {l}\n")).collect();
        let ep = load(&with_tls(&format!("    rootCA:\n      value: |\n{indented}    renegotiation: Never\n"))).unwrap().unwrap();
        assert_eq!(ep.client_tls.unwrap().root_ca.unwrap().trim(), pem.trim());
        let e = load(&with_tls("    rootCA:\n      value: nonsense\n")).unwrap_err();
        assert!(e.reason.contains("clientTLS.rootCA"), "{}", e.reason);
    }

    #[test]
    fn secret_refs_and_unknown_renegotiation_are_refused_by_name() {
        let e = load(&with_tls("    certificate:\n      secretKeyRef:\n        name: s\n        key: k\n")).unwrap_err();
        assert!(e.reason.contains("spec.clientTLS.certificate: secretKeyRef"), "{}", e.reason);
        let e = load(&with_tls("    renegotiation: Sometimes\n")).unwrap_err();
        assert_eq!(e.reason, "invalid renegotiation value Sometimes for http endpoint ext");
        assert!(load(&with_tls("    renegotiation: FreelyAsClient\n")).unwrap().is_some(), "accepted, with a warning");
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let spec = ClientTlsSpec { root_ca: None, certificate: Some("CERT".into()), private_key: Some("SECRET KEY".into()) };
        assert!(!format!("{spec:?}").contains("SECRET"));
    }
}
