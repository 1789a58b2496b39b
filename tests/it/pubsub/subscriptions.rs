//! Subscriptions through the real binary (issue 11 B.4, A.3 metadata): declarative v1alpha1 and
//! v2alpha1 with scopes, a bad CEL expression rejected with the others kept, an unknown pub/sub,
//! programmatic over HTTP (`/dapr/subscribe`) and gRPC (`ListTopicSubscriptions`), all as
//! `/v1.0/metadata` lists them; and CEL routing end to end over `pubsub.sqlite`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rapr::components::metadata::ComponentMetadata;
use rapr::components::pubsub::sqlite::{BrokerConfig, SqliteBroker};
use rapr::components::pubsub::{PubSub, PublishRequest};
use serde_json::{json, Value};

use super::app::SubscriberApp;
use crate::harness::{eventually, Sidecar, SidecarBuilder};

const PUBSUB: &str = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: ps\nspec:\n  type: pubsub.in-memory\n  version: v1\n";

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

async fn metadata(sc: &Sidecar) -> Value {
    sc.client.get(sc.url("/v1.0/metadata")).send().await.expect("metadata answers").json().await.expect("metadata is JSON")
}

/// The listed subscription of `topic`, once there.
async fn listed(sc: &Sidecar, topic: &str) -> Value {
    eventually(Duration::from_secs(20), &format!("subscription {topic} in /v1.0/metadata"), || async {
        metadata(sc).await["subscriptions"].as_array()?.iter().find(|s| s["topic"] == topic).cloned()
    })
    .await
}

#[tokio::test]
async fn declarative_v1_and_v2_with_scopes_are_listed_as_daprd() {
    let (t1, t2, other) = (unique("v1"), unique("v2"), unique("other"));
    let v1 = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Subscription\nmetadata:\n  name: s1\nspec:\n  topic: {t1}\n  route: /orders\n  pubsubname: ps\n  metadata:\n    rawPayload: \"true\"\nscopes: [subs-decl, someone-else]\n"
    );
    let v2 = format!(
        "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: s2\nspec:\n  topic: {t2}\n  pubsubname: ps\n  deadLetterTopic: dead\n  routes:\n    rules:\n    - match: event.data.n == 5\n      path: /five\n    default: /rest\n"
    );
    let scoped_out = format!("apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: s3\nspec:\n  topic: {other}\n  pubsubname: ps\n  routes:\n    default: /x\nscopes: [someone-else]\n");
    let app = SubscriberApp::start(json!([])).await;
    let sc = SidecarBuilder::new("subs-decl")
        .file("ps.yaml", PUBSUB)
        .file("subs.yaml", &format!("{v1}---\n{v2}---\n{scoped_out}"))
        .args(&["--app-port", &app.port_arg()])
        .start()
        .await;
    assert_eq!(
        listed(&sc, &t1).await,
        json!({ "pubsubname": "ps", "topic": t1, "metadata": { "rawPayload": "true" }, "rules": [{ "path": "/orders" }], "deadLetterTopic": "", "type": "DECLARATIVE" })
    );
    assert_eq!(
        listed(&sc, &t2).await,
        json!({ "pubsubname": "ps", "topic": t2, "rules": [{ "match": "event.data.n == 5", "path": "/five" }, { "path": "/rest" }], "deadLetterTopic": "dead", "type": "DECLARATIVE" })
    );
    let m = metadata(&sc).await;
    assert!(m["subscriptions"].as_array().is_some_and(|s| s.iter().all(|s| s["topic"] != other)), "scoped to another app: {m}");
    let c = m["components"].as_array().and_then(|c| c.iter().find(|c| c["name"] == "ps").cloned()).unwrap_or_else(|| panic!("ps listed: {m}"));
    assert_eq!(c["type"], "pubsub.in-memory", "{c}");
    let mut grpc = sc.grpc().await;
    let g = grpc.get_metadata(rapr_proto::runtime::v1::GetMetadataRequest {}).await.expect("GetMetadata").into_inner();
    let s2 = g.subscriptions.iter().find(|s| s.topic == t2).unwrap_or_else(|| panic!("{t2} over gRPC: {g:?}"));
    assert_eq!(s2.r#type, rapr_proto::runtime::v1::PubsubSubscriptionType::Declarative as i32);
    let rules: Vec<_> = s2.rules.as_ref().map(|r| r.rules.iter().map(|r| (r.r#match.as_str(), r.path.as_str())).collect()).unwrap_or_default();
    assert_eq!(rules, vec![("event.data.n == 5", "/five"), ("", "/rest")]);
    assert_eq!(s2.dead_letter_topic, "dead");
}

#[tokio::test]
async fn a_bad_expression_rejects_that_subscription_naming_file_and_expression() {
    let (good, bad) = (unique("good"), unique("bad"));
    let bad_doc = format!(
        "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: broken\nspec:\n  topic: {bad}\n  pubsubname: ps\n  routes:\n    rules:\n    - match: event.type == (\n      path: /x\n    default: /d\n"
    );
    let good_doc = format!("apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: fine\nspec:\n  topic: {good}\n  pubsubname: ps\n  routes:\n    default: /d\n");
    let app = SubscriberApp::start(json!([])).await;
    let sc = SidecarBuilder::new("subs-badcel")
        .file("ps.yaml", PUBSUB)
        .file("broken.yaml", &bad_doc)
        .file("fine.yaml", &good_doc)
        .args(&["--app-port", &app.port_arg()])
        .allow_unhealthy()
        .start()
        .await;
    let m = metadata(&sc).await;
    let report = m["extended"]
        .as_object()
        .and_then(|e| e.iter().find(|(k, _)| k.starts_with("rapr.component.") && k.ends_with("broken.yaml")).map(|(_, v)| v.clone()))
        .unwrap_or_else(|| panic!("the rejected file is reported: {m}"));
    let report = report.as_str().unwrap_or_default();
    assert!(report.contains("broken") && report.contains("event.type == ("), "{report}");
    assert!(sc.logs().contains("event.type == ("), "the error log names the expression:\n{}", sc.logs());
    let r = sc.client.get(sc.url("/v1.0/healthz")).send().await.expect("healthz");
    assert_eq!(r.status().as_u16(), 500, "a resource that failed to load holds readiness, as for components");
    let r = sc.client.get(sc.url("/v1.0/healthz/outbound")).send().await.expect("outbound");
    assert_eq!(r.status().as_u16(), 204, "the sidecar keeps serving");
    listed(&sc, &good).await;
    let m = metadata(&sc).await;
    assert!(m["subscriptions"].as_array().is_some_and(|s| s.iter().all(|s| s["topic"] != bad)), "{m}");
}

#[tokio::test]
async fn an_unknown_pubsub_is_a_warning_and_the_others_run() {
    let (good, lost) = (unique("good"), unique("lost"));
    let docs = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Subscription\nmetadata:\n  name: lost\nspec:\n  topic: {lost}\n  route: /l\n  pubsubname: nope\n---\napiVersion: dapr.io/v1alpha1\nkind: Subscription\nmetadata:\n  name: fine\nspec:\n  topic: {good}\n  route: /g\n  pubsubname: ps\n"
    );
    let app = SubscriberApp::start(json!([])).await;
    let sc = SidecarBuilder::new("subs-unknown").file("ps.yaml", PUBSUB).file("subs.yaml", &docs).args(&["--app-port", &app.port_arg()]).start().await;
    listed(&sc, &good).await;
    eventually(Duration::from_secs(10), "a warning naming the unknown pub/sub", || async {
        let logs = sc.logs();
        logs.lines().any(|l| l.to_ascii_lowercase().contains("warn") && l.contains("pubsub=nope")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn programmatic_http_subscriptions_are_listed() {
    let (t1, t2) = (unique("p1"), unique("p2"));
    let app = SubscriberApp::start(json!([
        { "pubsubname": "ps", "topic": t1, "route": "/one", "metadata": { "rawPayload": "true" } },
        { "pubsubname": "ps", "topic": t2, "routes": { "rules": [{ "match": "event.type == 'a'", "path": "/a" }], "default": "/b" }, "deadLetterTopic": "dl" },
        { "pubsubname": "ps", "topic": "bad", "routes": { "rules": [{ "match": "event.type ==", "path": "/x" }] } }
    ]))
    .await;
    let sc = SidecarBuilder::new("subs-prog-http").file("ps.yaml", PUBSUB).args(&["--app-port", &app.port_arg()]).start().await;
    assert_eq!(
        listed(&sc, &t1).await,
        json!({ "pubsubname": "ps", "topic": t1, "metadata": { "rawPayload": "true" }, "rules": [{ "path": "/one" }], "deadLetterTopic": "", "type": "PROGRAMMATIC" })
    );
    assert_eq!(
        listed(&sc, &t2).await,
        json!({ "pubsubname": "ps", "topic": t2, "rules": [{ "match": "event.type == 'a'", "path": "/a" }, { "path": "/b" }], "deadLetterTopic": "dl", "type": "PROGRAMMATIC" })
    );
    let m = metadata(&sc).await;
    assert!(m["subscriptions"].as_array().is_some_and(|s| s.iter().all(|s| s["topic"] != "bad")), "a bad expression drops its entry: {m}");
    assert!(sc.logs().contains("event.type =="), "the rejected expression is logged:\n{}", sc.logs());
}

#[tokio::test]
async fn the_app_s_own_subscription_replaces_a_declared_one_of_its_topic() {
    let topic = unique("both");
    let app = SubscriberApp::start(json!([{ "pubsubname": "ps", "topic": topic, "route": "/app" }])).await;
    let decl = |name: &str, route: &str| format!("apiVersion: dapr.io/v1alpha1\nkind: Subscription\nmetadata:\n  name: {name}\nspec:\n  topic: {topic}\n  route: {route}\n  pubsubname: ps\n");
    let sc = SidecarBuilder::new("subs-both")
        .file("ps.yaml", PUBSUB)
        .file("subs.yaml", &format!("{}---\n{}", decl("d1", "/d1"), decl("d2", "/d2")))
        .args(&["--app-port", &app.port_arg()])
        .start()
        .await;
    assert_eq!(listed(&sc, &topic).await["type"], "PROGRAMMATIC");
    let m = metadata(&sc).await;
    let of_topic: Vec<_> = m["subscriptions"].as_array().map(|s| s.iter().filter(|s| s["topic"] == topic).cloned().collect()).unwrap_or_default();
    assert_eq!(of_topic, vec![json!({ "pubsubname": "ps", "topic": topic, "rules": [{ "path": "/app" }], "deadLetterTopic": "", "type": "PROGRAMMATIC" })]);
}

/// An HTTP app counting its `GET /dapr/subscribe` calls.
async fn counting_app() -> (u16, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let app = axum::Router::new().route(
        "/dapr/subscribe",
        axum::routing::get(move || {
            seen.fetch_add(1, Ordering::SeqCst);
            async { axum::Json(json!([])) }
        }),
    );
    let l = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("bind the app");
    let port = l.local_addr().expect("bound").port();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (port, calls)
}

#[tokio::test]
async fn without_a_pubsub_component_the_app_is_not_asked() {
    let (none_port, none_calls) = counting_app().await;
    let (ps_port, ps_calls) = counting_app().await;
    let _without = SidecarBuilder::new("subs-nopubsub").memory("store").args(&["--app-port", &none_port.to_string()]).start().await;
    // Started after the first: once this one has asked its app, the first had as long to.
    let _with = SidecarBuilder::new("subs-withpubsub").file("ps.yaml", PUBSUB).args(&["--app-port", &ps_port.to_string()]).start().await;
    eventually(Duration::from_secs(20), "the sidecar with a pub/sub to ask its app", || async { (ps_calls.load(Ordering::SeqCst) == 1).then_some(()) }).await;
    assert_eq!(none_calls.load(Ordering::SeqCst), 0, "no pub/sub component: the app is not asked (daprd)");
}

mod grpc_app {
    use rapr_proto::app::app_callback_server::{AppCallback, AppCallbackServer};
    use rapr_proto::app::{ListTopicSubscriptionsResponse, TopicRoutes, TopicRule, TopicSubscription};
    use rapr_proto::common::v1::{InvokeRequest, InvokeResponse};

    /// A gRPC app that subscribes to `topic` with one rule and a default.
    #[derive(Clone)]
    pub struct App {
        pub topic: String,
    }

    #[tonic::async_trait]
    impl AppCallback for App {
        async fn on_invoke(&self, _r: tonic::Request<InvokeRequest>) -> Result<tonic::Response<InvokeResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("no invocations"))
        }

        async fn list_topic_subscriptions(&self, _r: tonic::Request<()>) -> Result<tonic::Response<ListTopicSubscriptionsResponse>, tonic::Status> {
            Ok(tonic::Response::new(ListTopicSubscriptionsResponse {
                subscriptions: vec![TopicSubscription {
                    pubsub_name: "ps".into(),
                    topic: self.topic.clone(),
                    routes: Some(TopicRoutes { rules: vec![TopicRule { r#match: "event.data.n > 1".into(), path: "big".into() }], default: "small".into() }),
                    dead_letter_topic: "dl".into(),
                    ..Default::default()
                }],
            }))
        }

        async fn on_topic_event(&self, _r: tonic::Request<rapr_proto::app::TopicEventRequest>) -> Result<tonic::Response<rapr_proto::app::TopicEventResponse>, tonic::Status> {
            Ok(tonic::Response::new(rapr_proto::app::TopicEventResponse::default()))
        }

        async fn on_bulk_topic_event(&self, _r: tonic::Request<rapr_proto::app::TopicEventBulkRequest>) -> Result<tonic::Response<rapr_proto::app::TopicEventBulkResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("no bulk"))
        }
    }

    /// Serves the app on a free port.
    pub async fn serve(app: App) -> u16 {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("bind the gRPC app");
        let port = l.local_addr().expect("bound").port();
        let router = tonic::service::Routes::new(AppCallbackServer::new(app)).into_axum_router();
        tokio::spawn(async move {
            let _ = axum::serve(l, router).await;
        });
        port
    }
}

#[tokio::test]
async fn programmatic_grpc_subscriptions_are_listed() {
    let topic = unique("g");
    let port = grpc_app::serve(grpc_app::App { topic: topic.clone() }).await;
    let sc = SidecarBuilder::new("subs-prog-grpc").file("ps.yaml", PUBSUB).args(&["--app-port", &port.to_string(), "--app-protocol", "grpc"]).start().await;
    assert_eq!(
        listed(&sc, &topic).await,
        json!({ "pubsubname": "ps", "topic": topic, "rules": [{ "match": "event.data.n > 1", "path": "big" }, { "path": "small" }], "deadLetterTopic": "dl", "type": "PROGRAMMATIC" })
    );
}

/// A CloudEvent as a publisher's sidecar writes it, with `data` and `type`.
fn cloud_event(topic: &str, ce_type: &str, data: Value) -> Bytes {
    let ev = json!({
        "specversion": "1.0", "id": uuid::Uuid::new_v4().to_string(), "source": "subs-test", "type": ce_type,
        "datacontenttype": "application/json", "data": data, "topic": topic, "pubsubname": "ps",
    });
    Bytes::from(ev.to_string())
}

/// The events whose `data.n` is `n` that reached `route`.
fn with_n(app: &SubscriberApp, route: &str, n: i64) -> usize {
    app.received(route).iter().filter(|r| r.json().pointer("/data/n").and_then(Value::as_i64) == Some(n)).count()
}

/// Routing through the sidecar: events go into a shared `pubsub.sqlite` file straight from the
/// broker (the publish API is not under test here), the sidecar picks the route by CEL.
#[tokio::test]
async fn cel_routes_events_end_to_end() {
    let topic = unique("route");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("ps.db");
    let component = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: ps\nspec:\n  type: pubsub.sqlite\n  version: v1\n  metadata:\n  - name: connectionString\n    value: \"{}\"\n  - name: pollInterval\n    value: 50ms\n  - name: consumerID\n    value: subs-route\n",
        db.display()
    );
    let doc = format!(
        "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: routed\nspec:\n  topic: {topic}\n  pubsubname: ps\n  routes:\n    rules:\n    - match: event.data.n == 5\n      path: /five\n    - match: event.type == 'com.example.big' && event.data.n > 100.5\n      path: /big\n    default: /rest\n"
    );
    let app = SubscriberApp::start(json!([])).await;
    let _sc = SidecarBuilder::new("subs-route").file("ps.yaml", &component).file("sub.yaml", &doc).args(&["--app-port", &app.port_arg()]).start().await;
    let pairs: Vec<(String, String)> = [("connectionString", db.display().to_string()), ("pollInterval", "50ms".to_string())].into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let config = BrokerConfig::from_metadata(&mut ComponentMetadata::new("ps", &pairs)).expect("valid broker config");
    let broker = SqliteBroker::open("publisher", config).await.expect("open the shared file");
    let publish = |ce_type: &'static str, data: Value| {
        let req = PublishRequest { topic: topic.clone(), data: cloud_event(&topic, ce_type, data), content_type: Some("application/cloudevents+json".into()), ..Default::default() };
        let broker = &broker;
        async move { broker.publish(req).await.expect("publish") }
    };
    // The subscription runs once a probe (n = 0: the default route) comes through.
    eventually(Duration::from_secs(20), "the subscription to run", || async {
        if app.received("/rest").is_empty() {
            publish("probe", json!({ "n": 0 })).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (!app.received("/rest").is_empty()).then_some(())
    })
    .await;
    publish("com.example.small", json!({ "n": 5 })).await;
    publish("com.example.small", json!({ "n": 6 })).await;
    publish("com.example.big", json!({ "n": 101 })).await;
    publish("com.example.small", json!({ "n": 102 })).await;
    eventually(Duration::from_secs(20), "every event at its route", || async {
        (with_n(&app, "/five", 5) == 1 && with_n(&app, "/big", 101) == 1 && with_n(&app, "/rest", 6) == 1 && with_n(&app, "/rest", 102) == 1).then_some(())
    })
    .await;
    // Each went to exactly one route.
    for n in [5, 6, 101, 102] {
        let routes: usize = ["/five", "/big", "/rest"].iter().map(|r| with_n(&app, r, n)).sum();
        assert_eq!(routes, 1, "n = {n}");
    }
}
