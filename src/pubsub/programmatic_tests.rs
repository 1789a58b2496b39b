//! Tests of `programmatic`: daprd's JSON shapes, and `load` against a real HTTP app on a local
//! port (answers, 404, 500, bad JSON, and an app that starts late).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use rapr_proto::app::{BulkSubscribeConfig, TopicRoutes, TopicRule};

use super::*;
use crate::invoke::app_channel::AppTransport;

fn rules(s: &Subscription) -> Vec<(&str, &str)> {
    s.rules.iter().map(|r| (r.match_expr.as_str(), r.path.as_str())).collect()
}

#[test]
fn http_shapes_as_daprd_reads_them() {
    let body = br#"[
        {"pubsubname":"ps","topic":"a","route":"/a","deadLetterTopic":"dead","metadata":{"rawPayload":"true"},
         "bulkSubscribe":{"enabled":true,"maxMessagesCount":7}},
        {"pubsubname":"ps","topic":"b","route":"/ignored","routes":{"rules":[{"match":" event.type == 'x' ","path":"/x"}],"default":"/b"}},
        {"PubSubName":"ps","Topic":"c","routes":{"rules":[{"match":"event.type == 'y'","path":"/y"}]}},
        {"pubsubname":"ps","topic":"noroute"}
    ]"#;
    let subs = from_http(body).expect("parses");
    assert_eq!(subs.len(), 3, "the entry without a route is dropped");
    let a = &subs[0];
    assert_eq!((a.pubsub.as_str(), a.topic.as_str()), ("ps", "a"));
    assert_eq!(rules(a), vec![("", "/a")]);
    assert_eq!(a.dead_letter_topic.as_deref(), Some("dead"));
    assert!(a.raw_payload());
    assert_eq!(a.bulk, BulkSubscribe { enabled: true, max_messages_count: 7, max_await_duration_ms: 0 });
    assert_eq!(a.kind, SubscriptionKind::Programmatic);
    assert_eq!(rules(&subs[1]), vec![("event.type == 'x'", "/x"), ("", "/b")], "routes.default wins over route");
    assert_eq!(subs[2].pubsub, "ps", "Go matches field names case-insensitively");
    assert_eq!(rules(&subs[2]), vec![("event.type == 'y'", "/y")]);
}

#[test]
fn empty_and_null_bodies_are_no_subscriptions_and_bad_shapes_are_errors() {
    assert!(from_http(b"").expect("empty").is_empty());
    assert!(from_http(b" \n").expect("blank").is_empty());
    assert!(from_http(b"null").expect("null").is_empty());
    assert!(from_http(b"[]").expect("[]").is_empty());
    for bad in [&b"{"[..], b"{}", b"[1]", br#"[{"topic":5}]"#, br#"[{"topic":"t","route":"/r","metadata":{"n":1}}]"#] {
        assert!(from_http(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn grpc_shapes_as_daprd_reads_them() {
    let resp = ListTopicSubscriptionsResponse {
        subscriptions: vec![
            TopicSubscription { pubsub_name: "ps".into(), topic: "plain".into(), ..Default::default() },
            TopicSubscription {
                pubsub_name: "ps".into(),
                topic: "routed".into(),
                routes: Some(TopicRoutes { rules: vec![TopicRule { r#match: "event.data.n == 5".into(), path: "five".into() }], default: "rest".into() }),
                dead_letter_topic: "dl".into(),
                bulk_subscribe: Some(BulkSubscribeConfig { enabled: true, max_messages_count: 3, max_await_duration_ms: 40 }),
                metadata: HashMap::from([("k".to_string(), "v".to_string())]),
            },
        ],
    };
    let subs = from_grpc(resp);
    assert_eq!(rules(&subs[0]), vec![("", "")], "no routes: the empty default path");
    assert_eq!(rules(&subs[1]), vec![("event.data.n == 5", "five"), ("", "rest")]);
    assert_eq!(subs[1].dead_letter_topic.as_deref(), Some("dl"));
    assert_eq!(subs[1].bulk, BulkSubscribe { enabled: true, max_messages_count: 3, max_await_duration_ms: 40 });
    assert_eq!(subs[1].metadata.get("k").map(String::as_str), Some("v"));
}

/// Serves `app` on `port` (127.0.0.1).
async fn serve(port: u16, app: Router) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the test app");
    tokio::spawn(async move { axum::serve(listener, app).await });
}

fn channel(port: u16) -> AppChannel {
    AppChannel::new(AppTransport::parse("http").expect("http"), "127.0.0.1", port, -1, None).expect("channel")
}

#[tokio::test]
async fn load_asks_the_http_app_with_its_app_id_and_drops_a_bad_expression_only() {
    let port = crate::net_ports::free_port().expect("port");
    let app = Router::new().route(
        "/dapr/subscribe",
        get(|headers: http::HeaderMap| async move {
            let id = headers.get("dapr-app-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            format!(
                r#"[{{"pubsubname":"ps","topic":"{id}","route":"/ok"}},
                    {{"pubsubname":"ps","topic":"bad","routes":{{"rules":[{{"match":"event.type ==","path":"/x"}}]}}}}]"#
            )
        }),
    );
    serve(port, app).await;
    let subs = load(&channel(port), "myapp").await;
    assert_eq!(subs.len(), 1, "{subs:?}");
    assert_eq!(subs[0].topic, "myapp", "dapr-app-id is sent");
}

#[tokio::test]
async fn load_treats_404_500_and_bad_json_as_none() {
    for (status, body) in [(404u16, ""), (500, r#"[{"pubsubname":"ps","topic":"t","route":"/r"}]"#), (200, "{not json")] {
        let port = crate::net_ports::free_port().expect("port");
        let app = Router::new().route(
            "/dapr/subscribe",
            get(move || async move { (StatusCode::from_u16(status).expect("status"), body) }),
        );
        serve(port, app).await;
        assert!(load(&channel(port), "a").await.is_empty(), "status {status}");
    }
}

#[tokio::test]
async fn load_retries_until_the_app_listens() {
    let port = crate::net_ports::free_port().expect("port");
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let app = Router::new().route(
        "/dapr/subscribe",
        get(move || {
            seen.fetch_add(1, Ordering::SeqCst);
            async { r#"[{"pubsubname":"ps","topic":"late","route":"/r"}]"# }
        }),
    );
    // Nothing listens for the first attempt; the app comes up before the second retry.
    let started = std::time::Instant::now();
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        serve(port, app).await;
    });
    let subs = load(&channel(port), "a").await;
    late.await.expect("server task");
    assert_eq!(subs.len(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(started.elapsed() >= Duration::from_millis(1200), "answered on a retry: {:?}", started.elapsed());
}

#[tokio::test]
async fn load_gives_up_after_daprd_s_retries() {
    let port = crate::net_ports::free_port().expect("port");
    let started = std::time::Instant::now();
    assert!(load(&channel(port), "a").await.is_empty());
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(2200) && took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn merge_keeps_one_subscription_per_topic_as_daprd() {
    let decl = |name: &str, topic: &str| {
        let mut s = Subscription::new(SubscriptionKind::Declarative, "ps", topic, "/d");
        s.name = name.into();
        s
    };
    let prog = |topic: &str, path: &str| Subscription::new(SubscriptionKind::Programmatic, "ps", topic, path);
    let mut other_ps = decl("other", "a");
    other_ps.pubsub = "ps2".into();
    let merged = merge(
        vec![decl("first", "a"), decl("second", "a"), decl("b", "b"), other_ps],
        vec![prog("b", "/p1"), prog("c", "/c"), prog("b", "/p2")],
    );
    let seen: Vec<_> = merged.iter().map(|s| (s.pubsub.as_str(), s.topic.as_str(), s.kind, s.name.as_str(), s.rules[0].path.as_str())).collect();
    assert_eq!(
        seen,
        vec![
            ("ps", "a", SubscriptionKind::Declarative, "first", "/d"),
            ("ps", "b", SubscriptionKind::Programmatic, "", "/p2"),
            ("ps2", "a", SubscriptionKind::Declarative, "other", "/d"),
            ("ps", "c", SubscriptionKind::Programmatic, "", "/c"),
        ]
    );
}

/// A gRPC app whose `ListTopicSubscriptions` answers `answer` and counts its calls.
#[derive(Clone)]
struct GrpcApp {
    answer: Result<ListTopicSubscriptionsResponse, tonic::Code>,
    calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl rapr_proto::app::app_callback_server::AppCallback for GrpcApp {
    async fn on_invoke(&self, _r: tonic::Request<rapr_proto::common::v1::InvokeRequest>) -> Result<tonic::Response<rapr_proto::common::v1::InvokeResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not here"))
    }
    async fn list_topic_subscriptions(&self, _r: tonic::Request<()>) -> Result<tonic::Response<ListTopicSubscriptionsResponse>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.answer.clone().map(tonic::Response::new).map_err(|c| tonic::Status::new(c, "as programmed"))
    }
    async fn on_topic_event(&self, _r: tonic::Request<rapr_proto::app::TopicEventRequest>) -> Result<tonic::Response<rapr_proto::app::TopicEventResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not here"))
    }
    async fn on_bulk_topic_event(&self, _r: tonic::Request<rapr_proto::app::TopicEventBulkRequest>) -> Result<tonic::Response<rapr_proto::app::TopicEventBulkResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not here"))
    }
}

/// `load` against a gRPC app answering `answer`: the subscriptions and how many calls it took.
async fn load_grpc(answer: Result<ListTopicSubscriptionsResponse, tonic::Code>) -> (Vec<Subscription>, usize) {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = GrpcApp { answer, calls: calls.clone() };
    let port = crate::net_ports::free_port().expect("port");
    serve(port, tonic::service::Routes::new(rapr_proto::app::app_callback_server::AppCallbackServer::new(app)).into_axum_router()).await;
    let channel = AppChannel::new(AppTransport::parse("grpc").expect("grpc"), "127.0.0.1", port, -1, None).expect("channel");
    let subs = load(&channel, "a").await;
    (subs, calls.load(Ordering::SeqCst))
}

#[tokio::test]
async fn load_asks_a_grpc_app_and_unimplemented_is_none_without_retries() {
    let one = ListTopicSubscriptionsResponse { subscriptions: vec![TopicSubscription { pubsub_name: "ps".into(), topic: "t".into(), ..Default::default() }] };
    let (subs, calls) = load_grpc(Ok(one)).await;
    assert_eq!((subs.len(), calls), (1, 1));
    assert_eq!(subs[0].kind, SubscriptionKind::Programmatic);
    let (subs, calls) = load_grpc(Err(tonic::Code::Unimplemented)).await;
    assert_eq!((subs.len(), calls), (0, 1), "Unimplemented: no subscriptions, not retried");
    let (subs, calls) = load_grpc(Err(tonic::Code::Unavailable)).await;
    assert_eq!((subs.len(), calls), (0, 4), "other errors: daprd's three retries, then none");
}
