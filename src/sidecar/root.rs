//! `RuntimeRoot`: the supervision root of one sidecar.
//!
//! ```text
//! RuntimeRoot                      one per sidecar; escalation ends here (the sidecar exits)
//! ├── ComponentSupervisor          restarts failed components with backoff; never escalates
//! │   └── ComponentHost (category/name)*  one per component instance, lifecycle only
//! ├── SubscriptionManager          pub/sub: one Delivery per subscription, restarts them; escalates
//! │   └── Delivery*
//! └── ApiGateway                   HTTP, gRPC, internal and metrics listeners, graceful drain; escalates
//! ```
//! Start order: resources are loaded, components get their first init attempt, `HTTPEndpoint`s
//! resolve their `secretKeyRef`s through the secret stores just started, then the gateway binds
//! (so `/v1.0/healthz/outbound` is true from the first request). Stop order is the reverse:
//! drain the APIs, then stop the hosts (which finish their in-flight work), then exit.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::runtime::call::call;
use super::gateway::{ApiGateway, ApiGatewayArgs, ApiGatewayMsg, ApiListen, BoundAddresses};
use super::invocation::{resolver_path, Invocation};
use crate::invoke::nameres::Registration;
use crate::runtime::restart::RestartPolicy;
use crate::runtime::telemetry::{self, Tracing};
use crate::runtime::shutdown::ShutdownHandle;
use crate::api::grpc::{GrpcShared, GrpcState};
use crate::api::Facades;
use crate::api::http::{HttpShared, HttpState};
use crate::api::metadata::{AppConnection, MetadataApi};
use crate::api::state::StateApi;
use crate::components::directory::DirectoryHandle;
use crate::components::registry::Registry;
use crate::components::supervisor::{ComponentSupervisor, ComponentSupervisorArgs, ComponentSupervisorClient};
use crate::api::secrets::SecretsApi;
use crate::config::http_endpoint::{HttpEndpointSpec, PendingHttpEndpoint};
use super::load::{load_configurations, load_resources};
use crate::config::{ConfigurationSpec, SidecarArgs};
use crate::resiliency::Resiliency;

/// Messages of `RuntimeRoot`.
pub enum RuntimeRootMsg {
    /// Bound API addresses (HTTP, gRPC).
    Addresses(RpcReplyPort<BoundAddresses>),
    /// Drain and stop everything, then stop the root.
    Shutdown(RpcReplyPort<()>),
}

// A local message only (ractor's `cluster` feature, on with ractor_cluster, wants it said).
impl ractor::Message for RuntimeRootMsg {}

/// Arguments of the root.
pub struct RuntimeRootArgs {
    /// Flags.
    pub flags: SidecarArgs,
    /// `DAPR_API_TOKEN`.
    pub api_token: Option<String>,
    /// Shutdown trigger shared with the APIs.
    pub shutdown: ShutdownHandle,
    /// Asks for a reload of the whole runtime (hot reload of resources that need one).
    pub restart: crate::runtime::shutdown::RestartHandle,
    /// Component implementations.
    pub registry: Arc<Registry>,
}

/// The root process.
pub struct RuntimeRoot;

/// Root state: the children's front doors.
pub struct RuntimeRootState {
    components: ComponentSupervisorClient,
    gateway: ActorRef<ApiGatewayMsg>,
    registration: Option<Registration>,
    tracer: Tracing,
    pubsub: crate::pubsub::manager::SubscriptionManagerClient,
    drain_deadline: Duration,
    /// `--dapr-block-shutdown-duration`, what ends it early (the app turning unhealthy), and the
    /// shutdown trigger (a reload also stops the root, and must not block).
    block: Option<(Duration, Option<crate::invoke::app_health::AppHealthHandle>, ShutdownHandle)>,
}

fn addrs(listen: &[String], port: u16) -> Result<Vec<SocketAddr>, ActorProcessingErr> {
    listen
        .iter()
        .map(|a| {
            let ip: IpAddr = a.trim_matches(|c| c == '[' || c == ']').parse().map_err(|_| format!("invalid listen address {a:?}"))?;
            Ok(SocketAddr::new(ip, port))
        })
        .collect()
}

/// The HTTP and gRPC API routers with API logging (`--enable-api-logging`, else the
/// Configuration's `logging.apiLogging.enabled`, as daprd) and CORS (`--allowed-origins`).
fn api_layers(flags: &SidecarArgs, cfg: crate::config::configuration::ApiLoggingSpec, http: axum::Router, grpc: axum::Router) -> (axum::Router, axum::Router) {
    let (http, grpc) = if flags.enable_api_logging.unwrap_or(cfg.enabled) {
        let opts = crate::api::api_log::ApiLogOptions { obfuscate_urls: cfg.obfuscate_urls, omit_health_checks: cfg.omit_health_checks };
        (http.layer(axum::middleware::from_fn_with_state(opts, crate::api::api_log::http)), grpc.layer(axum::middleware::from_fn(crate::api::api_log::grpc)))
    } else {
        (http, grpc)
    };
    match crate::api::http::cors(&flags.allowed_origins) {
        Some(cors) => (http.layer(cors), grpc),
        None => (http, grpc),
    }
}

/// Resolves each endpoint's secrets once, after the components' first start, as daprd loads its
/// endpoints after its secret stores. Those that fail are shown as failed resources and left out,
/// so invoking one is invoking an unknown app id. The result never changes afterwards.
async fn resolve_http_endpoints(pending: Vec<PendingHttpEndpoint>, directory: &DirectoryHandle, components: &ComponentSupervisorClient) -> Vec<HttpEndpointSpec> {
    let snapshot = directory.load();
    let mut endpoints = Vec::with_capacity(pending.len());
    for ep in pending {
        match ep.resolve(&snapshot).await {
            Ok(spec) => endpoints.push(spec),
            Err(e) => components.report_failed(e).await,
        }
    }
    endpoints
}

impl Actor for RuntimeRoot {
    type Msg = RuntimeRootMsg;
    type State = RuntimeRootState;
    type Arguments = RuntimeRootArgs;

    async fn pre_start(&self, me: ActorRef<Self::Msg>, a: Self::Arguments) -> Result<Self::State, ActorProcessingErr> {
        let mut flags = a.flags;
        // Refused flags stop the start here, with the flag and the reason in the error.
        for warning in flags.validate()? {
            tracing::warn!("{warning}");
        }
        let runtime_id = format!("{}-{}", if flags.app_id.is_empty() { "rapr" } else { &flags.app_id }, uuid::Uuid::new_v4().simple());
        let configuration = match flags.config.as_slice() {
            [] => ConfigurationSpec::default().with_default_features(),
            files => match load_configurations(files) {
                Ok(cfg) => {
                    if !cfg.unimplemented.is_empty() {
                        tracing::warn!(configuration = %cfg.name, sections = ?cfg.unimplemented, "configuration sections not implemented by rapr yet; ignored");
                    }
                    cfg.with_default_features()
                }
                // As daprd: a Configuration that does not load stops the sidecar from starting.
                Err(e) => return Err(format!("error loading configuration: {e}").into()),
            },
        };
        let api_logging = configuration.api_logging;
        let mut resources = load_resources(&flags.resource_paths(), &flags.app_id);
        crate::components::metadata::templates::expand_components(&mut resources, &crate::components::metadata::templates::Identity::from_env(&flags.app_id));
        for (kind, file) in &resources.skipped_kinds {
            tracing::warn!(kind = %kind, file = %file.display(), "resource kind not implemented by rapr yet; ignored");
        }
        // Resiliency errors show like other resource errors (failed entries in metadata).
        let (resiliency, resiliency_errors) = Resiliency::load(&resources.resiliency, &flags.app_id);
        resources.errors.extend(resiliency_errors);
        let on_disk = super::reload::Loaded::of(&resources);
        if !configuration.enabled_features.is_empty() {
            tracing::info!("Enabled features: {}", configuration.enabled_features.join(" "));
        }
        let hot_reload = configuration.feature_enabled(crate::config::configuration::HOT_RELOAD);
        let directory = DirectoryHandle::default();
        let (metrics, tracer) = telemetry::setup(&flags, &configuration)?;
        let resiliency = resiliency.with_metrics(&metrics);
        let actor_state_store = super::placement::has_actor_state_store(&resources.components);
        let (sup, _) = Actor::spawn_linked(
            Some(format!("{runtime_id}/components")),
            ComponentSupervisor,
            ComponentSupervisorArgs {
                runtime_id: runtime_id.clone(),
                app_id: flags.app_id.clone(),
                specs: resources.components,
                load_errors: resources.errors,
                registry: a.registry,
                directory: directory.clone(),
                policy: RestartPolicy::default(),
                call_timeout: flags.component_call_timeout()?,
                probe: flags.component_health_probe()?,
                metrics: metrics.clone(),
            },
            me.get_cell(),
        )
        .await?;
        let components = ComponentSupervisorClient::new(sup);
        components.await_initial().await;

        let app_id: Arc<str> = Arc::from(flags.app_id.as_str());
        let api_token: Option<Arc<str>> = a.api_token.filter(|t| !t.is_empty()).map(Arc::from);
        let max_body = flags.max_body_bytes()?;
        let state = StateApi::new(directory.clone(), resiliency.clone());
        let publish = crate::api::pubsub::PubSubApi::new(directory.clone(), resiliency.clone(), &flags.app_id).with_tracer(tracer.clone());
        let app = AppConnection::from_flags(&flags);
        let secrets = SecretsApi::new(directory.clone(), configuration.secret_scopes).with_resiliency(resiliency.clone());
        let endpoints = resolve_http_endpoints(std::mem::take(&mut resources.http_endpoints), &directory, &components).await;
        let metadata = MetadataApi::new(flags.app_id.clone(), configuration.enabled_features, app, directory.clone()).with_http_endpoints(endpoints.iter().map(|e| e.name.clone()).collect());
        let mut invocation = Invocation::build(&flags, resolver_path(configuration.name_resolution_db.clone()), max_body, resiliency.clone(), &metrics).await?;
        invocation.api = invocation.api.clone().with_http_endpoints(endpoints);

        let app_health = invocation.start_app_health(&runtime_id, me.get_cell()).await?;
        let metadata = match &app_health {
            Some(h) => metadata.with_app_health(h.clone()),
            None => metadata,
        };
        // `/v1.0/metadata` reads the table the manager publishes.
        let subscriptions = metadata.subscription_table();
        let pubsub_setup = crate::pubsub::start::PubSubSetup {
            app_id: flags.app_id.clone(),
            app: invocation.app.clone(),
            health: app_health.clone(),
            directory: directory.clone(),
            table: subscriptions.clone(),
            resiliency: resiliency.clone(),
            metrics: metrics.clone(),
            declared: std::mem::take(&mut resources.subscriptions),
            tracer: Some(tracer.clone()),
            programmatic: flags.daprd.programmatic_subscriptions(),
        };
        let pubsub = crate::pubsub::start::start(pubsub_setup, format!("{runtime_id}/subscriptions"), me.get_cell()).await?;
        let metadata_ready = metadata.clone();
        if hot_reload {
            let watcher = super::reload::ResourceWatcherArgs {
                paths: flags.resource_paths(),
                app_id: flags.app_id.clone(),
                loaded: on_disk,
                components: components.clone(),
                subscriptions: pubsub.clone(),
                restart: a.restart.clone(),
                reconcile_every: flags.daprd.reconcile_interval()?,
            };
            Actor::spawn_linked(Some(format!("{runtime_id}/resource-watcher")), super::reload::ResourceWatcher, watcher, me.get_cell()).await?;
        }
        let pubsub_streams = crate::pubsub::streams::StreamSubscriptions::new(pubsub.clone());
        let facades = Facades { state, metadata, secrets, invoke: invocation.api.clone(), pubsub: publish };
        let http = crate::api::http::router(HttpState::new(HttpShared {
            facades: facades.clone(),
            shutdown: a.shutdown.clone(),
            app_id: app_id.clone(),
            max_body,
            api_token: api_token.clone(),
        }));
        let public = crate::api::http::public_router(HttpState::new(HttpShared {
            facades: facades.clone(),
            shutdown: a.shutdown.clone(),
            app_id: app_id.clone(),
            max_body,
            api_token: None,
        }));
        let grpc = crate::api::grpc::router(GrpcState::new(GrpcShared { facades, shutdown: a.shutdown.clone(), app_id, max_message: max_body, api_token, pubsub_streams }))?;
        let (http, grpc) = api_layers(&flags, api_logging, http, grpc);
        // The internal gRPC router: each subsystem that serves other sidecars merges its own.
        let internal = axum::Router::new().merge(invocation.internal.clone());
        let listen = flags.listen_addresses();
        let api = match flags.api_sockets() {
            Some((http, grpc)) => ApiListen::Unix { http, grpc },
            None => ApiListen::Tcp { http: addrs(&listen, flags.dapr_http_port)?, grpc: addrs(&listen, flags.dapr_grpc_port)? },
        };
        let public = flags.public_addr()?.map(|addr| (telemetry::instrument(public, false, &metrics, &tracer), addr));
        let (gateway, _) = Actor::spawn_linked(
            Some(format!("{runtime_id}/gateway")),
            ApiGateway,
            ApiGatewayArgs {
                http: telemetry::instrument(http, false, &metrics, &tracer),
                grpc: telemetry::instrument(grpc, true, &metrics, &tracer),
                internal: telemetry::instrument(internal, true, &metrics, &tracer),
                public,
                metrics: metrics.enabled().then(|| crate::runtime::metrics::router(metrics.clone())),
                api,
                metrics_addr: flags.metrics_addr()?,
                internal_addr: flags.internal_addr()?,
                read_buffer: flags.read_buffer_bytes()?,
                drain_deadline: flags.graceful_shutdown().max(Duration::from_secs(1)),
            },
            me.get_cell(),
        )
        .await?;
        let bound = call(&gateway, ApiGatewayMsg::Addresses, Duration::from_secs(5)).await.unwrap_or_default();
        // daprd: a loopback internal listen address is the address others are given.
        let advertised: Vec<String> = flags.internal_host_override().into_iter().chain(listen.iter().cloned()).collect();
        let registration = invocation.register(&flags.app_id, &advertised, &bound.internal).await;
        metadata_ready.set_registered();
        if let Some(port) = bound.internal.first().map(|a| a.port()) {
            let setup = super::placement::PlacementSetup {
                flags: &flags,
                host_name: super::invocation::advertised_address(&advertised, port),
                hosting: actor_state_store,
                app: invocation.app.clone(),
                health: app_health.clone(),
                metrics: metrics.clone(),
            };
            if let Some(placement) = super::placement::start(setup, me.get_cell()).await? {
                metadata_ready.set_placement(placement);
            }
        }
        let drain_deadline = flags.graceful_shutdown().max(Duration::from_secs(1));
        let block = flags.block_shutdown()?.map(|d| (d, app_health, a.shutdown.clone()));
        Ok(RuntimeRootState { components, gateway, registration, tracer, pubsub, drain_deadline, block })
    }

    async fn handle(&self, me: ActorRef<Self::Msg>, msg: Self::Msg, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        match msg {
            RuntimeRootMsg::Addresses(reply) => {
                let gw = st.gateway.clone();
                tokio::spawn(async move {
                    if let Ok(ractor::rpc::CallResult::Success(a)) = gw.call(ApiGatewayMsg::Addresses, Some(Duration::from_secs(5))).await {
                        let _ = reply.send(a);
                    }
                });
            }
            RuntimeRootMsg::Shutdown(reply) => {
                if let Some(r) = st.registration.take() {
                    r.deregister().await;
                }
                // daprd's order: subscriptions stop taking messages and drain first.
                tracing::info!("draining pub/sub deliveries");
                st.pubsub.drain(st.drain_deadline).await;
                // daprd's blocked shutdown: subscriptions have stopped; the APIs keep serving
                // until the period ends or the app reports unhealthy.
                if let Some((period, health, _)) = st.block.take().filter(|(_, _, sd)| sd.is_requested()) {
                    tracing::info!("Blocking graceful shutdown for {} or until app reports unhealthy...", crate::invoke::app_health::go_duration(period));
                    let unhealthy = async {
                        match &health {
                            Some(h) => h.until_unhealthy().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(period) => tracing::info!("Block shutdown period expired, entering shutdown..."),
                        _ = unhealthy => tracing::info!("App reported unhealthy, entering shutdown..."),
                    }
                }
                tracing::info!("draining the APIs");
                let _ = st.gateway.call(ApiGatewayMsg::Drain, Some(Duration::from_secs(60))).await;
                st.gateway.stop(None);
                tracing::info!("stopping components");
                st.components.stop_all().await;
                st.tracer.shutdown().await;
                let _ = reply.send(());
                me.stop(Some("shutdown".into()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(&self, me: ActorRef<Self::Msg>, evt: SupervisionEvent, _st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, err) = evt {
            tracing::error!(process = ?cell.get_name(), error = %err, "a runtime process failed; stopping the sidecar");
            me.stop(Some(format!("{err}")));
        }
        Ok(())
    }
}
