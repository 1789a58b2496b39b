//! gRPC adapter of metadata and shutdown: `GetMetadata`, `SetMetadata`, `Shutdown`.

use rapr_proto::runtime::v1 as pb;
use tonic::{Request, Response, Status};

use super::DaprService;
use crate::pubsub::SubscriptionKind;

/// daprd's `PubsubSubscription`: the rules always as a (possibly empty) list.
fn subscription(s: crate::api::metadata::ListedSubscription) -> pb::PubsubSubscription {
    let kind = match s.kind {
        SubscriptionKind::Declarative => pb::PubsubSubscriptionType::Declarative,
        SubscriptionKind::Programmatic => pb::PubsubSubscriptionType::Programmatic,
        SubscriptionKind::Streaming => pb::PubsubSubscriptionType::Streaming,
    };
    pb::PubsubSubscription {
        pubsub_name: s.pubsub,
        topic: s.topic,
        metadata: s.metadata.into_iter().collect(),
        rules: Some(pb::PubsubSubscriptionRules { rules: s.rules.into_iter().map(|(r#match, path)| pb::PubsubSubscriptionRule { r#match, path }).collect() }),
        dead_letter_topic: s.dead_letter_topic,
        r#type: kind as i32,
    }
}

use crate::api::metadata::ActorRuntimeStatus;

impl DaprService {
    pub(super) async fn get_metadata_impl(&self, _r: Request<pb::GetMetadataRequest>) -> Result<Response<pb::GetMetadataResponse>, Status> {
        let m = self.metadata.get();
        let app = m.app_connection;
        let actors = m.actor_runtime;
        Ok(Response::new(pb::GetMetadataResponse {
            id: m.id,
            registered_components: m
                .components
                .into_iter()
                .map(|c| pb::RegisteredComponents { name: c.name, r#type: c.type_name, version: c.version, capabilities: c.capabilities })
                .collect(),
            extended_metadata: m.extended.into_iter().collect(),
            subscriptions: m.subscriptions.into_iter().map(subscription).collect(),
            http_endpoints: m.http_endpoints.into_iter().map(|name| pb::MetadataHttpEndpoint { name }).collect(),
            runtime_version: m.runtime_version,
            enabled_features: m.enabled_features,
            app_connection_properties: Some(pb::AppConnectionProperties {
                port: i32::from(app.port),
                protocol: app.protocol,
                channel_address: app.channel_address,
                max_concurrency: app.max_concurrency,
                health: app.health.map(|h| pb::AppConnectionHealthProperties {
                    health_check_path: h.check_path.unwrap_or_default(),
                    health_probe_interval: h.probe_interval,
                    health_probe_timeout: h.probe_timeout,
                    health_threshold: h.threshold,
                }),
            }),
            actor_runtime: Some(pb::ActorRuntime {
                runtime_status: match actors.status {
                    ActorRuntimeStatus::Initializing => pb::actor_runtime::ActorRuntimeStatus::Initializing,
                    ActorRuntimeStatus::Disabled => pb::actor_runtime::ActorRuntimeStatus::Disabled,
                    ActorRuntimeStatus::Running => pb::actor_runtime::ActorRuntimeStatus::Running,
                } as i32,
                active_actors: Vec::new(),
                host_ready: actors.host_ready,
                placement: actors.placement,
            }),
            ..Default::default()
        }))
    }

    pub(super) async fn set_metadata_impl(&self, r: Request<pb::SetMetadataRequest>) -> Result<Response<()>, Status> {
        let r = r.into_inner();
        self.metadata.set(r.key, r.value);
        Ok(Response::new(()))
    }

    pub(super) async fn shutdown_impl(&self, _r: Request<pb::ShutdownRequest>) -> Result<Response<()>, Status> {
        tracing::info!("shutdown requested through the gRPC API");
        self.shutdown.trigger();
        Ok(Response::new(()))
    }
}
