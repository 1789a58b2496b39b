//! The transport-free description of an invocation (`CallMeta`) and its conversions: from an
//! HTTP request, to and from the internal protocol's metadata map, and to the app's HTTP request.
//!
//! Header rules follow daprd: hop-by-hop headers and the caller's own `dapr-api-token` and
//! `dapr-app-id` never travel; `dapr-caller-app-id` / `dapr-callee-app-id` are set by the
//! sidecars (never trusted from the caller); every value of a repeated header reaches the app, as
//! daprd adds each (`InternalMetadataToHTTPHeader` with `Header.Add`).

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use rapr_proto::common::v1 as common;
use rapr_proto::internals::v1 as internals;

/// Headers that never cross a hop.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Headers the caller's sidecar consumes or sets itself.
const SIDECAR_OWNED: &[&str] = &["dapr-api-token", "dapr-app-id", "dapr-caller-app-id", "dapr-callee-app-id", "destination-app-id"];

/// The internal protocol's metadata map (headers by name, every value).
pub type Metadata = BTreeMap<String, internals::ListStringValue>;

/// Header carrying the caller's app id to the target app.
pub const CALLER: &str = "dapr-caller-app-id";
/// Header carrying the target's app id to the target app.
pub const CALLEE: &str = "dapr-callee-app-id";

/// One invocation's method, verb, query, content type and headers.
#[derive(Debug, Clone, PartialEq)]
pub struct CallMeta {
    /// Method (the path on the app, without the leading `/`).
    pub method: String,
    /// HTTP verb.
    pub verb: Method,
    /// Raw query string, without `?`.
    pub query: String,
    /// Content type of the body.
    pub content_type: Option<String>,
    /// Headers, lowercase names, every value.
    pub headers: Vec<(String, String)>,
}

impl CallMeta {
    /// Builds the description from an incoming HTTP request's parts.
    pub fn from_http(method: String, verb: Method, query: Option<&str>, headers: &HeaderMap) -> Self {
        let mut out = Vec::new();
        let mut content_type = None;
        for (name, value) in headers {
            let n = name.as_str();
            let Ok(v) = value.to_str() else { continue };
            if n == "content-type" {
                content_type = Some(v.to_string());
                continue;
            }
            if HOP_BY_HOP.contains(&n) || SIDECAR_OWNED.contains(&n) {
                continue;
            }
            out.push((n.to_string(), v.to_string()));
        }
        Self { method, verb, query: query.unwrap_or_default().to_string(), content_type, headers: out }
    }

    /// Sets the caller and callee ids, replacing whatever the caller sent.
    pub fn stamp(&mut self, caller: &str, callee: &str) {
        self.headers.retain(|(k, _)| k != CALLER && k != CALLEE);
        self.headers.push((CALLER.to_string(), caller.to_string()));
        self.headers.push((CALLEE.to_string(), callee.to_string()));
    }

    /// The internal protocol's request (no body).
    pub fn to_internal(&self) -> internals::InternalInvokeRequest {
        let mut metadata = Metadata::new();
        for (k, v) in &self.headers {
            metadata.entry(k.clone()).or_default().values.push(v.clone());
        }
        internals::InternalInvokeRequest {
            ver: internals::ApiVersion::V1 as i32,
            metadata,
            message: Some(common::InvokeRequest {
                method: self.method.clone(),
                data: None,
                content_type: self.content_type.clone().unwrap_or_default(),
                http_extension: Some(common::HttpExtension { verb: verb_to_proto(&self.verb) as i32, querystring: self.query.clone() }),
            }),
        }
    }

    /// Back from the internal protocol's request.
    pub fn from_internal(req: &internals::InternalInvokeRequest) -> Self {
        let msg = req.message.clone().unwrap_or_default();
        let ext = msg.http_extension.unwrap_or_default();
        let mut headers: Vec<(String, String)> =
            req.metadata.iter().flat_map(|(k, v)| v.values.iter().map(move |x| (k.to_ascii_lowercase(), x.clone()))).collect();
        // By name only (a stable sort): a repeated header keeps its values' order.
        headers.sort_by(|a, b| a.0.cmp(&b.0));
        Self {
            method: msg.method,
            verb: verb_from_proto(ext.verb).unwrap_or(Method::POST),
            query: ext.querystring,
            content_type: (!msg.content_type.is_empty()).then_some(msg.content_type),
            headers,
        }
    }

    /// Headers for the app: every value of each, in the caller's order, plus content type.
    pub fn app_headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in &self.headers {
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                h.append(name, value);
            }
        }
        if let Some(ct) = self.content_type.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
            h.insert(http::header::CONTENT_TYPE, ct);
        }
        h
    }

    /// The path and query on the app (the method, decoded at the edge, encoded again).
    pub fn path_and_query(&self) -> String {
        let method = super::method::encode_for_path(self.method.trim_start_matches('/'));
        if self.query.is_empty() {
            format!("/{method}")
        } else {
            format!("/{method}?{}", self.query)
        }
    }
}

/// The gRPC metadata key for an HTTP header sent to a gRPC app: daprd prefixes HTTP's own
/// ("permanent") headers with `dapr-` so they cannot clash with HTTP/2's framing (a caller's
/// `content-length` would otherwise be taken as the length of the gRPC body).
pub fn grpc_metadata_key(name: &str) -> std::borrow::Cow<'_, str> {
    const PERMANENT: &[&str] = &[
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "cache-control", "content-type", "content-length", "cookie", "date",
        "expect", "from", "host", "max-forwards", "origin", "pragma", "referer", "via", "warning", "te",
    ];
    let n = name.to_ascii_lowercase();
    if PERMANENT.contains(&n.as_str()) || n.starts_with("accept") || n.starts_with("if-") || n.starts_with("grpc-") {
        return std::borrow::Cow::Owned(format!("dapr-{n}"));
    }
    std::borrow::Cow::Borrowed(name)
}

/// Response headers to pass back to the caller (hop-by-hop removed).
pub fn response_headers(headers: &HeaderMap) -> Metadata {
    let mut out = Metadata::new();
    for (name, value) in headers {
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        if let Ok(v) = value.to_str() {
            out.entry(name.as_str().to_string()).or_default().values.push(v.to_string());
        }
    }
    out
}

/// Rebuilds an HTTP header map from the internal protocol's map.
pub fn header_map(map: &Metadata) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, vs) in map {
        let Ok(name) = HeaderName::from_bytes(k.as_bytes()) else { continue };
        for v in &vs.values {
            if let Ok(value) = HeaderValue::from_str(v) {
                h.append(name.clone(), value);
            }
        }
    }
    h
}

/// HTTP verb to the proto enum (unknown verbs are POST, as daprd does).
pub fn verb_to_proto(m: &Method) -> common::http_extension::Verb {
    use common::http_extension::Verb;
    match *m {
        Method::GET => Verb::Get,
        Method::HEAD => Verb::Head,
        Method::POST => Verb::Post,
        Method::PUT => Verb::Put,
        Method::DELETE => Verb::Delete,
        Method::CONNECT => Verb::Connect,
        Method::OPTIONS => Verb::Options,
        Method::TRACE => Verb::Trace,
        Method::PATCH => Verb::Patch,
        _ => Verb::Post,
    }
}

/// The proto enum to an HTTP verb; `None` for NONE and CONNECT (invalid for apps).
pub fn verb_from_proto(v: i32) -> Option<Method> {
    use common::http_extension::Verb;
    match Verb::try_from(v).ok()? {
        Verb::Get => Some(Method::GET),
        Verb::Head => Some(Method::HEAD),
        Verb::Post => Some(Method::POST),
        Verb::Put => Some(Method::PUT),
        Verb::Delete => Some(Method::DELETE),
        Verb::Options => Some(Method::OPTIONS),
        Verb::Trace => Some(Method::TRACE),
        Verb::Patch => Some(Method::PATCH),
        Verb::None | Verb::Connect => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_hop_by_hop_and_sidecar_headers_and_round_trips() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive".parse().unwrap());
        h.insert("dapr-api-token", "secret".parse().unwrap());
        h.insert("x-custom", "1".parse().unwrap());
        h.append("x-multi", "b".parse().unwrap());
        h.append("x-multi", "a".parse().unwrap());
        h.insert("content-type", "text/plain".parse().unwrap());
        h.insert(CALLER, "spoofed".parse().unwrap());
        let mut m = CallMeta::from_http("orders/1".into(), Method::PUT, Some("a=1"), &h);
        m.stamp("me", "you");
        assert!(!m.headers.iter().any(|(k, _)| k == "connection" || k == "dapr-api-token"));
        let back = CallMeta::from_internal(&m.to_internal());
        assert_eq!(back.verb, Method::PUT);
        assert_eq!(back.path_and_query(), "/orders/1?a=1");
        let app = back.app_headers();
        let multi: Vec<_> = app.get_all("x-multi").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(multi, ["b", "a"], "every value reaches the app, in order");
        assert_eq!(app[CALLER], "me");
        assert_eq!(app[CALLEE], "you");
        assert_eq!(app["content-type"], "text/plain");
    }

    #[test]
    fn permanent_headers_are_prefixed_for_grpc() {
        assert_eq!(grpc_metadata_key("content-length"), "dapr-content-length");
        assert_eq!(grpc_metadata_key("accept-encoding"), "dapr-accept-encoding");
        assert_eq!(grpc_metadata_key("x-custom"), "x-custom");
    }

    #[test]
    fn verbs() {
        assert_eq!(verb_from_proto(verb_to_proto(&Method::PATCH) as i32), Some(Method::PATCH));
        assert_eq!(verb_from_proto(0), None);
    }
}
