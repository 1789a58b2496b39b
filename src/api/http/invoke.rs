//! HTTP adapter of service invocation: `/v1.0/invoke/{appId}/method/{method...}` on every verb,
//! and the fallback for any other path carrying `dapr-app-id` (header, or basic auth user
//! `dapr-app-id` with the id as password), as daprd routes them.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use base64::Engine;
use http_body_util::{BodyExt, Limited};

use super::HttpState;
use crate::api::errors::invoke::invoke_error;
use crate::api::invoke::InvokeApiError;
use crate::invoke::InvokeError;

/// How much of a refused body is read before answering.
const DRAIN_LIMIT: usize = 64 << 20;

/// The invoke route.
pub fn routes() -> Router<HttpState> {
    Router::new().route("/v1.0/invoke/{*rest}", any(invoke_route))
}

/// `<appId>/method/<method>` of the decoded path: the id is everything before the first
/// `/method/` (so a full URL works as an id), the method everything after, `path.Clean`ed as
/// daprd does.
fn split_target(rest: &str) -> Option<(String, String)> {
    let (id, method) = rest.split_once("/method/")?;
    let method = crate::invoke::method::clean(method);
    Some((id.to_string(), if method == "." { String::new() } else { method }))
}

/// The request path percent-decoded, as Go's `URL.Path` (daprd reads the decoded path).
fn decoded_path(req: &Request) -> String {
    percent_encoding::percent_decode_str(req.uri().path()).decode_utf8_lossy().into_owned()
}

async fn invoke_route(State(s): State<HttpState>, req: Request) -> Response {
    let path = decoded_path(&req);
    let rest = path.trim_start_matches("/v1.0/invoke/");
    match split_target(rest) {
        // Boxed: the invocation's future is several KB, and each tower layer above the handler
        // moves the handler's future into its own box (measured: 8 copies per call, 14% of the
        // caller sidecar's instructions); boxed here, they move a pointer.
        Some((id, method)) => Box::pin(invoke(&s, &id, method, req)).await,
        None => invoke_error(InvokeApiError::NoAppId).into_response(),
    }
}

/// The app id a fallback request names, from `dapr-app-id` or basic auth `dapr-app-id:<id>`.
pub fn fallback_app_id(req: &Request) -> Option<String> {
    if let Some(id) = req.headers().get("dapr-app-id").and_then(|v| v.to_str().ok()) {
        return Some(id.to_string());
    }
    let auth = req.headers().get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = auth.strip_prefix("Basic ").or_else(|| auth.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let (user, id) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    user.eq_ignore_ascii_case("dapr-app-id").then(|| id.to_string())
}

/// Router fallback: an invocation when the request names an app, else daprd's 404.
pub async fn fallback(State(s): State<HttpState>, mut req: Request) -> Response {
    match fallback_app_id(&req) {
        Some(id) => {
            let method = crate::invoke::method::clean(&decoded_path(&req)).trim_start_matches('/').to_string();
            if req.headers().get("dapr-app-id").is_none() {
                req.headers_mut().remove(http::header::AUTHORIZATION);
            }
            Box::pin(invoke(&s, &id, method, req)).await
        }
        None => invoke_error(InvokeApiError::NoAppId).into_response(),
    }
}

async fn invoke(s: &HttpState, id: &str, method: String, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let too_large = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > s.max_body);
    if too_large {
        // Read (and drop) what the client is sending, so it gets the answer instead of a reset
        // connection; give up past a bound.
        let mut stream = body.into_data_stream();
        let mut seen = 0usize;
        while let Some(Ok(chunk)) = futures::StreamExt::next(&mut stream).await {
            seen += chunk.len();
            if seen > DRAIN_LIMIT {
                break;
            }
        }
        // daprd has no 413: its limit reader fails the call with `stream too large`.
        return invoke_error(InvokeApiError::Failed { target: id.to_string(), source: InvokeError::TooLarge }).into_response();
    }
    let body = Body::new(Limited::new(body, s.max_body).map_err(axum::Error::new));
    match s.invoke.invoke_http(id, method, parts.method, parts.uri.query(), &parts.headers, body).await {
        Ok(resp) => resp,
        Err(e) => invoke_error(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(split_target("orders/method/a/b"), Some(("orders".into(), "a/b".into())));
        assert_eq!(split_target("orders/method/a/../b/"), Some(("orders".into(), "b".into())));
        assert_eq!(split_target("orders/method/"), Some(("orders".into(), String::new())));
        assert_eq!(split_target("http://ex.com/method/x"), Some(("http://ex.com".into(), "x".into())));
        assert_eq!(split_target("orders"), None);
    }

    #[test]
    fn basic_auth_form() {
        let token = base64::engine::general_purpose::STANDARD.encode("dapr-app-id:orders");
        let req = Request::builder().uri("/x").header("authorization", format!("Basic {token}")).body(Body::empty()).unwrap();
        assert_eq!(fallback_app_id(&req).as_deref(), Some("orders"));
    }
}
