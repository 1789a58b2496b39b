//! How a server span is kinded, named and tagged, following daprd's tracing middleware
//! (`pkg/diagnostics/http_tracing.go`, `grpc_tracing.go`): what a Zipkin or OTLP backend shows for
//! a rapr sidecar is what it shows for daprd.
//!
//! - Kind: a call to the Dapr API (HTTP, or gRPC `dapr.proto.runtime.*`) is a CLIENT span (the app
//!   is the client of a remote-ish operation); a call from another sidecar
//!   (`dapr.proto.internals.*`) or a workflow call is a SERVER span; a proxied gRPC call is SERVER
//!   on the target's sidecar and CLIENT on the caller's.
//! - Name: the path (HTTP) or full method (gRPC), renamed to `CallLocal/<app>/<method>` for service
//!   invocation: on the caller's sidecar `<app>` is the target, on the target's sidecar its own id.
//!   The HTTP name comes from the path; a gRPC name needs the request message, so the handler
//!   reports it through [`SpanDetails`].
//! - Attributes (only on sampled spans): `dapr.protocol`, `dapr.api`, HTTP's `dapr.status_code`,
//!   `http.request.method`, `url.full`, the building block's `db.*` / `rpc.service` /
//!   `net.peer.name`, and every `dapr-` request header (users add them to see them in traces).
//! - Status: HTTP status 400 and above is an error `Code(<n>): <reason>`; a gRPC status other than
//!   OK is an error with its message.

use std::sync::{Arc, OnceLock};

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::KeyValue;

const INTERNAL_PREFIX: &str = "/dapr.proto.internals.";
const RUNTIME_PREFIX: &str = "/dapr.proto.runtime.";
const WORKFLOW_PREFIX: &str = "/TaskHubSidecarService";

/// What only a handler knows about its call (the invoked method or the store inside a gRPC
/// message), handed to the tracing middleware through the request's extensions. Set at most once
/// per request.
#[derive(Clone, Debug, Default)]
pub struct SpanDetails(Arc<OnceLock<Invocation>>);

/// A call seen by a gRPC handler, as daprd's span attributes describe it.
#[derive(Clone, Debug)]
pub enum Invocation {
    /// This sidecar delivers `method` to its own app (internal `CallLocal` / `CallLocalStream`).
    Local { method: String },
    /// The app asks this sidecar to invoke `method` on `app_id` (gRPC `InvokeService`).
    Remote { app_id: String, method: String },
    /// A call on the component `store` of building block `system` (`state`, `secrets`): daprd
    /// tags `GetState`, `SaveState`, `DeleteState` and `GetSecret` so.
    Store { system: &'static str, store: String },
    /// A publish to `topic` (`PublishEvent`, `BulkPublishEvent`): daprd tags the topic.
    Publish { topic: String },
}

impl SpanDetails {
    /// Records the call this request carries (a second call is ignored).
    pub fn invocation(&self, call: Invocation) {
        let _ = self.0.set(call);
    }

    /// The span's new name (invocations) and attributes of the recorded call, if any;
    /// `own_app_id` names local deliveries, `path` is the gRPC method.
    fn renamed(&self, own_app_id: &str, path: &str) -> Option<(Option<String>, Vec<KeyValue>)> {
        Some(match self.0.get()? {
            Invocation::Local { method } => (
                Some(format!("CallLocal/{own_app_id}/{method}")),
                vec![KeyValue::new("rpc.service", "ServiceInvocation"), KeyValue::new("dapr.invoke_method", method.clone())],
            ),
            Invocation::Remote { app_id, method } => (
                Some(format!("CallLocal/{app_id}/{method}")),
                vec![KeyValue::new("rpc.service", "ServiceInvocation"), KeyValue::new("net.peer.name", app_id.clone())],
            ),
            Invocation::Publish { topic } => (None, publish_attributes(Some("Dapr"), topic)),
            Invocation::Store { system, store } => (
                None,
                vec![
                    KeyValue::new("db.name", store.clone()),
                    KeyValue::new("rpc.service", "Dapr"),
                    KeyValue::new("db.system", *system),
                    KeyValue::new("db.statement", path.to_string()),
                    KeyValue::new("db.connection_string", *system),
                ],
            ),
        })
    }
}

/// Records on a gRPC request (when traced) the store its call is on.
pub fn note_store<T>(r: &tonic::Request<T>, system: &'static str, store: &str) {
    if let Some(d) = r.extensions().get::<SpanDetails>() {
        d.invocation(Invocation::Store { system, store: store.to_string() });
    }
}

/// Records on a gRPC request (when traced) the topic it publishes to.
pub fn note_publish<T>(r: &tonic::Request<T>, topic: &str) {
    if let Some(d) = r.extensions().get::<SpanDetails>() {
        d.invocation(Invocation::Publish { topic: topic.to_string() });
    }
}

/// daprd's publish attributes: `messaging.system` and `messaging.destination.name`, plus
/// `rpc.service` over gRPC.
fn publish_attributes(rpc_service: Option<&'static str>, topic: &str) -> Vec<KeyValue> {
    let mut out: Vec<KeyValue> = rpc_service.map(|s| KeyValue::new("rpc.service", s)).into_iter().collect();
    out.push(KeyValue::new("messaging.system", "pubsub"));
    out.push(KeyValue::new("messaging.destination.name", topic.to_string()));
    out
}

/// Whether the HTTP middleware leaves this path untraced (daprd skips health probes).
pub fn untraced_http(path: &str) -> bool {
    path.contains("/healthz")
}

/// The kind of a server span. `callee` is the `dapr-callee-app-id` (else `dapr-app-id`) metadata
/// of a proxied gRPC call.
pub fn kind(grpc: bool, path: &str, callee: Option<&str>, own_app_id: &str) -> SpanKind {
    if !grpc || path.starts_with(RUNTIME_PREFIX) {
        SpanKind::Client
    } else if path.starts_with(INTERNAL_PREFIX) || path.starts_with(WORKFLOW_PREFIX) || callee == Some(own_app_id) {
        SpanKind::Server
    } else {
        SpanKind::Client
    }
}

/// Whether a gRPC path is a proxied call (neither Dapr's API, nor internal, nor workflows).
pub fn proxied(path: &str) -> bool {
    !(path.starts_with(RUNTIME_PREFIX) || path.starts_with(INTERNAL_PREFIX) || path.starts_with(WORKFLOW_PREFIX))
}

/// The first name of a span: the HTTP path (renamed for invocation) or the gRPC method.
pub fn initial_name(grpc: bool, path: &str) -> String {
    if !grpc {
        if let Some((app_id, method)) = http_invocation(path) {
            return format!("CallLocal/{app_id}/{method}");
        }
    }
    path.to_string()
}

/// `(app id, method)` of `/v1.0/invoke/<app>/method/<method>`.
fn http_invocation(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v1.0/invoke/")?;
    let (app_id, rest) = rest.split_once('/')?;
    let method = rest.strip_prefix("method/")?;
    Some((app_id, method))
}

/// The TCP address of the connection a request came on (a request extension the accept loop
/// sets), Go's `Request.RemoteAddr`.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// The attributes daprd's HTTP middleware sets on a sampled span. `server.address` and
/// `server.port` are the caller's address, as daprd fills them from `RemoteAddr` (OpenTelemetry's
/// conventions mean the server's; daprd's words win).
pub fn http_attributes(method: &str, path: &str, path_and_query: &str, status: u16, headers: &http::HeaderMap, peer: Option<PeerAddr>) -> Vec<KeyValue> {
    let mut out = dapr_headers(headers, true);
    let api = format!("{method} {path}");
    if let Some((app_id, _)) = http_invocation(path) {
        out.push(KeyValue::new("rpc.service", "ServiceInvocation"));
        out.push(KeyValue::new("net.peer.name", app_id.to_string()));
    } else {
        let store = |prefix: &str| path.strip_prefix(prefix).map(|r| r.split('/').next().unwrap_or_default().to_string());
        let block = store("/v1.0/state/").map(|s| ("state", s)).or_else(|| store("/v1.0/secrets/").map(|s| ("secrets", s)));
        if let Some((block, store)) = block {
            out.push(KeyValue::new("db.system", block));
            out.push(KeyValue::new("db.connection_string", block));
            out.push(KeyValue::new("db.statement", api.clone()));
            out.push(KeyValue::new("db.name", store));
        } else if let Some(topic) = ["/v1.0/publish/bulk/", "/v1.0-alpha1/publish/bulk/", "/v1.0/publish/"].iter().find_map(|p| path.strip_prefix(p)).and_then(|r| r.split_once('/')).map(|(_, topic)| topic) {
            out.extend(publish_attributes(None, topic));
        }
    }
    out.push(KeyValue::new("dapr.protocol", "http"));
    out.push(KeyValue::new("dapr.api", api));
    out.push(KeyValue::new("dapr.status_code", status.to_string()));
    out.push(KeyValue::new("http.request.method", method.to_string()));
    out.push(KeyValue::new("url.full", path_and_query.to_string()));
    if let Some(PeerAddr(a)) = peer {
        out.push(KeyValue::new("server.address", a.ip().to_string()));
        out.push(KeyValue::new("server.port", a.port().to_string()));
    }
    out
}

/// The name (when a handler renamed it) and attributes daprd's gRPC interceptor sets on a
/// sampled span.
pub fn grpc_attributes(path: &str, headers: &http::HeaderMap, details: &SpanDetails, own_app_id: &str) -> (Option<String>, Vec<KeyValue>) {
    let mut out = dapr_headers(headers, false);
    if proxied(path) {
        return (None, out);
    }
    let name = details.renamed(own_app_id, path).and_then(|(name, attrs)| {
        out.extend(attrs);
        name
    });
    out.push(KeyValue::new("dapr.protocol", "grpc"));
    out.push(KeyValue::new("dapr.api", path.to_string()));
    (name, out)
}

/// `dapr-` request headers as attributes: the last value over HTTP, the first over gRPC, where
/// binary (`-bin`) headers are left out.
fn dapr_headers(headers: &http::HeaderMap, http: bool) -> Vec<KeyValue> {
    let mut out = Vec::new();
    for key in headers.keys() {
        let k = key.as_str();
        if !k.starts_with("dapr-") || (http && k.len() < "-bin".len() + 1) || (!http && k.ends_with("-bin")) {
            continue;
        }
        let value = if http { headers.get_all(key).iter().next_back() } else { headers.get(key) };
        if let Some(v) = value.and_then(|v| v.to_str().ok()) {
            out.push(KeyValue::new(k.to_string(), v.to_string()));
        }
    }
    out
}

/// daprd's span status for an HTTP answer.
pub fn http_status(code: http::StatusCode) -> Status {
    if code.as_u16() >= 400 {
        Status::error(format!("Code({}): {}", code.as_u16(), code.canonical_reason().unwrap_or("Unknown")))
    } else {
        Status::Unset
    }
}

/// daprd's span status for a gRPC answer's `grpc-status` / `grpc-message`.
pub fn grpc_status(code: Option<&str>, message: Option<&str>) -> Status {
    match code {
        Some(c) if c != "0" => Status::error(percent_encoding::percent_decode_str(message.unwrap_or_default()).decode_utf8_lossy().into_owned()),
        _ => Status::Unset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_as_daprd() {
        assert_eq!(kind(false, "/v1.0/state/s", None, "a"), SpanKind::Client);
        assert_eq!(kind(true, "/dapr.proto.runtime.v1.Dapr/GetState", None, "a"), SpanKind::Client);
        assert_eq!(kind(true, "/dapr.proto.internals.v1.ServiceInvocation/CallLocal", None, "a"), SpanKind::Server);
        assert_eq!(kind(true, "/my.Svc/Do", Some("a"), "a"), SpanKind::Server, "proxied, on the target's sidecar");
        assert_eq!(kind(true, "/my.Svc/Do", Some("b"), "a"), SpanKind::Client, "proxied, on the caller's sidecar");
    }

    #[test]
    fn names_invocations_as_daprd() {
        assert_eq!(initial_name(false, "/v1.0/invoke/b/method/orders/1"), "CallLocal/b/orders/1");
        assert_eq!(initial_name(false, "/v1.0/state/s"), "/v1.0/state/s");
        let d = SpanDetails::default();
        d.invocation(Invocation::Local { method: "m".into() });
        let (name, attrs) = grpc_attributes("/dapr.proto.internals.v1.ServiceInvocation/CallLocal", &http::HeaderMap::new(), &d, "me");
        assert_eq!(name.as_deref(), Some("CallLocal/me/m"));
        assert!(attrs.contains(&KeyValue::new("dapr.invoke_method", "m")));
        let d = SpanDetails::default();
        d.invocation(Invocation::Store { system: "state", store: "s".into() });
        let (name, attrs) = grpc_attributes("/dapr.proto.runtime.v1.Dapr/GetState", &http::HeaderMap::new(), &d, "me");
        assert_eq!(name, None, "the method stays the name");
        for kv in [("db.name", "s"), ("db.system", "state"), ("db.statement", "/dapr.proto.runtime.v1.Dapr/GetState"), ("rpc.service", "Dapr")] {
            assert!(attrs.contains(&KeyValue::new(kv.0, kv.1)), "{kv:?} in {attrs:?}");
        }
    }

    #[test]
    fn http_attributes_of_a_state_call() {
        let mut h = http::HeaderMap::new();
        h.append("dapr-x", "1".parse().unwrap());
        h.append("dapr-x", "2".parse().unwrap());
        let a = http_attributes("GET", "/v1.0/state/s/k", "/v1.0/state/s/k?x=1", 404, &h, Some(PeerAddr(([127, 0, 0, 1], 40123).into())));
        for kv in [("db.system", "state"), ("db.name", "s"), ("db.statement", "GET /v1.0/state/s/k"), ("dapr.status_code", "404"), ("url.full", "/v1.0/state/s/k?x=1"), ("dapr-x", "2"), ("server.address", "127.0.0.1"), ("server.port", "40123")] {
            assert!(a.contains(&KeyValue::new(kv.0, kv.1)), "{kv:?} in {a:?}");
        }
        let a = http_attributes("POST", "/v1.0/publish/ps/orders", "/v1.0/publish/ps/orders", 204, &http::HeaderMap::new(), None);
        assert!(a.contains(&KeyValue::new("messaging.destination.name", "orders")) && a.contains(&KeyValue::new("messaging.system", "pubsub")), "{a:?}");
        let d = SpanDetails::default();
        d.invocation(Invocation::Publish { topic: "orders".into() });
        let (_, a) = grpc_attributes("/dapr.proto.runtime.v1.Dapr/PublishEvent", &http::HeaderMap::new(), &d, "me");
        assert!(a.contains(&KeyValue::new("rpc.service", "Dapr")) && a.contains(&KeyValue::new("messaging.destination.name", "orders")), "{a:?}");
        assert_eq!(http_status(http::StatusCode::NOT_FOUND), Status::error("Code(404): Not Found"));
        assert_eq!(http_status(http::StatusCode::OK), Status::Unset);
        assert_eq!(grpc_status(Some("5"), Some("no%20such")), Status::error("no such"));
    }
}
