//! Calls to services outside the mesh: an `HTTPEndpoint` by name, or a full `http://` or
//! `https://` URL used as the app id. The body streams through; the endpoint's headers are added
//! to every call.
//!
//! Clients: one plain client for every `http://` target; one TLS client verified against the
//! system's roots for `https://` targets without `clientTLS`, built on the first such call (reading
//! the system's CA certificates is not free, and most sidecars never make one); and one per
//! endpoint with `clientTLS`, built at start, as daprd builds a channel per endpoint.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::body::Body;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::BodyExt;

use super::message::CallMeta;
use super::tls::{Alpn, HttpClient};
use super::InvokeError;
use crate::config::http_endpoint::HttpEndpointSpec;

/// The client for external endpoints.
pub struct ExternalCaller {
    http: HttpClient,
    system_tls: OnceLock<Result<HttpClient, String>>,
    /// Endpoints with `clientTLS`, by name: their client, or why it could not be built.
    endpoint_tls: HashMap<String, Result<HttpClient, String>>,
}

impl Default for ExternalCaller {
    fn default() -> Self {
        Self { http: HttpClient::plain(false), system_tls: OnceLock::new(), endpoint_tls: HashMap::new() }
    }
}

impl ExternalCaller {
    /// A caller with a TLS client for each of `endpoints` that sets `clientTLS`.
    pub fn new(endpoints: &[HttpEndpointSpec]) -> Self {
        let endpoint_tls = endpoints
            .iter()
            .filter_map(|e| Some((e, e.client_tls.as_ref()?)))
            .map(|(e, tls)| {
                let client = super::tls::endpoint_config(tls, super::tls::system_roots).map(|c| HttpClient::tls(c, Alpn::Any)).map_err(|err| {
                    tracing::error!(http_endpoint = %e.name, error = %err, "http endpoint TLS configuration failed; its calls will fail");
                    format!("http endpoint {}: {err}", e.name)
                });
                (e.name.clone(), client)
            })
            .collect();
        Self { endpoint_tls, ..Self::default() }
    }

    fn client(&self, endpoint: Option<&str>, base: &str) -> Result<&HttpClient, InvokeError> {
        if !base.starts_with("https://") {
            return Ok(&self.http);
        }
        let chosen = match endpoint.and_then(|name| self.endpoint_tls.get(name)) {
            Some(c) => c,
            None => self.system_tls.get_or_init(|| super::tls::system_config().map(|c| HttpClient::tls(c, Alpn::Any)).map_err(|e| e.to_string())),
        };
        chosen.as_ref().map_err(|e| InvokeError::Unreachable(e.clone()))
    }

    /// Calls `meta.method` under `base` (a URL without trailing `/`), adding `extra` headers.
    /// `endpoint` names the `HTTPEndpoint` the call is for (none for a full URL).
    pub async fn call(&self, endpoint: Option<&str>, base: &str, extra: &[(String, String)], meta: &CallMeta, body: Body) -> Result<Response<Body>, InvokeError> {
        let client = self.client(endpoint, base)?;
        let uri = format!("{}{}", base.trim_end_matches('/'), meta.path_and_query());
        let mut req = Request::builder().method(meta.verb.clone()).uri(&uri).body(body).map_err(|e| InvokeError::InvalidRequest(format!("{uri}: {e}")))?;
        *req.headers_mut() = meta.app_headers();
        for (k, v) in extra {
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                req.headers_mut().insert(name, value);
            }
        }
        let resp = client.request(req).await.map_err(|e| InvokeError::Unreachable(format!("error invoking {base}: {}", super::tls::error_chain(&e))))?;
        let (parts, incoming) = resp.into_parts();
        Ok(Response::from_parts(parts, Body::new(incoming.map_err(axum::Error::new))))
    }

    /// The endpoint named `id`, if any.
    pub fn find<'a>(endpoints: &'a [HttpEndpointSpec], id: &str) -> Option<&'a HttpEndpointSpec> {
        endpoints.iter().find(|e| e.name == id)
    }
}
