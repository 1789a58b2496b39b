//! `DAPR_API_TOKEN` on HTTP: every route but the two health endpoints needs the
//! `dapr-api-token` header. A failure is daprd's plain-text 401 `invalid api token`.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, Method, StatusCode};

use super::HttpState;

/// Paths served without a token, as in daprd.
const EXEMPT: &[&str] = &["/v1.0/healthz", "/v1.0/healthz/outbound"];

/// Checks the token when one is configured.
pub async fn require_token(State(s): State<HttpState>, mut req: Request, next: Next) -> Response {
    let Some(expected) = s.api_token.as_deref() else { return next.run(req).await };
    if req.method() == Method::GET && EXEMPT.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let ok = req.headers().get("dapr-api-token").is_some_and(|v| v.as_bytes() == expected.as_bytes());
    if !ok {
        let mut r = (StatusCode::UNAUTHORIZED, "invalid api token\n").into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        r.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
        return r;
    }
    req.headers_mut().remove("dapr-api-token");
    next.run(req).await
}
