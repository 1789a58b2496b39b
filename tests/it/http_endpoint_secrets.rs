//! `HTTPEndpoint`s whose header values and `clientTLS` documents are `secretKeyRef`s into the
//! secret store named by `auth.secretStore`, against the real binary: the external servers (plain
//! HTTP, and HTTPS requiring a client certificate) echo what they received, so the tests see the
//! secret values arrive; an unresolvable reference makes the endpoint a failed resource, and
//! invoking it fails as invoking an unknown app id does.
//!
//! The secrets live in a `secretstores.local.file` store (multi-valued, so one secret holds the
//! three PEM documents under their own keys); certificates are made at test time by rcgen.

use std::sync::Arc;

use axum::extract::Request;
use axum::routing::any;
use axum::Router;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde_json::{json, Value};

use crate::harness::tls::serve_tls;
use crate::harness::{Sidecar, SidecarBuilder};

/// Answers the path and headers it received.
async fn echo(req: Request) -> axum::Json<Value> {
    let headers: serde_json::Map<String, Value> = req.headers().iter().map(|(k, v)| (k.as_str().to_string(), Value::String(v.to_str().unwrap_or("").into()))).collect();
    axum::Json(json!({ "path": req.uri().path(), "headers": headers }))
}

async fn serve_http() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, Router::new().fallback(any(echo))).await.unwrap() });
    port
}

/// A throwaway CA, a loopback server certificate and a client certificate, as PEM.
struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>, usage| {
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        (params.signed_by(&key, &issuer).unwrap().pem(), key.serialize_pem())
    };
    let server = leaf(vec!["127.0.0.1".into()], ExtendedKeyUsagePurpose::ServerAuth);
    let client = leaf(vec!["client.rapr.test".into()], ExtendedKeyUsagePurpose::ClientAuth);
    Pki { ca: issuer.pem(), server, client }
}

/// Serves the echo over TLS, requiring a client certificate under the same CA.
async fn serve_mtls(pki: &Pki) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(pki.ca.as_bytes()).unwrap()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider)).build().unwrap();
    let chain = vec![CertificateDer::from_pem_slice(pki.server.0.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(pki.server.1.as_bytes()).unwrap();
    let cfg = ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions().unwrap().with_client_cert_verifier(verifier).with_single_cert(chain, key).unwrap();
    serve_tls(Router::new().fallback(any(echo)), cfg).await
}

/// A sidecar with the `vault` file store holding `secrets` (multi-valued) and these endpoints.
async fn sidecar(app_id: &str, secrets: Value, endpoints: &[String], wait_healthy: bool) -> Sidecar {
    let b = SidecarBuilder::new(app_id);
    let file = b.dir().join("secrets.json");
    std::fs::write(&file, secrets.to_string()).unwrap();
    let store = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: vault\nspec:\n  type: secretstores.local.file\n  version: v1\n  metadata:\n  - name: secretsFile\n    value: \"{}\"\n  - name: multiValued\n    value: \"true\"\n",
        file.display()
    );
    let mut b = b.file("vault.yaml", &store);
    for (i, ep) in endpoints.iter().enumerate() {
        b = b.file(&format!("endpoint-{i}.yaml"), ep);
    }
    if !wait_healthy {
        b = b.allow_unhealthy();
    }
    b.start().await
}

/// An endpoint document; `auth` and `extra` are YAML lines at the top level and under `spec`.
fn endpoint(name: &str, base: &str, auth: &str, extra: &str) -> String {
    format!("apiVersion: dapr.io/v1alpha1\nkind: HTTPEndpoint\nmetadata:\n  name: {name}\n{auth}spec:\n  baseUrl: {base}\n{extra}")
}

const VAULT: &str = "auth:\n  secretStore: vault\n";

fn secret_header(secret: &str, key: Option<&str>) -> String {
    let key = key.map(|k| format!("      key: {k}\n")).unwrap_or_default();
    format!("  headers:\n  - name: x-api-key\n    secretKeyRef:\n      name: {secret}\n{key}  - name: x-plain\n    value: literal\n")
}

async fn invoke(sc: &Sidecar, id: &str) -> (u16, Value) {
    let r = sc.client.post(sc.url(&format!("/v1.0/invoke/{id}/method/orders/1"))).body("ping").send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn metadata(sc: &Sidecar) -> Value {
    sc.client.get(sc.url("/v1.0/metadata")).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn header_and_client_tls_values_come_from_the_secret_store() {
    let pki = pki();
    let (http_port, https_port) = (serve_http().await, serve_mtls(&pki).await);
    let secrets = json!({
        "api-token": "s3cret-key",
        "tls": { "ca": pki.ca, "cert": pki.client.0, "key": pki.client.1, "token": "tls-key" },
    });
    let tls = "  clientTLS:\n    rootCA:\n      secretKeyRef:\n        name: tls\n        key: ca\n    certificate:\n      secretKeyRef:\n        name: tls\n        key: cert\n    privateKey:\n      secretKeyRef:\n        name: tls\n        key: key\n";
    let endpoints = [
        // The key defaults to the secret's name.
        endpoint("billing", &format!("http://127.0.0.1:{http_port}/api"), VAULT, &secret_header("api-token", None)),
        endpoint("secure", &format!("https://127.0.0.1:{https_port}"), VAULT, &format!("{}{tls}", secret_header("tls", Some("token")))),
    ];
    // Waiting for health shows no resource failed.
    let sc = sidecar("ep-secrets", secrets, &endpoints, true).await;

    let (status, seen) = invoke(&sc, "billing").await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["path"], "/api/orders/1");
    assert_eq!(seen["headers"]["x-api-key"], "s3cret-key", "{seen}");
    assert_eq!(seen["headers"]["x-plain"], "literal");

    // rootCA, certificate and privateKey all from the store: the server's certificate is
    // verified against the secret CA, and the server accepts the secret client certificate.
    let (status, seen) = invoke(&sc, "secure").await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["headers"]["x-api-key"], "tls-key", "{seen}");

    let m = metadata(&sc).await;
    let mut names: Vec<&str> = m["httpEndpoints"].as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
    names.sort();
    assert_eq!(names, ["billing", "secure"], "{m}");
    assert!(!m.to_string().contains("s3cret-key"), "secret values never show in metadata: {m}");
}

#[tokio::test]
async fn unresolvable_secret_references_fail_the_endpoint() {
    let port = serve_http().await;
    let base = format!("http://127.0.0.1:{port}");
    let no_tls_key = "  clientTLS:\n    rootCA:\n      secretKeyRef:\n        name: tls\n        key: ca\n";
    let endpoints = [
        endpoint("good", &base, VAULT, &secret_header("api-token", None)),
        endpoint("missing-key", &base, VAULT, &secret_header("api-token", Some("nope"))),
        endpoint("missing-secret", &base, VAULT, &secret_header("no-such-secret", None)),
        endpoint("unknown-store", &base, "auth:\n  secretStore: nostore\n", &secret_header("api-token", None)),
        endpoint("no-store", &base, "", &secret_header("api-token", None)),
        endpoint("missing-ca", &base.replace("http:", "https:"), VAULT, no_tls_key),
    ];
    let sc = sidecar("ep-secrets-bad", json!({ "api-token": "t", "tls": { "cert": "x" } }), &endpoints, false).await;

    // The others still load and work.
    let (status, seen) = invoke(&sc, "good").await;
    assert_eq!((status, &seen["headers"]["x-api-key"]), (200, &json!("t")), "{seen}");

    // Each failure is a failed resource naming the endpoint, the field and the cause.
    let m = metadata(&sc).await;
    let failure = |name: &str| m["extended"][format!("rapr.component.{name}")].as_str().unwrap_or_default().to_string();
    let expected = [
        ("missing-key", "spec.headers x-api-key: secret api-token in secret store vault has no key nope"),
        ("missing-secret", "spec.headers x-api-key: secret no-such-secret from secret store vault: secret no-such-secret not found"),
        ("unknown-store", "secret store nostore is not configured"),
        ("no-store", "spec.headers x-api-key uses secretKeyRef but auth.secretStore is not set"),
        ("missing-ca", "spec.clientTLS.rootCA: secret tls in secret store vault has no key ca"),
    ];
    for (name, reason) in expected {
        let f = failure(name);
        assert!(f.starts_with("failed: "), "{name}: {m}");
        assert!(f.contains("endpoint-") && f.contains(&format!("component {name}: ")), "the file and the endpoint are named: {f}");
        assert!(f.contains(reason), "{name}: {reason:?} not in {f:?}");
    }
    assert_eq!(m["httpEndpoints"], json!([{ "name": "good" }]), "failed endpoints are not listed");
    assert_ne!(sc.client.get(sc.url("/v1.0/healthz")).send().await.unwrap().status(), 204, "a failed resource keeps the sidecar unhealthy, as other resource failures do");

    // Invoking a failed endpoint is invoking an id nothing answers to.
    let (unknown_status, unknown) = invoke(&sc, "nothing-here").await;
    assert_eq!(unknown["errorCode"], "ERR_DIRECT_INVOKE", "{unknown}");
    for (name, _) in expected {
        let (status, body) = invoke(&sc, name).await;
        assert_eq!(status, unknown_status, "{name}: {body}");
        assert_eq!(body["errorCode"], unknown["errorCode"], "{name}: {body}");
        let message = unknown["message"].as_str().unwrap().replace("nothing-here", name);
        assert_eq!(body["message"], message, "{name}: {body}");
    }
}
