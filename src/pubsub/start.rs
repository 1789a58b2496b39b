//! Starting pub/sub delivery for one sidecar: the app sink for its protocol, the shared
//! delivery parts, and the `SubscriptionManager` under the runtime root. Subscriptions (the
//! declarative ones, then the app's own from `/dapr/subscribe` or `ListTopicSubscriptions`) are
//! collected once the app's port is open (daprd starts them when the app channel is ready).

use std::sync::Arc;

use ractor::{Actor, ActorCell};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::app_grpc::GrpcSink;
use super::app_http::HttpSink;
use super::app_sink::AppSink;
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
}

/// The sink for the app's protocol.
pub fn sink_for(app: Arc<AppChannel>, health: Option<AppHealthHandle>) -> Arc<dyn AppSink> {
    match app.protocol() {
        AppProtocol::Grpc => Arc::new(GrpcSink::new(app, health)),
        AppProtocol::Http | AppProtocol::H2c => Arc::new(HttpSink::new(app, health)),
    }
}

/// Spawns the manager linked to `supervisor`; `None` when there is no app to deliver to.
pub async fn start(setup: PubSubSetup, name: String, supervisor: ActorCell) -> Result<Option<SubscriptionManagerClient>, ractor::SpawnErr> {
    let Some(app) = setup.app else {
        if !setup.declared.is_empty() {
            tracing::warn!(count = setup.declared.len(), "subscriptions declared but no app port: nothing to deliver to");
        }
        return Ok(None);
    };
    let shared = Arc::new(DeliveryShared {
        sink: sink_for(Arc::clone(&app), setup.health.clone()),
        draining: CancellationToken::new(),
        in_flight: TaskTracker::new(),
        metrics: setup.metrics.enabled().then_some(setup.metrics),
    });
    let health = setup.health;
    let subscriptions = setup.declared;
    let app_id = setup.app_id.clone();
    let load = Box::pin(async move {
        if let Some(h) = &health {
            h.until_port_open().await;
        }
        super::programmatic::merge(subscriptions, super::programmatic::load(&app, &app_id).await)
    });
    let args = SubscriptionManagerArgs { app_id: setup.app_id, directory: setup.directory, table: setup.table, resiliency: setup.resiliency, shared, load };
    let (manager, _) = Actor::spawn_linked(Some(name), SubscriptionManager, args, supervisor).await?;
    Ok(Some(SubscriptionManagerClient::new(manager)))
}
