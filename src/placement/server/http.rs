//! The placement node's HTTP side: `/healthz` (and, with `--metadata-enabled`,
//! `/placement/state`, daprd's JSON of the tables per namespace) on the health port, and
//! `/metrics` with daprd placement's four gauges on the metrics port.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use ractor::ActorRef;
use rapr_proto::placement::v1::Host;
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use super::namespace::{DisseminatorMsg, NamespaceView};
use super::registry::NamespaceRegistryMsg;

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub registry: ActorRef<NamespaceRegistryMsg>,
    pub ready: watch::Receiver<bool>,
    pub leader: watch::Receiver<crate::placement::raft::node::Leadership>,
}

/// The health router (with the metadata route when enabled).
pub fn healthz_router(state: HttpState, metadata: bool) -> Router {
    let mut r = Router::new().route("/healthz", get(healthz));
    if metadata {
        r = r.route("/placement/state", any(placement_state));
    }
    r.with_state(state)
}

/// The metrics router.
pub fn metrics_router(state: HttpState) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(state)
}

async fn healthz(State(s): State<HttpState>) -> StatusCode {
    if *s.ready.borrow() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Every namespace's view (a namespace whose disseminator does not answer is left out).
pub async fn views(registry: &ActorRef<NamespaceRegistryMsg>) -> Vec<(String, NamespaceView)> {
    let Ok(all) = ractor::call!(registry, NamespaceRegistryMsg::All) else { return Vec::new() };
    let mut out = Vec::with_capacity(all.len());
    for (ns, d) in all {
        if let Ok(view) = ractor::call!(d, DisseminatorMsg::State) {
            out.push((ns, view));
        }
    }
    out
}

/// A host as Go's `encoding/json` writes daprd's `Host` (zero fields left out, enums as numbers).
fn host_json(h: &Host) -> Value {
    let mut m = Map::new();
    if !h.name.is_empty() {
        m.insert("name".into(), json!(h.name));
    }
    if h.port != 0 {
        m.insert("port".into(), json!(h.port));
    }
    if !h.entities.is_empty() {
        m.insert("entities".into(), json!(h.entities));
    }
    if !h.id.is_empty() {
        m.insert("id".into(), json!(h.id));
    }
    if h.api_level != 0 {
        m.insert("api_level".into(), json!(h.api_level));
    }
    if !h.namespace.is_empty() {
        m.insert("namespace".into(), json!(h.namespace));
    }
    if h.operation != 0 {
        m.insert("operation".into(), json!(h.operation));
    }
    if let Some(v) = h.version {
        m.insert("version".into(), json!(v));
    }
    Value::Object(m)
}

/// daprd's `/placement/state`: `{"tables": {ns: {"hosts": [...], "version": n}}}` for every
/// namespace with a live stream, `{}` when there is none.
pub fn state_json(views: &[(String, NamespaceView)]) -> Value {
    let mut tables = Map::new();
    for (ns, v) in views.iter().filter(|(_, v)| v.streams > 0 || !v.hosts.is_empty()) {
        let mut t = Map::new();
        if !v.hosts.is_empty() {
            t.insert("hosts".into(), Value::Array(v.hosts.iter().map(host_json).collect()));
        }
        if v.version != 0 {
            t.insert("version".into(), json!(v.version));
        }
        tables.insert(ns.clone(), Value::Object(t));
    }
    if tables.is_empty() {
        return json!({});
    }
    json!({ "tables": tables })
}

async fn placement_state(State(s): State<HttpState>) -> Response {
    if !s.leader.borrow().serving() {
        let body = json!({"errorCode": "ERR_PLACEMENT_NOT_LEADER", "message": "this placement node is not the leader"});
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    let v = views(&s.registry).await;
    ([(header::CONTENT_TYPE, "application/json")], state_json(&v).to_string()).into_response()
}

async fn metrics(State(s): State<HttpState>) -> Response {
    let v = views(&s.registry).await;
    let leader = u8::from(s.leader.borrow().serving());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics_text(&v, leader)).into_response()
}

/// daprd placement's gauges in Prometheus text.
pub fn metrics_text(views: &[(String, NamespaceView)], leader: u8) -> String {
    let mut out = String::new();
    type Gauge = (&'static str, &'static str, fn(&NamespaceView) -> usize);
    let gauges: [Gauge; 2] = [
        ("dapr_placement_runtimes_total", "The total number of runtimes reported to placement service.", |v| v.streams),
        ("dapr_placement_actor_runtimes_total", "The total number of actor runtimes reported to placement service.", |v| v.hosts.len()),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (ns, v) in views {
            let _ = writeln!(out, "{name}{{host_namespace=\"{}\"}} {}", ns.replace('\\', "\\\\").replace('"', "\\\""), value(v));
        }
    }
    for (name, help) in [
        ("dapr_placement_leader_status", "Placement server leadership status (1 for leader, 0 for not leader)."),
        ("dapr_placement_raft_leader_status", "Raft server leadership status (1 for leader, 0 for not leader)."),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {leader}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_json_is_daprds_shape() {
        let host = Host { name: "h:1".into(), entities: vec!["T".into()], id: "a".into(), api_level: 20, namespace: "default".into(), operation: 1, ..Default::default() };
        let views = vec![
            ("default".to_string(), NamespaceView { version: 3, streams: 1, hosts: vec![host], kept: vec![] }),
            ("empty".to_string(), NamespaceView { version: 0, streams: 1, hosts: vec![], kept: vec![] }),
            ("gone".to_string(), NamespaceView::default()),
        ];
        let v = state_json(&views);
        assert_eq!(
            v,
            json!({"tables": {"default": {"hosts": [{"name": "h:1", "entities": ["T"], "id": "a", "api_level": 20, "namespace": "default", "operation": 1}], "version": 3}, "empty": {}}})
        );
        assert_eq!(state_json(&[]), json!({}));
    }

    #[test]
    fn metrics_have_daprds_names() {
        let views = vec![("default".to_string(), NamespaceView { version: 1, streams: 2, hosts: vec![Host::default()], kept: vec![] })];
        let text = metrics_text(&views, 1);
        assert!(text.contains("dapr_placement_runtimes_total{host_namespace=\"default\"} 2"), "{text}");
        assert!(text.contains("dapr_placement_actor_runtimes_total{host_namespace=\"default\"} 1"));
        assert!(text.contains("dapr_placement_leader_status 1"));
    }
}
