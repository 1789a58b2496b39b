//! TLS on the sidecar's outbound calls: `--app-protocol https` and `grpcs` (the app's certificate
//! is not checked, as daprd does not check it; health probes and gRPC proxying go over TLS too),
//! and `HTTPEndpoint`s with `https://` base URLs: `clientTLS.rootCA` as the trust, no `rootCA`
//! meaning the system's roots (so a private CA fails), and `certificate` + `privateKey` for
//! servers requiring mutual TLS.
//!
//! Every certificate is made at test time by rcgen under a throwaway CA; the servers are axum
//! routers (HTTP apps, or tonic services as routers) behind tokio-rustls on loopback.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use axum::Router;
use rapr_proto::app::app_callback_health_check_server::{AppCallbackHealthCheck, AppCallbackHealthCheckServer};
use rapr_proto::app::app_callback_client::AppCallbackClient;
use rapr_proto::app::app_callback_server::{AppCallback, AppCallbackServer};
use rapr_proto::app::HealthCheckResponse;
use rapr_proto::common::v1::{InvokeRequest, InvokeResponse};
use rapr_proto::runtime::v1::InvokeServiceRequest;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde_json::{json, Value};

use crate::harness::tls::serve_tls;
use crate::harness::{eventually, Sidecar, SidecarBuilder};

/// Health checks every second, one failure is enough (`--app-health-check-path` comes last, so
/// gRPC apps take the first seven).
const HEALTH_FLAGS: [&str; 8] =
    ["--enable-app-health-check", "--app-health-probe-interval", "1", "--app-health-probe-timeout", "500", "--app-health-threshold", "1", "--app-health-check-path"];

/// A throwaway certificate authority.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM (for YAML) and as rustls wants them (for servers).
struct Leaf {
    cert_pem: String,
    key_pem: String,
}

impl Leaf {
    fn der(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (vec![CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).unwrap()], PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap())
    }
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.distinguished_name.push(rcgen::DnType::CommonName, "rapr test CA");
        Self { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for loopback (IP and name).
    fn server(&self) -> Leaf {
        self.leaf(vec!["127.0.0.1".into(), "localhost".into()], ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate for mutual TLS.
    fn client(&self) -> Leaf {
        self.leaf(vec!["tls-client.rapr.test".into()], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, names: Vec<String>, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server config offering h2 and HTTP/1.1; with `client_ca`, a client certificate under that CA
/// is required.
fn server_config(leaf: &Leaf, client_ca: Option<&Ca>) -> ServerConfig {
    let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap();
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(WebPkiClientVerifier::builder_with_provider(Arc::new(ca.roots()), provider()).build().unwrap()),
        None => builder.with_no_client_auth(),
    };
    let (chain, key) = leaf.der();
    let mut cfg = builder.with_single_cert(chain, key).unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg
}


/// Answers what it received: path, query, HTTP version, headers and body.
async fn echo(req: Request) -> impl IntoResponse {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let headers: serde_json::Map<String, Value> = parts.headers.iter().map(|(k, v)| (k.as_str().to_string(), Value::String(v.to_str().unwrap_or("").into()))).collect();
    axum::Json(json!({
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
}

fn echo_router() -> Router {
    Router::new().fallback(any(echo))
}

async fn post(sc: &Sidecar, path: &str) -> (u16, Value) {
    let r = sc.client.post(sc.url(path)).body("ping").send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test]
async fn https_app_is_called_over_tls_and_probed_over_tls() {
    let healthy = Arc::new(AtomicBool::new(true));
    async fn health(State(h): State<Arc<AtomicBool>>) -> StatusCode {
        if h.load(Ordering::SeqCst) {
            StatusCode::NO_CONTENT
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
    // The app's certificate comes from a CA the sidecar has never heard of: daprd does not
    // verify its app, and neither do we.
    let ca = Ca::new();
    let app = Router::new().route("/healthz", get(health)).with_state(Arc::clone(&healthy)).fallback(any(echo));
    let port = serve_tls(app, server_config(&ca.server(), None)).await;
    // `start` waits for /v1.0/healthz, which needs one successful probe: the probe spoke TLS.
    let sc = SidecarBuilder::new("tls-https-app").args(&["--app-port", &port.to_string(), "--app-protocol", "https"]).args(&HEALTH_FLAGS).args(&["/healthz"]).start().await;

    let (status, seen) = post(&sc, "/v1.0/invoke/tls-https-app/method/orders/1?x=y").await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["path"], "/orders/1");
    assert_eq!(seen["query"], "x=y");
    assert_eq!(seen["body"], "ping");
    assert_eq!(seen["version"], "HTTP/1.1", "daprd's https app channel speaks HTTP/1.1");
    assert_eq!(seen["headers"]["dapr-callee-app-id"], "tls-https-app");

    // The probe keeps going over TLS: a failing /healthz turns the app unhealthy.
    healthy.store(false, Ordering::SeqCst);
    let body = eventually(Duration::from_secs(15), "the https app to turn unhealthy", || async {
        let (status, body) = post(&sc, "/v1.0/invoke/tls-https-app/method/x").await;
        (status == 500).then_some(body)
    })
    .await;
    assert_eq!(body["errorCode"], "ERR_DIRECT_INVOKE", "{body}");
    assert_eq!(body["message"], "failed to invoke, id: tls-https-app, err: app is not in a healthy state");
    healthy.store(true, Ordering::SeqCst);
    eventually(Duration::from_secs(15), "the https app to recover", || async { (post(&sc, "/v1.0/invoke/tls-https-app/method/x").await.0 == 200).then_some(()) }).await;
}

#[derive(Clone)]
struct GrpcApp(Arc<AtomicBool>);

#[tonic::async_trait]
impl AppCallback for GrpcApp {
    no_topic_callbacks!();
    async fn on_invoke(&self, r: tonic::Request<InvokeRequest>) -> Result<tonic::Response<InvokeResponse>, tonic::Status> {
        let req = r.into_inner();
        if req.method == "fail" {
            return Err(tonic::Status::permission_denied("no entry"));
        }
        let data = format!("grpcs:{}:{}", req.method, String::from_utf8_lossy(&req.data.map(|d| d.value).unwrap_or_default())).into_bytes();
        Ok(tonic::Response::new(InvokeResponse { data: Some(prost_types::Any { type_url: String::new(), value: data }), content_type: "text/plain".into() }))
    }
}

#[tonic::async_trait]
impl AppCallbackHealthCheck for GrpcApp {
    async fn health_check(&self, _r: tonic::Request<()>) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        if self.0.load(Ordering::SeqCst) {
            Ok(tonic::Response::new(HealthCheckResponse {}))
        } else {
            Err(tonic::Status::unavailable("not now"))
        }
    }
}

#[tokio::test]
async fn grpcs_app_is_called_over_tls_from_both_apis_and_other_sidecars() {
    let healthy = Arc::new(AtomicBool::new(true));
    let app = GrpcApp(Arc::clone(&healthy));
    let router = tonic::service::Routes::new(AppCallbackServer::new(app.clone())).add_service(AppCallbackHealthCheckServer::new(app)).into_axum_router();
    let port = serve_tls(router, server_config(&Ca::new().server(), None)).await;
    let home = tempfile::tempdir().unwrap();
    let target = SidecarBuilder::new("tls-grpcs-app")
        .home(home.path())
        .args(&["--app-port", &port.to_string(), "--app-protocol", "grpcs"])
        .args(&HEALTH_FLAGS[..7])
        .start()
        .await;

    // HTTP invoke API to the local gRPC app.
    let r = target.client.post(target.url("/v1.0/invoke/tls-grpcs-app/method/hello")).body("x").send().await.unwrap();
    let (status, text) = (r.status().as_u16(), r.text().await.unwrap());
    assert_eq!((status, text.as_str()), (200, "grpcs:hello:x"));

    // gRPC InvokeService, and the app's own status passing through.
    let mut client = target.grpc().await;
    let message = InvokeRequest { method: "hi".into(), data: Some(prost_types::Any { type_url: String::new(), value: b"y".to_vec() }), ..Default::default() };
    let resp = client.invoke_service(InvokeServiceRequest { id: "tls-grpcs-app".into(), message: Some(message) }).await.unwrap().into_inner();
    assert_eq!(resp.data.unwrap().value, b"grpcs:hi:y");
    let message = InvokeRequest { method: "fail".into(), ..Default::default() };
    let err = client.invoke_service(InvokeServiceRequest { id: "tls-grpcs-app".into(), message: Some(message) }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");

    // Another sidecar's call arrives over the internal protocol and still goes out as gRPC over TLS.
    let caller = SidecarBuilder::new("tls-grpcs-caller").home(home.path()).start().await;
    let r = caller.client.post(caller.url("/v1.0/invoke/tls-grpcs-app/method/remote")).body("z").send().await.unwrap();
    let (status, text) = (r.status().as_u16(), r.text().await.unwrap());
    assert_eq!((status, text.as_str()), (200, "grpcs:remote:z"));

    // gRPC proxying (`dapr-app-id` on a method the sidecar does not serve) reaches the app over
    // TLS as well: from its own sidecar, and through another sidecar's internal port.
    for (sc, method) in [(&target, "proxied-local"), (&caller, "proxied-remote")] {
        let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", sc.grpc)).unwrap().connect().await.unwrap();
        let mut app = AppCallbackClient::new(ch);
        let mut req = tonic::Request::new(InvokeRequest { method: method.into(), data: Some(prost_types::Any { type_url: String::new(), value: b"p".to_vec() }), ..Default::default() });
        req.metadata_mut().insert("dapr-app-id", "tls-grpcs-app".parse().unwrap());
        let resp = app.on_invoke(req).await.unwrap_or_else(|e| panic!("{method}: {e:?}")).into_inner();
        assert_eq!(resp.data.unwrap().value, format!("grpcs:{method}:p").into_bytes());
        let mut req = tonic::Request::new(InvokeRequest { method: "fail".into(), ..Default::default() });
        req.metadata_mut().insert("dapr-app-id", "tls-grpcs-app".parse().unwrap());
        let err = app.on_invoke(req).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (tonic::Code::PermissionDenied, "no entry"), "the app's status passes through");
    }

    // The gRPC health probe goes over TLS too.
    healthy.store(false, Ordering::SeqCst);
    eventually(Duration::from_secs(15), "the grpcs app to turn unhealthy", || async {
        let r = target.client.post(target.url("/v1.0/invoke/tls-grpcs-app/method/hello")).send().await.ok()?;
        (r.status() == 500).then_some(())
    })
    .await;
}

fn endpoint_yaml(name: &str, base: &str, client_tls: &str) -> String {
    format!("apiVersion: dapr.io/v1alpha1\nkind: HTTPEndpoint\nmetadata:\n  name: {name}\nspec:\n  baseUrl: {base}\n  headers:\n  - name: x-api-key\n    value: k-{name}\n{client_tls}")
}

/// A `clientTLS:` block (indented for `spec`) with the given PEM documents.
fn client_tls(fields: &[(&str, &str)]) -> String {
    let mut out = String::from("  clientTLS:\n");
    for (field, pem) in fields {
        out.push_str(&format!("    {field}:\n      value: |\n"));
        for line in pem.lines() {
            out.push_str(&format!("        {line}\n"));
        }
    }
    out
}

fn assert_invoke_failed(status: u16, body: &Value, id: &str, needle: &str) {
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["errorCode"], "ERR_DIRECT_INVOKE", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.starts_with(&format!("failed to invoke, id: {id}, err: ")), "{body}");
    assert!(message.contains(needle), "{needle:?} not in {body}");
}

#[tokio::test]
async fn https_http_endpoints_trust_their_root_ca_and_nothing_else() {
    let ca = Ca::new();
    let port = serve_tls(echo_router(), server_config(&ca.server(), None)).await;
    let base = format!("https://127.0.0.1:{port}/api");
    let mut renegotiating = client_tls(&[("rootCA", &ca.pem())]);
    renegotiating.push_str("    renegotiation: OnceAsClient\n");
    let sc = SidecarBuilder::new("tls-ext-caller")
        .file("trusted.yaml", &endpoint_yaml("trusted", &base, &client_tls(&[("rootCA", &ca.pem())])))
        .file("untrusted.yaml", &endpoint_yaml("untrusted", &base, ""))
        .file("other-ca.yaml", &endpoint_yaml("other-ca", &base, &client_tls(&[("rootCA", &Ca::new().pem())])))
        .file("renegotiating.yaml", &endpoint_yaml("renegotiating", &base, &renegotiating))
        .file("bad-pem.yaml", &endpoint_yaml("bad-pem", &base, &client_tls(&[("rootCA", "not a certificate")])))
        .file("key-only.yaml", &endpoint_yaml("key-only", &base, &client_tls(&[("privateKey", &ca.client().key_pem)])))
        .allow_unhealthy()
        .start()
        .await;

    let (status, seen) = post(&sc, "/v1.0/invoke/trusted/method/invoices/7?paid=1").await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["path"], "/api/invoices/7");
    assert_eq!(seen["query"], "paid=1");
    assert_eq!(seen["body"], "ping");
    assert_eq!(seen["headers"]["x-api-key"], "k-trusted");
    assert_eq!(seen["headers"]["dapr-caller-app-id"], "tls-ext-caller");
    assert_eq!(seen["version"], "HTTP/2.0", "h2 is offered through ALPN, as Go's transport does");
    // Renegotiation is accepted (and never done).
    assert_eq!(post(&sc, "/v1.0/invoke/renegotiating/method/x").await.0, 200);

    // Without rootCA the system's roots apply, and they do not know this CA; nor does another CA.
    let (status, body) = post(&sc, "/v1.0/invoke/untrusted/method/x").await;
    assert_invoke_failed(status, &body, "untrusted", "certificate");
    let (status, body) = post(&sc, "/v1.0/invoke/other-ca/method/x").await;
    assert_invoke_failed(status, &body, "other-ca", "certificate");
    // A full https:// URL as the app id is verified against the system's roots too.
    let url = format!("/v1.0/invoke/https%3A%2F%2F127.0.0.1%3A{port}/method/direct");
    let (status, body) = post(&sc, &url).await;
    assert_invoke_failed(status, &body, &format!("https://127.0.0.1:{port}"), "certificate");

    // Broken clientTLS is a resource error at load, naming the endpoint and the field.
    let m: Value = sc.client.get(sc.url("/v1.0/metadata")).send().await.unwrap().json().await.unwrap();
    let bad = m["extended"]["rapr.component.bad-pem"].as_str().unwrap_or_default();
    assert!(bad.contains("clientTLS.rootCA"), "{m}");
    let key_only = m["extended"]["rapr.component.key-only"].as_str().unwrap_or_default();
    assert!(key_only.contains("clientTLS.privateKey is set without clientTLS.certificate"), "{m}");
    let mut names: Vec<String> = m["httpEndpoints"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect();
    names.sort();
    assert_eq!(names, ["other-ca", "renegotiating", "trusted", "untrusted"], "{m}");
}

#[tokio::test]
async fn mutual_tls_http_endpoint_presents_its_client_certificate() {
    let ca = Ca::new();
    let port = serve_tls(echo_router(), server_config(&ca.server(), Some(&ca))).await;
    let base = format!("https://127.0.0.1:{port}");
    let client = ca.client();
    let stranger = Ca::new().client();
    let with_cert = client_tls(&[("rootCA", &ca.pem()), ("certificate", &client.cert_pem), ("privateKey", &client.key_pem)]);
    let foreign_cert = client_tls(&[("rootCA", &ca.pem()), ("certificate", &stranger.cert_pem), ("privateKey", &stranger.key_pem)]);
    let mismatched = client_tls(&[("rootCA", &ca.pem()), ("certificate", &client.cert_pem), ("privateKey", &stranger.key_pem)]);
    let sc = SidecarBuilder::new("tls-mtls-caller")
        .file("with-cert.yaml", &endpoint_yaml("with-cert", &base, &with_cert))
        .file("without-cert.yaml", &endpoint_yaml("without-cert", &base, &client_tls(&[("rootCA", &ca.pem())])))
        .file("foreign-cert.yaml", &endpoint_yaml("foreign-cert", &base, &foreign_cert))
        .file("mismatched.yaml", &endpoint_yaml("mismatched", &base, &mismatched))
        .allow_unhealthy()
        .start()
        .await;

    let (status, seen) = post(&sc, "/v1.0/invoke/with-cert/method/secure").await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["path"], "/secure");
    assert_eq!(seen["headers"]["x-api-key"], "k-with-cert");

    // The server refuses a client with no certificate, or one from a CA it does not trust.
    let (status, body) = post(&sc, "/v1.0/invoke/without-cert/method/secure").await;
    assert_invoke_failed(status, &body, "without-cert", "error invoking");
    let (status, body) = post(&sc, "/v1.0/invoke/foreign-cert/method/secure").await;
    assert_invoke_failed(status, &body, "foreign-cert", "error invoking");

    // A key that does not belong to the certificate is caught at load.
    let m: Value = sc.client.get(sc.url("/v1.0/metadata")).send().await.unwrap().json().await.unwrap();
    let bad = m["extended"]["rapr.component.mismatched"].as_str().unwrap_or_default();
    assert!(bad.contains("spec.clientTLS"), "{m}");
}
