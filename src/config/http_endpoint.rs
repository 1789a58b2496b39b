//! The `HTTPEndpoint` resource (dapr.io/v1alpha1): an external HTTP service callable by name
//! through the invoke API, with headers added to every call and, for `https://` base URLs, the
//! `clientTLS` trust and identity.
//!
//! Loading takes two steps because header values and `clientTLS` documents may be `secretKeyRef`s
//! into the secret store named by `auth.secretStore`, and secret stores are components that start
//! after the resources are read. `parse` reads the document at load time into a
//! `PendingHttpEndpoint`; `PendingHttpEndpoint::resolve` runs once every component has had its
//! first start (as daprd loads endpoints after its secret stores), fills the references and checks
//! the TLS PEMs, giving the immutable `HttpEndpointSpec` the invoke facade holds. A failure in
//! either step makes the endpoint a failed resource naming the field, rather than a call that
//! fails or goes out without its credentials later.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::component::SecretKeyRef;
use super::resources::ResourceError;
use crate::components::directory::Directory;
use crate::components::secret_refs::{RefError, SecretRefs};

/// A loaded endpoint, its secrets resolved; never changes afterwards.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpEndpointSpec {
    /// `metadata.name`: the id apps invoke.
    pub name: String,
    /// `spec.baseUrl`.
    pub base_url: String,
    /// `spec.headers`, names lowercased, values resolved.
    pub headers: Vec<(String, String)>,
    /// `spec.clientTLS`, when set.
    pub client_tls: Option<ClientTlsSpec>,
}

/// Header names only: their values may have come from a secret store.
impl std::fmt::Debug for HttpEndpointSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpEndpointSpec")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("headers", &self.headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
            .field("client_tls", &self.client_tls)
            .finish()
    }
}

/// `spec.clientTLS`: PEM documents, resolved.
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

/// A header value or `clientTLS` document as written.
#[derive(Clone, PartialEq, Eq)]
pub enum EndpointValue {
    /// `value`, inline.
    Literal(String),
    /// `secretKeyRef`, read from the endpoint's `auth.secretStore`.
    Secret(SecretKeyRef),
}

/// Literals are not printed: a `privateKey` may be inline.
impl std::fmt::Debug for EndpointValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointValue::Literal(_) => f.write_str("value"),
            EndpointValue::Secret(r) => write!(f, "secretKeyRef {}/{}", r.name, r.key),
        }
    }
}

/// An `HTTPEndpoint` as loaded, before its `secretKeyRef`s are resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingHttpEndpoint {
    /// `metadata.name`.
    pub name: String,
    file: PathBuf,
    base_url: String,
    headers: Vec<(String, EndpointValue)>,
    /// `rootCA`, `certificate`, `privateKey`, when `clientTLS` is set.
    client_tls: Option<[Option<EndpointValue>; 3]>,
    /// `auth.secretStore`.
    secret_store: Option<String>,
}

const TLS_FIELDS: [&str; 3] = ["spec.clientTLS.rootCA", "spec.clientTLS.certificate", "spec.clientTLS.privateKey"];

#[derive(Deserialize)]
struct Raw {
    metadata: RawMeta,
    spec: RawSpec,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    auth: Option<RawAuth>,
}

#[derive(Deserialize)]
struct RawMeta {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAuth {
    #[serde(default)]
    secret_store: Option<String>,
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
    secret_key_ref: Option<RawSecretKeyRef>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawHeader {
    name: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    secret_key_ref: Option<RawSecretKeyRef>,
}

#[derive(Deserialize)]
struct RawSecretKeyRef {
    #[serde(default)]
    name: String,
    #[serde(default)]
    key: String,
}

/// A `secretKeyRef` with a name wins over `value`, as in daprd (which overwrites the value with
/// the secret); an empty reference is no reference. The key defaults to the secret's name.
fn endpoint_value(value: Option<String>, secret: Option<RawSecretKeyRef>) -> Option<EndpointValue> {
    match (secret.filter(|r| !r.name.is_empty()), value) {
        (Some(r), _) => Some(EndpointValue::Secret(SecretKeyRef { key: if r.key.is_empty() { r.name.clone() } else { r.key }, name: r.name })),
        (None, Some(v)) => Some(EndpointValue::Literal(v)),
        (None, None) => None,
    }
}

/// Parses one `HTTPEndpoint` document; `None` when scoped to other apps.
pub fn parse(value: yaml_serde::Value, file: &Path, app_id: &str) -> Result<Option<PendingHttpEndpoint>, ResourceError> {
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
        match endpoint_value(h.value, h.secret_key_ref) {
            Some(v) => headers.push((h.name.to_ascii_lowercase(), v)),
            None => return Err(err(Some(name), format!("header {} has neither value nor secretKeyRef", h.name))),
        }
    }
    let secret_store = raw.auth.and_then(|a| a.secret_store).filter(|s| !s.is_empty());
    Ok(Some(PendingHttpEndpoint { name, file: file.to_path_buf(), base_url: base, headers, client_tls, secret_store }))
}

fn client_tls(name: &str, raw: RawClientTls) -> Result<[Option<EndpointValue>; 3], String> {
    // A blank inline document is no document.
    let document = |d: Option<RawDocument>| d.and_then(|d| endpoint_value(d.value.filter(|v| !v.trim().is_empty()), d.secret_key_ref));
    match raw.renegotiation.as_deref() {
        None | Some("Never") => {}
        // rustls never renegotiates; a server that asks for it fails the handshake.
        Some(r @ ("OnceAsClient" | "FreelyAsClient")) => {
            tracing::warn!(http_endpoint = %name, renegotiation = %r, "clientTLS.renegotiation is not supported by rapr (TLS renegotiation is never done); ignored");
        }
        Some(other) => return Err(format!("invalid renegotiation value {other} for http endpoint {name}")),
    }
    Ok([document(raw.root_ca), document(raw.certificate), document(raw.private_key)])
}

impl PendingHttpEndpoint {
    fn error(&self, reason: String) -> ResourceError {
        ResourceError { file: self.file.clone(), component: Some(self.name.clone()), reason }
    }

    /// Every value with the field it came from, headers first.
    fn values(&self) -> impl Iterator<Item = (String, &EndpointValue)> {
        let headers = self.headers.iter().map(|(k, v)| (format!("spec.headers {k}"), v));
        let tls = self.client_tls.iter().flat_map(|t| TLS_FIELDS.iter().zip(t).filter_map(|(f, v)| Some((f.to_string(), v.as_ref()?))));
        headers.chain(tls)
    }

    /// Reads the referenced secrets from the endpoint's secret store (one read per secret name,
    /// through the resolver components use too) and gives the endpoint as the invoke facade uses it.
    pub async fn resolve(self, directory: &Directory) -> Result<HttpEndpointSpec, ResourceError> {
        let refs: Vec<SecretKeyRef> = self.values().filter_map(|(_, v)| match v {
            EndpointValue::Secret(r) => Some(r.clone()),
            EndpointValue::Literal(_) => None,
        }).collect();
        let secrets = match SecretRefs::fetch(directory, self.secret_store.as_deref(), &refs).await {
            Ok(s) => s,
            Err(e @ RefError::NoStoreSet) => {
                let field = self.values().find(|(_, v)| matches!(v, EndpointValue::Secret(_))).map(|(f, _)| f).unwrap_or_default();
                return Err(self.error(format!("{field} {e}")));
            }
            Err(e) => return Err(self.error(e.to_string())),
        };
        self.fill(&secrets)
    }

    /// Replaces every reference by its value and checks the TLS documents.
    fn fill(self, secrets: &SecretRefs) -> Result<HttpEndpointSpec, ResourceError> {
        let value = |field: &str, v: &EndpointValue| -> Result<String, String> {
            match v {
                EndpointValue::Literal(s) => Ok(s.clone()),
                EndpointValue::Secret(r) => secrets.value(r).map_err(|e| format!("{field}: {e}")),
            }
        };
        let mut headers = Vec::new();
        for (k, v) in &self.headers {
            headers.push((k.clone(), value(&format!("spec.headers {k}"), v).map_err(|r| self.error(r))?));
        }
        let client_tls = match &self.client_tls {
            None => None,
            Some(docs) => {
                let mut out: [Option<String>; 3] = Default::default();
                for ((field, doc), slot) in TLS_FIELDS.iter().zip(docs).zip(out.iter_mut()) {
                    if let Some(v) = doc {
                        *slot = Some(value(field, v).map_err(|r| self.error(r))?).filter(|s| !s.trim().is_empty());
                    }
                }
                let [root_ca, certificate, private_key] = out;
                let spec = ClientTlsSpec { root_ca, certificate, private_key };
                if spec.certificate.is_some() && spec.private_key.is_none() {
                    // daprd loads a client identity only with the key; say so rather than silently ignore.
                    tracing::warn!(http_endpoint = %self.name, "clientTLS.certificate without clientTLS.privateKey; no client certificate is sent");
                }
                // Checked here so a bad PEM fails at load like any resource error, not on the first call.
                crate::invoke::tls::endpoint_config(&spec, rustls::RootCertStore::empty).map_err(|e| self.error(format!("spec.clientTLS: {e}")))?;
                Some(spec)
            }
        };
        Ok(HttpEndpointSpec { name: self.name, base_url: self.base_url, headers, client_tls })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(yaml: &str) -> Result<Option<PendingHttpEndpoint>, ResourceError> {
        parse(yaml_serde::from_str(yaml).unwrap(), Path::new("ep.yaml"), "me")
    }

    /// What the store answers for one secret name: its key/value pairs, or an error.
    type Answer<'a> = (&'a str, Result<&'a [(&'a str, &'a str)], &'a str>);

    /// Parses and resolves with `secrets` as the store's content.
    fn load_with(yaml: &str, secrets: &[Answer<'_>]) -> Result<HttpEndpointSpec, ResourceError> {
        let fetched = secrets
            .iter()
            .map(|(name, s)| (name.to_string(), s.map(|kv| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).map_err(str::to_string)))
            .collect();
        parse_str(yaml)?.unwrap().fill(&SecretRefs::answered("vault", fetched))
    }

    fn load(yaml: &str) -> Result<HttpEndpointSpec, ResourceError> {
        load_with(yaml, &[])
    }

    fn with_tls(client_tls: &str) -> String {
        format!("kind: HTTPEndpoint\nmetadata:\n  name: ext\nspec:\n  baseUrl: https://example.invalid\n  clientTLS:\n{client_tls}")
    }

    fn ca_pem() -> String {
        rcgen::generate_simple_self_signed(vec!["example.invalid".to_string()]).unwrap().cert.pem()
    }

    const SECRET_HEADER: &str = "kind: HTTPEndpoint\nmetadata:\n  name: ext\nauth:\n  secretStore: vault\nspec:\n  baseUrl: http://example.invalid\n  headers:\n  - name: X-Api-Key\n    secretKeyRef:\n      name: api\n      key: token\n  - name: x-plain\n    value: v\n  - name: x-both\n    value: literal\n    secretKeyRef:\n      name: api\n";

    #[test]
    fn root_ca_value_is_kept_and_checked() {
        let pem = ca_pem();
        let indented: String = pem.lines().map(|l| format!("        {l}\n")).collect();
        let ep = load(&with_tls(&format!("    rootCA:\n      value: |\n{indented}    renegotiation: Never\n"))).unwrap();
        assert_eq!(ep.client_tls.unwrap().root_ca.unwrap().trim(), pem.trim());
        let e = load(&with_tls("    rootCA:\n      value: nonsense\n")).unwrap_err();
        assert!(e.reason.contains("clientTLS.rootCA"), "{}", e.reason);
        assert_eq!(e.component.as_deref(), Some("ext"));
    }

    #[test]
    fn header_secrets_resolve_and_win_over_value() {
        let ep = load_with(SECRET_HEADER, &[("api", Ok(&[("token", "t0k"), ("api", "whole")]))]).unwrap();
        let headers: Vec<(&str, &str)> = ep.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(headers, [("x-api-key", "t0k"), ("x-plain", "v"), ("x-both", "whole")], "the key defaults to the secret's name");
        assert!(!format!("{ep:?}").contains("t0k"), "header values are not printed");
    }

    #[test]
    fn unresolvable_references_name_the_field() {
        let e = load_with(SECRET_HEADER, &[("api", Ok(&[("api", "x")]))]).unwrap_err();
        assert_eq!(e.reason, "spec.headers x-api-key: secret api in secret store vault has no key token");
        let e = load_with(SECRET_HEADER, &[("api", Err("secret api not found"))]).unwrap_err();
        assert_eq!(e.reason, "spec.headers x-api-key: secret api from secret store vault: secret api not found");
        assert!(e.to_string().starts_with("ep.yaml: component ext: "), "{e}");
    }

    #[test]
    fn tls_documents_from_secrets_are_checked_after_resolution() {
        let yaml = format!("auth:\n  secretStore: vault\n{}", with_tls("    rootCA:\n      secretKeyRef:\n        name: tls\n        key: ca\n"));
        let pem = ca_pem();
        let ep = load_with(&yaml, &[("tls", Ok(&[("ca", pem.as_str())]))]).unwrap();
        assert_eq!(ep.client_tls.unwrap().root_ca.as_deref(), Some(pem.as_str()));
        let e = load_with(&yaml, &[("tls", Ok(&[("ca", "garbage")]))]).unwrap_err();
        assert!(e.reason.starts_with("spec.clientTLS: clientTLS.rootCA"), "{}", e.reason);
        let e = load_with(&yaml, &[("tls", Ok(&[]))]).unwrap_err();
        assert_eq!(e.reason, "spec.clientTLS.rootCA: secret tls in secret store vault has no key ca");
    }

    #[tokio::test]
    async fn the_secret_store_must_be_named_configured_and_ready() {
        let mut d = Directory::default();
        let no_store = SECRET_HEADER.replace("auth:\n  secretStore: vault\n", "");
        let e = parse_str(&no_store).unwrap().unwrap().resolve(&d).await.unwrap_err();
        assert!(e.reason.starts_with("spec.headers x-api-key uses secretKeyRef but auth.secretStore is not set"), "{e}");
        let e = parse_str(SECRET_HEADER).unwrap().unwrap().resolve(&d).await.unwrap_err();
        assert_eq!(e.reason, "secret store vault is not configured");
        d.secrets_unavailable.insert("vault".into(), "file missing".into());
        let e = parse_str(SECRET_HEADER).unwrap().unwrap().resolve(&d).await.unwrap_err();
        assert_eq!(e.reason, "secret store vault is not ready: file missing");
    }

    #[test]
    fn unknown_renegotiation_is_refused_by_name() {
        let e = parse_str(&with_tls("    renegotiation: Sometimes\n")).unwrap_err();
        assert_eq!(e.reason, "invalid renegotiation value Sometimes for http endpoint ext");
        assert!(load(&with_tls("    renegotiation: FreelyAsClient\n")).is_ok(), "accepted, with a warning");
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let spec = ClientTlsSpec { root_ca: None, certificate: Some("CERT".into()), private_key: Some("SECRET KEY".into()) };
        assert!(!format!("{spec:?}").contains("SECRET"));
        let pending = parse_str(&with_tls("    privateKey:\n      value: SECRET KEY\n")).unwrap().unwrap();
        assert!(!format!("{pending:?}").contains("SECRET"));
    }
}
