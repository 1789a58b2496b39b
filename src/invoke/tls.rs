//! TLS for the sidecar's outbound HTTP and gRPC clients: to its own app (`--app-protocol https`
//! and `grpcs`) and to external services (`HTTPEndpoint` with an `https://` base URL, `clientTLS`,
//! or a full `https://` URL as the app id).
//!
//! Two trust models, as daprd has them:
//! - **The app**: the sidecar does not check the app's certificate at all (daprd dials its app
//!   with `InsecureSkipVerify`): the app is on the same host or pod, TLS there is for apps that only
//!   listen with TLS, not for authenticating them. The handshake's signatures are still checked, so
//!   the session is the one the app's key signed.
//! - **External services**: verified. `clientTLS.rootCA` replaces the trusted roots (daprd builds a
//!   fresh pool from it); without it the system's roots are used. `certificate` + `privateKey` are
//!   the client identity for servers that require mutual TLS.
//!
//! Every config uses the ring provider explicitly, so nothing depends on a process-wide default
//! provider being installed first. The plain-TCP client is a separate variant of [`HttpClient`]:
//! with TLS off, a call costs one enum match more than before and no TLS code runs.

use std::sync::Arc;

use axum::body::Body;
use http::Request;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{connect::HttpConnector, Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::http_endpoint::ClientTlsSpec;

/// Why a TLS client could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM document did not parse.
    #[error("{field}: {reason}")]
    Pem { field: &'static str, reason: String },
    /// rustls refused the configuration (e.g. a private key that does not match the certificate).
    #[error("invalid TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// `clientTLS.privateKey` without `clientTLS.certificate`.
    #[error("clientTLS.privateKey is set without clientTLS.certificate")]
    KeyWithoutCertificate,
}

/// Which protocols a TLS client offers through ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// HTTP/1.1 only: daprd's app channel over https (Go disables HTTP/2 on a transport with its
    /// own TLS settings).
    Http1,
    /// HTTP/2 only: gRPC.
    H2,
    /// Both, the server chooses: external services (Go's default transport).
    Any,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, TlsError> {
    // TLS 1.2 and 1.3: daprd's minimum for app channels is TLS 1.2.
    Ok(ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?)
}

/// The config for the sidecar's own app: any certificate is accepted (see the module header).
pub fn app_config() -> Result<ClientConfig, TlsError> {
    let algorithms = provider().signature_verification_algorithms;
    Ok(builder()?.dangerous().with_custom_certificate_verifier(Arc::new(AnyAppCertificate { algorithms })).with_no_client_auth())
}

/// The config for an external service verified against the system's roots, no client identity.
pub fn system_config() -> Result<ClientConfig, TlsError> {
    endpoint_config(&ClientTlsSpec::default(), system_roots)
}

/// The config for an `HTTPEndpoint`'s `clientTLS`. `fallback_roots` gives the trusted roots when
/// `rootCA` is not set (the system's at run time; an empty store when only checking the PEM).
pub fn endpoint_config(tls: &ClientTlsSpec, fallback_roots: impl FnOnce() -> RootCertStore) -> Result<ClientConfig, TlsError> {
    let roots = match &tls.root_ca {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(certificates("clientTLS.rootCA", pem)?);
            if added == 0 {
                return Err(TlsError::Pem { field: "clientTLS.rootCA", reason: "no usable CA certificate in the PEM".into() });
            }
            roots
        }
        None => fallback_roots(),
    };
    let builder = builder()?.with_root_certificates(roots);
    match (&tls.certificate, &tls.private_key) {
        (Some(cert), Some(key)) => Ok(builder.with_client_auth_cert(certificates("clientTLS.certificate", cert)?, private_key(key)?)?),
        (None, Some(_)) => Err(TlsError::KeyWithoutCertificate),
        // daprd loads a client identity only when the private key is set.
        (_, None) => Ok(builder.with_no_client_auth()),
    }
}

/// The system's trusted roots (as Go's `SystemCertPool`); empty, so every verification fails,
/// when none can be read. Read from disk on each call: callers build their clients once.
pub fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "reading the system CA certificates");
    }
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!("no system CA certificates found; https calls to external services will fail verification");
    }
    roots
}

fn certificates(field: &'static str, pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|e| TlsError::Pem { field, reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { field, reason: "no CERTIFICATE block in the PEM".into() });
    }
    Ok(certs)
}

fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsError::Pem { field: "clientTLS.privateKey", reason: e.to_string() })
}

/// Accepts the app's certificate whatever it is (daprd's `InsecureSkipVerify` for app channels),
/// but still checks that the handshake was signed by the key of the certificate presented.
#[derive(Debug)]
struct AnyAppCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyAppCertificate {
    fn verify_server_cert(&self, _: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS connector (TLS only: an `http://` URI is refused) offering `alpn`.
pub fn connector(config: ClientConfig, alpn: Alpn) -> HttpsConnector<HttpConnector> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    let b = HttpsConnectorBuilder::new().with_tls_config(config).https_only();
    match alpn {
        Alpn::Http1 => b.enable_http1().wrap_connector(tcp),
        Alpn::H2 => b.enable_http2().wrap_connector(tcp),
        Alpn::Any => b.enable_http1().enable_http2().wrap_connector(tcp),
    }
}

/// A hyper client over plain TCP or TLS. One variant per transport keeps the plain path free of
/// any TLS work.
#[derive(Clone)]
pub enum HttpClient {
    /// `http://`.
    Plain(Client<HttpConnector, Body>),
    /// `https://`.
    Tls(Client<HttpsConnector<HttpConnector>, Body>),
}

impl HttpClient {
    /// A plain client; `h2c` speaks HTTP/2 with prior knowledge.
    pub fn plain(h2c: bool) -> Self {
        let mut builder = Client::builder(TokioExecutor::new());
        builder.http2_only(h2c);
        // Without TCP_NODELAY a request written in two segments (head, then body) waits for the
        // peer's delayed ACK before its second part leaves.
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        HttpClient::Plain(builder.build(tcp))
    }

    /// A TLS client with `config`, offering `alpn`.
    pub fn tls(config: ClientConfig, alpn: Alpn) -> Self {
        let mut builder = Client::builder(TokioExecutor::new());
        builder.http2_only(alpn == Alpn::H2);
        HttpClient::Tls(builder.build(connector(config, alpn)))
    }

    /// The URL scheme this client speaks.
    pub fn scheme(&self) -> &'static str {
        match self {
            HttpClient::Plain(_) => "http",
            HttpClient::Tls(_) => "https",
        }
    }

    /// Sends `req`.
    pub fn request(&self, req: Request<Body>) -> ResponseFuture {
        match self {
            HttpClient::Plain(c) => c.request(req),
            HttpClient::Tls(c) => c.request(req),
        }
    }
}

/// An error with its causes (`client error (Connect): invalid peer certificate: UnknownIssuer`):
/// hyper's own text names only the stage that failed.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}
