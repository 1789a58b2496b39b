//! HTTP metrics: daprd's `http/server/*` views for the HTTP API (a middleware) and
//! `http/client/*` for the sidecar's calls to an HTTP app. Labels are low-cardinality by default:
//! the `path` label exists only with `spec.metric.http.increasedCardinality: true`, and even then
//! is normalised so no state or secret key, actor id or workflow instance id becomes a label.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::{ms, Metrics};

impl Metrics {
    /// The `path` label of an HTTP metric: none unless increased cardinality is on.
    fn http_path(&self, path: &str) -> Option<String> {
        self.0.increased_cardinality.then(|| normalize_path(path))
    }

    /// A call to the app over HTTP finished (status, or `Err` for a transport failure).
    pub fn app_http_call(&self, method: &str, path: &str, status: Option<u16>, started: Instant) {
        if !self.0.enabled {
            return;
        }
        let status = status.map(|s| s.to_string()).unwrap_or_else(|| "-1".into());
        let mut l = self.labels(&[("method", method), ("status", &status)]);
        if let Some(p) = self.http_path(path) {
            l.push(("path", p));
        }
        self.0.f.http_client_completed_count.get_or_create(&l).0.inc();
        self.0.f.http_client_roundtrip_latency.get_or_create(&l).observe(ms(started));
    }
}

fn content_length(h: &http::HeaderMap) -> Option<f64> {
    h.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse::<f64>().ok()
}

/// daprd's path normalisation for increased cardinality: keys of state and secrets, actor ids
/// and workflow instance ids are dropped or replaced with a placeholder.
pub fn normalize_path(path: &str) -> String {
    let p = path.strip_prefix('/').unwrap_or(path);
    let mut parts: Vec<&str> = p.splitn(6, '/').collect();
    if parts.len() < 3 {
        return path.to_string();
    }
    if parts[0] == "actors" {
        parts[2] = "{id}";
        return parts.join("/");
    }
    match parts[1] {
        "state" | "secrets" => format!("/{}", parts[..3].join("/")),
        "actors" if parts.len() >= 5 => {
            parts[3] = "{id}";
            format!("/{}", parts[..5].join("/"))
        }
        "workflows" if parts.len() >= 4 => {
            parts[3] = "{instanceId}";
            format!("/{}", parts[..parts.len().min(5)].join("/"))
        }
        _ => path.to_string(),
    }
}

/// HTTP API middleware: daprd's `http/server/*` views.
pub async fn http_server(State(m): State<Metrics>, req: Request, next: Next) -> Response {
    if !m.0.enabled {
        return next.run(req).await;
    }
    let method = req.method().as_str().to_string();
    let path = m.http_path(req.uri().path());
    let mut l = m.labels(&[("method", &method)]);
    if let Some(p) = &path {
        l.push(("path", p.clone()));
    }
    m.0.f.http_server_request_count.get_or_create(&l).0.inc();
    let app = m.labels(&[]);
    m.0.f.http_server_request_bytes.get_or_create(&app).observe(content_length(req.headers()).unwrap_or(0.0));
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    l.push(("status", status));
    m.0.f.http_server_latency.get_or_create(&l).observe(ms(started));
    m.0.f.http_server_response_count.get_or_create(&l).0.inc();
    let size = content_length(resp.headers()).or_else(|| axum::body::HttpBody::size_hint(resp.body()).exact().map(|n| n as f64));
    m.0.f.http_server_response_bytes.get_or_create(&app).observe(size.unwrap_or(0.0));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_never_carry_keys() {
        assert_eq!(normalize_path("/v1.0/state/store/secret-key"), "/v1.0/state/store");
        assert_eq!(normalize_path("/v1.0/secrets/vault/name"), "/v1.0/secrets/vault");
        assert_eq!(normalize_path("/v1.0/actors/T/42/method/m"), "/v1.0/actors/T/{id}/method");
        assert_eq!(normalize_path("/v1.0/healthz"), "/v1.0/healthz");
    }
}
