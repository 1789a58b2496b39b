//! Calls to services outside the mesh: an `HTTPEndpoint` by name, or a full `http://` URL used
//! as the app id. The body streams through; the endpoint's headers are added to every call.

use axum::body::Body;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use super::message::CallMeta;
use super::InvokeError;
use crate::config::http_endpoint::HttpEndpointSpec;

/// The client for external endpoints.
pub struct ExternalCaller {
    http: Client<HttpConnector, Body>,
}

impl Default for ExternalCaller {
    fn default() -> Self {
        Self { http: Client::builder(TokioExecutor::new()).build(HttpConnector::new()) }
    }
}

impl ExternalCaller {
    /// Calls `meta.method` under `base` (a URL without trailing `/`), adding `extra` headers.
    pub async fn call(&self, base: &str, extra: &[(String, String)], meta: &CallMeta, body: Body) -> Result<Response<Body>, InvokeError> {
        if base.starts_with("https://") {
            return Err(InvokeError::InvalidRequest(format!("{base}: https endpoints are not supported by rapr yet")));
        }
        let uri = format!("{}{}", base.trim_end_matches('/'), meta.path_and_query());
        let mut req = Request::builder().method(meta.verb.clone()).uri(&uri).body(body).map_err(|e| InvokeError::InvalidRequest(format!("{uri}: {e}")))?;
        *req.headers_mut() = meta.app_headers();
        for (k, v) in extra {
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                req.headers_mut().insert(name, value);
            }
        }
        let resp = self.http.request(req).await.map_err(|e| InvokeError::Unreachable(format!("error invoking {base}: {e}")))?;
        let (parts, incoming) = resp.into_parts();
        Ok(Response::from_parts(parts, Body::new(incoming.map_err(axum::Error::new))))
    }

    /// The endpoint named `id`, if any.
    pub fn find<'a>(endpoints: &'a [HttpEndpointSpec], id: &str) -> Option<&'a HttpEndpointSpec> {
        endpoints.iter().find(|e| e.name == id)
    }
}
