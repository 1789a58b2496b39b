//! `MetadataApi` and `HealthApi`: the sidecar's self-description and readiness, shared by HTTP
//! (`/v1.0/metadata`, `/v1.0/healthz`) and gRPC (`GetMetadata`, `SetMetadata`).
//!
//! Extended metadata set by the app lives in an `arc-swap` map: writes are rare, reads lock-free.
//! Health also waits for the app channel (`AppHealthMonitor`'s status), named `app` when not ready.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::StatusCode;

use crate::api::errors::{codes, ApiError};
use crate::components::directory::{ComponentState, DirectoryHandle};
use crate::config::SidecarArgs;
use crate::invoke::app_health::{go_duration, AppHealthConfig, AppHealthHandle};
use crate::placement::client::PlacementHandle;
use crate::pubsub::{Subscription, SubscriptionKind, SubscriptionStatus, SubscriptionTable};

/// rapr's version, reported as the runtime version.
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A registered component as metadata lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredComponent {
    /// Name.
    pub name: String,
    /// Type.
    pub type_name: String,
    /// Version.
    pub version: String,
    /// Capabilities.
    pub capabilities: Vec<String>,
}

/// A subscription as metadata lists it (daprd's `PubsubSubscription`).
#[derive(Debug, Clone, PartialEq)]
pub struct ListedSubscription {
    /// The pub/sub component.
    pub pubsub: String,
    /// The topic.
    pub topic: String,
    /// Subscription metadata.
    pub metadata: BTreeMap<String, String>,
    /// Rules in order as (`match`, `path`); the default route has an empty `match`.
    pub rules: Vec<(String, String)>,
    /// Dead-letter topic, empty for none.
    pub dead_letter_topic: String,
    /// Declarative, programmatic or streaming.
    pub kind: SubscriptionKind,
}

/// How the sidecar reaches its app.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppConnection {
    /// App port (0: none).
    pub port: u16,
    /// Protocol.
    pub protocol: String,
    /// Address.
    pub channel_address: String,
    /// Concurrency limit (-1: none).
    pub max_concurrency: i32,
    /// App health checks, when enabled.
    pub health: Option<AppHealthProperties>,
}

/// `appConnectionProperties.health` as daprd reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppHealthProperties {
    /// Probed path (HTTP apps only).
    pub check_path: Option<String>,
    /// Go duration text, e.g. `5s`.
    pub probe_interval: String,
    /// Go duration text, e.g. `500ms`.
    pub probe_timeout: String,
    /// Failures before unhealthy.
    pub threshold: i32,
}

impl AppConnection {
    /// From the sidecar's flags.
    pub fn from_flags(f: &SidecarArgs) -> Self {
        let grpc = matches!(f.app_protocol.to_ascii_lowercase().as_str(), "grpc" | "grpcs");
        let health = AppHealthConfig::from_flags(f).map(|c| AppHealthProperties {
            check_path: (!grpc).then_some(c.path),
            probe_interval: go_duration(c.interval),
            probe_timeout: go_duration(c.timeout),
            threshold: i32::try_from(c.threshold).unwrap_or(i32::MAX),
        });
        Self { port: f.app_port, protocol: f.app_protocol.clone(), channel_address: f.app_channel_address.clone(), max_concurrency: f.app_max_concurrency, health }
    }
}

/// Everything `/v1.0/metadata` reports.
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataSnapshot {
    /// App id.
    pub id: String,
    /// rapr version.
    pub runtime_version: String,
    /// Enabled preview features.
    pub enabled_features: Vec<String>,
    /// Ready components.
    pub components: Vec<RegisteredComponent>,
    /// App-set and runtime-set attributes.
    pub extended: BTreeMap<String, String>,
    /// App channel.
    pub app_connection: AppConnection,
    /// Loaded `HTTPEndpoint` names.
    pub http_endpoints: Vec<String>,
    /// Subscriptions, in the order `SubscriptionManager` publishes them.
    pub subscriptions: Vec<ListedSubscription>,
    /// The actor runtime as daprd reports it.
    pub actor_runtime: ActorRuntimeInfo,
}

/// daprd's `ActorRuntime` status values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorRuntimeStatus {
    /// Placement is configured; the app's actor types are not known yet.
    Initializing,
    /// No placement address: no actors.
    Disabled,
    /// Registered with placement.
    Running,
}

impl ActorRuntimeStatus {
    /// The proto enum's name (the HTTP JSON writes it as text).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initializing => "INITIALIZING",
            Self::Disabled => "DISABLED",
            Self::Running => "RUNNING",
        }
    }
}

/// `actorRuntime` of `/v1.0/metadata` (daprd's `actors.RuntimeStatus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorRuntimeInfo {
    pub status: ActorRuntimeStatus,
    /// Connected to placement with a table, and free to run actors.
    pub host_ready: bool,
    /// `placement: connected` / `placement: disconnected` (empty while initializing, as daprd).
    pub placement: String,
}

/// This host's placement lease as `extended` shows it (Dapr's schema has no place for it):
/// `held (N ms left)`, `fenced` (it may not run actors), or `none` (a placement without leases,
/// daprd's, while the stream is up).
fn lease_state(s: &crate::placement::client::PlacementStatus) -> String {
    match (s.fenced, s.lease_until) {
        (true, _) => "fenced".into(),
        (false, Some(until)) => format!("held ({} ms left)", until.saturating_duration_since(std::time::Instant::now()).as_millis()),
        (false, None) => "none".into(),
    }
}

/// daprd's healthz target that waits for placement's first table.
pub const PLACEMENT_HEALTH_TARGET: &str = "internal-placement-service";

fn actor_runtime(placement: Option<&PlacementHandle>) -> ActorRuntimeInfo {
    const DISCONNECTED: &str = "placement: disconnected";
    let Some(p) = placement else {
        return ActorRuntimeInfo { status: ActorRuntimeStatus::Disabled, host_ready: false, placement: DISCONNECTED.into() };
    };
    let s = p.status();
    if !s.types_known {
        return ActorRuntimeInfo { status: ActorRuntimeStatus::Initializing, host_ready: false, placement: String::new() };
    }
    let connected = s.connected && s.ready;
    ActorRuntimeInfo {
        status: ActorRuntimeStatus::Running,
        host_ready: connected && !s.fenced,
        placement: if connected { "placement: connected".into() } else { DISCONNECTED.into() },
    }
}

/// The metadata facade.
#[derive(Clone)]
pub struct MetadataApi {
    app_id: String,
    enabled_features: Vec<String>,
    app_connection: AppConnection,
    directory: DirectoryHandle,
    extended: Arc<ArcSwap<BTreeMap<String, String>>>,
    app_health: Option<AppHealthHandle>,
    /// Set once this sidecar is registered with name resolution (or registration was given up),
    /// so "healthy" also means "other apps can call me".
    registered: Arc<std::sync::atomic::AtomicBool>,
    http_endpoints: Vec<String>,
    subscriptions: SubscriptionTable,
    /// The placement client, once started (set after the internal server binds).
    placement: Arc<arc_swap::ArcSwapOption<PlacementHandle>>,
}

impl MetadataApi {
    /// Builds the facade.
    pub fn new(app_id: String, enabled_features: Vec<String>, app_connection: AppConnection, directory: DirectoryHandle) -> Self {
        Self { app_id, enabled_features, app_connection, directory, extended: Arc::default(), app_health: None, registered: Arc::default(), http_endpoints: Vec::new(), subscriptions: SubscriptionTable::default(), placement: Arc::default() }
    }

    /// Lists the loaded `HTTPEndpoint`s.
    pub fn with_http_endpoints(mut self, names: Vec<String>) -> Self {
        self.http_endpoints = names;
        self
    }

    /// The table metadata lists subscriptions from: `SubscriptionManager` publishes into it.
    pub fn subscription_table(&self) -> SubscriptionTable {
        self.subscriptions.clone()
    }

    /// Marks name registration done (the root calls it right after registering).
    pub fn set_registered(&self) {
        self.registered.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Reports the actor runtime from this placement client, and makes health wait for its first
    /// table while the app hosts actor types.
    pub fn set_placement(&self, placement: PlacementHandle) {
        self.placement.store(Some(Arc::new(placement)));
    }

    /// Makes health wait for the app channel, as daprd's does: until the app's port accepts
    /// connections and, with health checks, until the app was healthy once.
    pub fn with_app_health(mut self, app: AppHealthHandle) -> Self {
        self.app_health = Some(app);
        self
    }

    /// The app id.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The current metadata. Components that are not ready appear in `extended` as
    /// `rapr.component.<name>` = `<state>: <error>`, since Dapr's schema has no place for them.
    pub fn get(&self) -> MetadataSnapshot {
        let dir = self.directory.load();
        let mut extended = BTreeMap::from([("daprRuntimeVersion".to_string(), RUNTIME_VERSION.to_string())]);
        let mut components = Vec::new();
        for c in &dir.components {
            if c.state.registered() {
                components.push(RegisteredComponent {
                    name: c.name.clone(),
                    type_name: c.type_name.clone(),
                    version: c.version.clone(),
                    capabilities: c.capabilities.iter().map(|s| s.to_string()).collect(),
                });
            }
            if c.state != ComponentState::Ready {
                let detail = c.error.clone().unwrap_or_default();
                extended.insert(format!("rapr.component.{}", c.name), format!("{}: {detail}", c.state.as_str()));
            }
        }
        let subs = self.subscriptions.load();
        for s in subs.iter() {
            extended.insert(subscription_key(&s.subscription), subscription_state(s));
        }
        extended.extend(self.extended.load().iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(p) = self.placement.load().as_deref() {
            extended.insert("rapr.placement.lease".into(), lease_state(&p.status()));
        }
        MetadataSnapshot {
            id: self.app_id.clone(),
            runtime_version: RUNTIME_VERSION.to_string(),
            enabled_features: self.enabled_features.clone(),
            components,
            extended,
            app_connection: self.app_connection.clone(),
            http_endpoints: self.http_endpoints.clone(),
            subscriptions: subs.iter().map(|s| listed(&s.subscription)).collect(),
            actor_runtime: actor_runtime(self.placement.load().as_deref()),
        }
    }

    /// Sets an extended attribute.
    pub fn set(&self, key: String, value: String) {
        self.extended.rcu(|m| {
            let mut m = (**m).clone();
            m.insert(key.clone(), value.clone());
            m
        });
    }

    /// `Ok` when every component that matters is ready; otherwise daprd's not-ready error naming them.
    pub fn health(&self) -> Result<(), ApiError> {
        let mut unhealthy = self.directory.load().unhealthy();
        if self.app_health.as_ref().is_some_and(|a| !a.is_ready()) {
            unhealthy.push("app".to_string());
        }
        if !self.registered.load(std::sync::atomic::Ordering::Acquire) {
            unhealthy.push("nameresolution".to_string());
        }
        if let Some(p) = self.placement.load().as_deref() {
            let s = p.status();
            if !s.types_known || (!s.types.is_empty() && !s.had_table) {
                unhealthy.push(PLACEMENT_HEALTH_TARGET.to_string());
            }
        }
        if unhealthy.is_empty() {
            return Ok(());
        }
        // daprd's plain APIError: the code and `dapr is not ready: [targets]` (Go's `%v` of the
        // list), no ErrorInfo.
        Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, tonic::Code::Internal, codes::ERR_HEALTH_NOT_READY, format!("dapr is not ready: [{}]", unhealthy.join(" "))))
    }
}

/// The extended key of a subscription's state: `rapr.subscription.<pubsub>/<topic>`.
pub fn subscription_key(s: &Subscription) -> String {
    format!("rapr.subscription.{}/{}", s.pubsub, s.topic)
}

/// A subscription's state for extended metadata (daprd's schema has no place for it):
/// `active` or `inactive: <why>`, then `; parked <n>` once messages were parked.
fn subscription_state(s: &SubscriptionStatus) -> String {
    let mut out = if s.active { "active".to_string() } else { format!("inactive: {}", s.error.as_deref().unwrap_or("not started")) };
    if s.active {
        if let Some(e) = &s.error {
            out.push_str(&format!(" (last error: {e})"));
        }
    }
    if s.parked > 0 {
        out.push_str(&format!("; parked {}", s.parked));
    }
    out
}

fn listed(s: &Subscription) -> ListedSubscription {
    ListedSubscription {
        pubsub: s.pubsub.clone(),
        topic: s.topic.clone(),
        metadata: s.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        rules: s.rules.iter().map(|r| (r.match_expr.clone(), r.path.clone())).collect(),
        dead_letter_topic: s.dead_letter_topic.clone().unwrap_or_default(),
        kind: s.kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::Rule;

    #[test]
    fn subscriptions_are_listed_with_their_state_in_extended() {
        let api = MetadataApi::new("a".into(), vec![], AppConnection::default(), DirectoryHandle::default());
        let mut declared = Subscription::new(SubscriptionKind::Declarative, "ps", "orders", "/default");
        declared.rules.insert(0, Rule { match_expr: "event.type == 'x'".into(), path: "/x".into() });
        declared.dead_letter_topic = Some("dead".into());
        let streaming = Subscription::new(SubscriptionKind::Streaming, "ps", "s/t", "");
        api.subscription_table().publish(vec![
            SubscriptionStatus { subscription: declared, active: true, error: None, parked: 2 },
            SubscriptionStatus { subscription: streaming, active: false, error: Some("component restarting".into()), parked: 0 },
        ]);
        let m = api.get();
        assert_eq!(m.subscriptions.len(), 2);
        assert_eq!(m.subscriptions[0].rules, vec![("event.type == 'x'".to_string(), "/x".to_string()), (String::new(), "/default".to_string())]);
        assert_eq!(m.subscriptions[0].dead_letter_topic, "dead");
        assert_eq!(m.subscriptions[1].kind, SubscriptionKind::Streaming);
        assert_eq!(m.extended.get("rapr.subscription.ps/orders").map(String::as_str), Some("active; parked 2"));
        assert_eq!(m.extended.get("rapr.subscription.ps/s/t").map(String::as_str), Some("inactive: component restarting"));
    }
}
