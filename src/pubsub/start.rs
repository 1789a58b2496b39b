//! Starting pub/sub delivery for one sidecar: the app sink for its protocol, the shared
//! delivery parts, and the `SubscriptionManager` under the runtime root. Subscriptions (the
//! declarative ones, then the app's own from `/dapr/subscribe` or `ListTopicSubscriptions`) are
//! collected once the app's port is open (daprd starts them when the app channel is ready).

use std::sync::Arc;

use async_trait::async_trait;
use ractor::{Actor, ActorCell};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::app_grpc::GrpcSink;
use super::app_http::HttpSink;
use super::app_sink::{AppBatch, AppEvent, AppSink};
use super::outcome::AppAnswer;
use super::handler::DeliveryShared;
use super::manager::{SubscriptionManager, SubscriptionManagerArgs, SubscriptionManagerClient};
use super::{Subscription, SubscriptionTable};
use crate::components::directory::DirectoryHandle;
use crate::invoke::app_channel::{AppChannel, AppProtocol};
use crate::invoke::app_health::AppHealthHandle;
use crate::resiliency::Resiliency;
use crate::runtime::metrics::Metrics;

/// What the root hands pub/sub delivery.
pub struct PubSubSetup {
    /// This app's id.
    pub app_id: String,
    /// The app channel (`None` without `--app-port`: no app subscriptions then).
    pub app: Option<Arc<AppChannel>>,
    /// The app's health (deliveries wait while it is unhealthy).
    pub health: Option<AppHealthHandle>,
    /// Where brokers are published.
    pub directory: DirectoryHandle,
    /// What `/v1.0/metadata` reads.
    pub table: SubscriptionTable,
    /// Inbound policies.
    pub resiliency: Resiliency,
    /// The sidecar's metrics.
    pub metrics: Metrics,
    /// Declarative subscriptions (`Subscription` resources).
    pub declared: Vec<Subscription>,
    /// The sidecar's tracer: each delivery runs under its own span, as daprd's postmen.
    pub tracer: Option<crate::runtime::telemetry::Tracing>,
    /// Whether the app's `/dapr/subscribe` is fetched (`--disable-init-endpoints subscribe`
    /// turns it off, as daprd's `ProgrammaticSubscriptionEnabled`).
    pub programmatic: bool,
}

/// The sink for the app's protocol.
pub fn sink_for(app: Arc<AppChannel>, health: Option<AppHealthHandle>, tracer: Option<crate::runtime::telemetry::Tracing>) -> Arc<dyn AppSink> {
    match app.protocol() {
        AppProtocol::Grpc => Arc::new(GrpcSink::new(app, health).with_tracer(tracer)),
        AppProtocol::Http | AppProtocol::H2c => Arc::new(HttpSink::new(app, health).with_tracer(tracer)),
    }
}

/// The sink of a sidecar without an app port. No app subscription is loaded there, so nothing
/// is handed to it: only streaming subscriptions run, each with its own sink. An event that
/// reached it anyway would stay unacknowledged (`RETRY`).
struct NoApp;

#[async_trait]
impl AppSink for NoApp {
    async fn deliver(&self, _ev: &AppEvent) -> AppAnswer {
        AppAnswer::Retry
    }

    async fn deliver_bulk(&self, batch: &AppBatch) -> Vec<AppAnswer> {
        vec![AppAnswer::Retry; batch.entries.len()]
    }
}

/// Spawns the manager linked to `supervisor`. Without an app port it runs only streaming
/// subscriptions (which need no app channel), as daprd.
pub async fn start(setup: PubSubSetup, name: String, supervisor: ActorCell) -> Result<SubscriptionManagerClient, ractor::SpawnErr> {
    let app = setup.app;
    if app.is_none() && !setup.declared.is_empty() {
        tracing::warn!(count = setup.declared.len(), "subscriptions declared but no app port: nothing to deliver to");
    }
    let sink: Arc<dyn AppSink> = match &app {
        Some(app) => sink_for(Arc::clone(app), setup.health.clone(), setup.tracer.clone()),
        None => Arc::new(NoApp),
    };
    let shared = Arc::new(DeliveryShared {
        sink,
        draining: CancellationToken::new(),
        in_flight: TaskTracker::new(),
        metrics: setup.metrics.enabled().then_some(setup.metrics),
    });
    let health = setup.health;
    let subscriptions = setup.declared;
    let app_id = setup.app_id.clone();
    let directory = setup.directory.clone();
    let init_policy = setup.resiliency.built_in_override(crate::resiliency::BuiltIn::InitializationRetries);
    let programmatic_enabled = setup.programmatic;
    let load = Box::pin(async move {
        let Some(app) = app else { return Vec::new() };
        if let Some(h) = &health {
            h.until_port_open().await;
        }
        // As daprd: the app is asked only when a pub/sub component is configured.
        let has_pubsub = directory.load().components.iter().any(|c| c.type_name.starts_with("pubsub."));
        let programmatic = if has_pubsub && programmatic_enabled { super::programmatic::load_with(&app, &app_id, init_policy).await } else { Vec::new() };
        super::programmatic::merge(subscriptions, programmatic)
    });
    let args = SubscriptionManagerArgs { app_id: setup.app_id, directory: setup.directory, table: setup.table, resiliency: setup.resiliency, shared, load };
    let (manager, _) = Actor::spawn_linked(Some(name), SubscriptionManager, args, supervisor).await?;
    Ok(SubscriptionManagerClient::new(manager))
}
