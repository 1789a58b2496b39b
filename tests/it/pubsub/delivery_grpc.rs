//! Delivery to a gRPC app (`AppCallback.OnTopicEvent`): the request as daprd fills it, and the
//! answers SUCCESS, DROP (to the dead-letter topic) and `Unimplemented` (acknowledged, no dead
//! letter, as daprd), over `pubsub.sqlite` with declarative subscriptions; and `OnBulkTopicEvent`
//! for a `bulkSubscribe` subscription, each entry settled by its own status.

// reason: the app is a stand-in for a user's program, not a rapr process: its handler and the test read
// the same records, which a lock keeps simple.
#![allow(clippy::disallowed_types)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rapr_proto::app::app_callback_server::{AppCallback, AppCallbackServer};
use rapr_proto::app::{ListTopicSubscriptionsResponse, TopicEventBulkRequest, TopicEventBulkResponse, TopicEventRequest, TopicEventResponse};
use rapr_proto::common::v1::{InvokeRequest, InvokeResponse};
use serde_json::{json, Value};
use tonic::{Request, Response, Status};

use super::delivery::{publish, sidecar_with, unique, Broker};
use crate::harness::eventually;

const WAIT: Duration = Duration::from_secs(20);

/// One event as the app got it, with the call's metadata.
type Got = (TopicEventRequest, HashMap<String, String>);

/// One bulk request as the app got it: its path and the `n` of its entries.
type GotBulk = (String, Vec<i64>);

#[derive(Clone, Default)]
struct App {
    got: Arc<Mutex<Vec<Got>>>,
    bulk: Arc<Mutex<Vec<GotBulk>>>,
}

/// `data.n` of a bulk entry, whichever form the event takes.
fn entry_n(e: &rapr_proto::app::TopicEventBulkRequestEntry) -> Option<i64> {
    use rapr_proto::app::topic_event_bulk_request_entry::Event;
    let data: Value = match e.event.as_ref()? {
        Event::CloudEvent(ce) => serde_json::from_slice(&ce.data).ok()?,
        Event::Bytes(b) => serde_json::from_slice::<Value>(b).ok()?.get("data").cloned()?,
    };
    data["n"].as_i64()
}

impl App {
    fn on(&self, path: &str) -> Vec<TopicEventRequest> {
        self.got.lock().unwrap().iter().filter(|(r, _)| r.path == path).map(|(r, _)| r.clone()).collect()
    }
    fn with_n(&self, path: &str, n: i64) -> usize {
        self.on(path).iter().filter(|r| serde_json::from_slice::<Value>(&r.data).ok().and_then(|v| v["n"].as_i64()) == Some(n)).count()
    }
}

#[tonic::async_trait]
impl AppCallback for App {
    async fn on_invoke(&self, _r: Request<InvokeRequest>) -> Result<Response<InvokeResponse>, Status> {
        Err(Status::unimplemented("no invocation"))
    }
    async fn list_topic_subscriptions(&self, _r: Request<()>) -> Result<Response<ListTopicSubscriptionsResponse>, Status> {
        Ok(Response::new(ListTopicSubscriptionsResponse::default()))
    }
    async fn on_topic_event(&self, r: Request<TopicEventRequest>) -> Result<Response<TopicEventResponse>, Status> {
        let md = r.metadata().iter().filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) => Some((k.as_str().to_string(), v.to_str().ok()?.to_string())),
            _ => None,
        });
        let md: HashMap<String, String> = md.collect();
        let req = r.into_inner();
        let path = req.path.clone();
        self.got.lock().unwrap().push((req, md));
        match path.as_str() {
            "/drop" => Ok(Response::new(TopicEventResponse { status: 2 })),
            "/unimplemented" => Err(Status::unimplemented("not here")),
            _ => Ok(Response::new(TopicEventResponse { status: 0 })),
        }
    }
    async fn on_bulk_topic_event(&self, r: Request<TopicEventBulkRequest>) -> Result<Response<TopicEventBulkResponse>, Status> {
        let req = r.into_inner();
        let ns: Vec<i64> = req.entries.iter().filter_map(entry_n).collect();
        self.bulk.lock().unwrap().push((req.path.clone(), ns));
        // Even n: SUCCESS (0); odd n: DROP (2).
        let statuses = req
            .entries
            .iter()
            .map(|e| rapr_proto::app::TopicEventBulkResponseEntry { entry_id: e.entry_id.clone(), status: if entry_n(e).unwrap_or(0) % 2 == 0 { 0 } else { 2 } })
            .collect();
        Ok(Response::new(TopicEventBulkResponse { statuses }))
    }
}

#[tokio::test]
async fn grpc_app_gets_topic_events_and_its_answers_settle_them_as_daprd() {
    let (ok, drop, unimpl, dead) = (unique("g-ok"), unique("g-drop"), unique("g-unimpl"), unique("g-dead"));
    let app = App::default();
    let port = serve(&app).await;
    let broker = Broker::open().await;
    let subs = [(ok.as_str(), "/ok", None), (drop.as_str(), "/drop", Some(dead.as_str())), (unimpl.as_str(), "/unimplemented", Some(dead.as_str())), (dead.as_str(), "/dead", None)];
    let _sc = sidecar_with("deliv-grpc", &port.to_string(), &broker, &[], &subs, |b| b.args(&["--app-protocol", "grpc"])).await;
    eventually(WAIT, "the first event", || async {
        if app.on("/ok").is_empty() {
            publish(&broker, &ok, json!({"n": 1})).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (!app.on("/ok").is_empty()).then_some(())
    })
    .await;
    publish(&broker, &drop, json!({"n": 2})).await;
    publish(&broker, &unimpl, json!({"n": 3})).await;
    eventually(WAIT, "the dropped event in the dead-letter topic and the unimplemented one delivered", || async {
        (app.with_n("/dead", 2) == 1 && app.with_n("/unimplemented", 3) == 1).then_some(())
    })
    .await;
    let first = app.on("/ok").remove(0);
    assert_eq!(first.topic, ok);
    assert_eq!(first.pubsub_name, "ps");
    assert_eq!(first.spec_version, "1.0");
    assert_eq!(first.data_content_type, "application/json");
    assert!(!first.id.is_empty());
    let ext = first.extensions.expect("extensions");
    assert!(ext.fields.contains_key("topic") && ext.fields.contains_key("pubsubname"), "{ext:?}");
    let md = app.got.lock().unwrap()[0].1.clone();
    assert_eq!(md.get("pubsubname").map(String::as_str), Some("ps"), "{md:?}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(app.with_n("/drop", 2), 1, "acknowledged after the dead-letter publish");
    assert_eq!(app.with_n("/unimplemented", 3), 1, "Unimplemented is acknowledged");
    assert_eq!(app.with_n("/dead", 3), 0, "and not dead-lettered (daprd)");
}

async fn serve(app: &App) -> u16 {
    let l = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    let router = tonic::service::Routes::new(AppCallbackServer::new(app.clone())).into_axum_router();
    tokio::spawn(async move { axum::serve(l, router).await });
    port
}

#[tokio::test]
async fn grpc_app_gets_bulk_events_and_each_entry_is_settled_by_its_status() {
    let (topic, dead) = (unique("g-bulk"), unique("g-bulk-dead"));
    let app = App::default();
    let port = serve(&app).await;
    let broker = Broker::open().await;
    let bulk = format!("apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: gbulk\nspec:\n  pubsubname: ps\n  topic: {topic}\n  routes:\n    default: /bulk\n  deadLetterTopic: {dead}\n  bulkSubscribe:\n    enabled: true\n    maxMessagesCount: 4\n    maxAwaitDurationMs: 300\n");
    let subs = [(dead.as_str(), "/dead", None)];
    let _sc = sidecar_with("deliv-grpc-bulk", &port.to_string(), &broker, &[], &subs, |b| b.args(&["--app-protocol", "grpc"]).file("bulk.yaml", &bulk)).await;
    eventually(WAIT, "the first bulk request", || async {
        if app.bulk.lock().unwrap().is_empty() {
            publish(&broker, &topic, json!({"n": 0})).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        (!app.bulk.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    for n in 1..=6 {
        publish(&broker, &topic, json!({"n": n})).await;
    }
    eventually(WAIT, "the odd (dropped) entries in the dead-letter topic", || async { [1, 3, 5].iter().all(|n| app.with_n("/dead", *n) == 1).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let seen: Vec<i64> = app.bulk.lock().unwrap().iter().filter(|(p, _)| p == "/bulk").flat_map(|(_, ns)| ns.clone()).collect();
    for n in 1..=6 {
        assert_eq!(seen.iter().filter(|x| **x == n).count(), 1, "entry {n} delivered once in bulk and settled: {seen:?}");
    }
    assert_eq!(app.with_n("/dead", 2) + app.with_n("/dead", 4) + app.with_n("/dead", 6), 0, "SUCCESS entries are not dead-lettered");
}
