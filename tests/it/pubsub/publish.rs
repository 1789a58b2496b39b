//! Publishing over HTTP and gRPC: envelopes, bulk, errors, scopes (issue 11 A).
//!
//! One sidecar with `pubsub.in-memory` components: `ps` (this app may publish only to topics
//! under its publishing scope) and `open` (no rules). Every error daprd answers on the publish
//! paths is checked for status, `errorCode` and ErrorInfo reason on both transports; the
//! envelope is checked end to end through a subscribing app.

use std::time::Duration;

use rapr_proto::runtime::v1 as pb;
use serde_json::{json, Value};
use tonic_types::StatusExt;

use super::app::SubscriberApp;
use crate::harness::private_server::{redis_server, PrivateServer};
use crate::harness::{eventually, Sidecar, SidecarBuilder};
use crate::telemetry::{metrics_port, sample, scrape};

const APP: &str = "publisher-app";

fn memory(name: &str, md: &[(&str, &str)]) -> String {
    let mut y = format!("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: pubsub.in-memory\n  version: v1\n  metadata:\n");
    for (k, v) in md {
        y.push_str(&format!("  - name: {k}\n    value: \"{v}\"\n"));
    }
    y
}

async fn sidecar(extra: impl FnOnce(SidecarBuilder) -> SidecarBuilder) -> Sidecar {
    let b = SidecarBuilder::new(APP)
        .file("ps.yaml", &memory("ps", &[("publishingScopes", &format!("{APP}=orders/eu,ok;other=x")), ("protectedTopics", "secret")]))
        .file("open.yaml", &memory("open", &[]));
    extra(b).start().await
}

async fn post(sc: &Sidecar, path: &str, ct: &str, body: &str) -> (u16, Value) {
    let r = sc.client.post(sc.url(path)).header("content-type", ct).body(body.to_string()).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn reason(body: &Value) -> &str {
    body["details"].as_array().and_then(|d| d.iter().find(|x| x["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")).and_then(|x| x["reason"].as_str()).unwrap_or_default()
}

#[tokio::test]
async fn http_errors_as_daprd() {
    let sc = sidecar(|b| b).await;
    let cases: [(&str, &str, &str, u16, &str, &str); 6] = [
        ("/v1.0/publish/nope/t", "text/plain", "x", 404, "ERR_PUBSUB_NOT_FOUND", "DAPR_PUBSUB_NOT_FOUND"),
        ("/v1.0/publish/ps/", "text/plain", "x", 404, "ERR_TOPIC_NAME_EMPTY", "DAPR_PUBSUB_TOPIC_NAME_EMPTY"),
        ("/v1.0/publish/ps/ok?metadata.rawPayload=maybe", "text/plain", "x", 400, "ERR_PUBSUB_REQUEST_METADATA", "DAPR_PUBSUB_METADATA_DESERIALIZATION"),
        ("/v1.0/publish/ps/ok", "application/cloudevents+json", "[1]", 500, "ERR_PUBSUB_CLOUD_EVENTS_SER", "DAPR_PUBSUB_CLOUD_EVENT_CREATION"),
        ("/v1.0/publish/ps/orders/us", "text/plain", "x", 403, "ERR_PUBSUB_FORBIDDEN", "DAPR_PUBSUB_FORBIDDEN"),
        ("/v1.0/publish/ps/secret", "text/plain", "x", 403, "ERR_PUBSUB_FORBIDDEN", "DAPR_PUBSUB_FORBIDDEN"),
    ];
    for (path, ct, body, status, code, why) in cases {
        let (s, b) = post(&sc, path, ct, body).await;
        assert_eq!((s, b["errorCode"].as_str().unwrap_or_default(), reason(&b)), (status, code, why), "{path}: {b}");
    }
    let (_, b) = post(&sc, "/v1.0/publish/ps/orders/us?metadata.k=v", "text/plain", "x").await;
    assert_eq!(b["message"], format!("topic orders/us is not allowed for app id {APP}"));
    let (_, b) = post(&sc, "/v1.0/publish/nope/t?metadata.k=v", "text/plain", "x").await;
    assert_eq!(b["details"][0]["metadata"]["k"], "v", "HTTP not-found carries the request metadata: {b}");
    // A topic with `/`, within the scope; PUT as POST.
    assert_eq!(post(&sc, "/v1.0/publish/ps/orders/eu", "application/json", r#"{"a":1}"#).await.0, 204);
    let put = sc.client.put(sc.url("/v1.0/publish/open/a/b/c")).body("x").send().await.unwrap();
    assert_eq!(put.status().as_u16(), 204);
    // daprd's egress metrics count what reached the broker; refused requests are not counted.
    let text = scrape(&sc, metrics_port(&sc).await).await;
    assert_eq!(sample(&text, "dapr_component_pubsub_egress_count", &[("component", "ps"), ("topic", "orders/eu"), ("success", "true")]), Some(1.0), "{text}");
    assert_eq!(sample(&text, "dapr_component_pubsub_egress_count", &[("topic", "orders/us")]), None, "{text}");
    assert!(sample(&text, "dapr_component_pubsub_egress_latencies_count", &[("component", "open"), ("topic", "a/b/c")]).is_some(), "{text}");
}

#[tokio::test]
async fn http_bulk_as_daprd() {
    let sc = sidecar(|b| b).await;
    for base in ["/v1.0-alpha1/publish/bulk", "/v1.0/publish/bulk"] {
        let ok = json!([
            {"entryId": "1", "event": {"a": 1}, "contentType": "application/json"},
            {"entryId": "2", "event": "text", "contentType": "text/plain"},
            {"entryId": "3", "event": "AAE=", "contentType": "application/octet-stream", "metadata": {"k": "v"}}
        ]);
        assert_eq!(post(&sc, &format!("{base}/open/orders/eu"), "application/json", &ok.to_string()).await.0, 204, "{base}");
        let cases = [
            ("not json", 400, "DAPR_PUBSUB_UNMARSHAL_EVENTS"),
            (r#"[{"entryId":"1","event":"x","contentType":"text/plain"},{"entryId":"1","event":"y","contentType":"text/plain"}]"#, 400, "DAPR_PUBSUB_MARSHAL_EVENTS"),
            (r#"[{"event":"x","contentType":"text/plain"}]"#, 400, "DAPR_PUBSUB_MARSHAL_EVENTS"),
            (r#"[{"entryId":"1","event":{"a":1},"contentType":"text/plain"}]"#, 400, "DAPR_PUBSUB_MARSHAL_ENVELOPE"),
            (r#"[{"entryId":"1","event":"!!","contentType":"application/octet-stream"}]"#, 400, "DAPR_PUBSUB_MARSHAL_ENVELOPE"),
        ];
        for (body, status, why) in cases {
            let (s, b) = post(&sc, &format!("{base}/open/t"), "application/json", body).await;
            assert_eq!((s, b["errorCode"].as_str().unwrap_or_default(), reason(&b)), (status, "ERR_PUBSUB_EVENTS_SER", why), "{body}: {b}");
        }
        let (s, b) = post(&sc, &format!("{base}/ps/orders/us"), "application/json", &ok.to_string()).await;
        assert_eq!((s, b["errorCode"].as_str()), (403, Some("ERR_PUBSUB_FORBIDDEN")), "{b}");
        let (s, b) = post(&sc, &format!("{base}/nope/t"), "application/json", "[]").await;
        assert_eq!((s, b["errorCode"].as_str()), (404, Some("ERR_PUBSUB_NOT_FOUND")), "{b}");
    }
    let text = scrape(&sc, metrics_port(&sc).await).await;
    assert_eq!(sample(&text, "dapr_component_pubsub_egress_bulk_count", &[("component", "open"), ("topic", "orders/eu"), ("success", "true")]), Some(2.0), "{text}");
}

/// A bulk publish the broker fails: daprd's 500 with the failed entries and `errorCode` as the
/// body, the same JSON in a `metadata.responseData` header and the error in `metadata.error`
/// (`onBulkPublish` sets both with `setResponseMetadataHeaders`; Go sends them canonicalized as
/// `Metadata.responsedata` / `Metadata.error`, names being case-insensitive).
#[tokio::test]
async fn http_bulk_failure_as_daprd() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::harness::free_port();
    let mut server = PrivateServer::started("the private redis-server", port, redis_server(port, dir.path(), false)).await;
    let host = format!("127.0.0.1:{port}");
    let md = [("redisHost", host.as_str()), ("dialTimeout", "300"), ("readTimeout", "1s")];
    let sc = SidecarBuilder::new(APP).file("down.yaml", &super::component_yaml("down", "pubsub.redis", "  initTimeout: 2s\n", &md)).start().await;
    server.kill();
    let entries = json!([
        {"entryId": "a", "event": {"n": 1}, "contentType": "application/json"},
        {"entryId": "b", "event": "text", "contentType": "text/plain"}
    ]);
    for base in ["/v1.0-alpha1/publish/bulk", "/v1.0/publish/bulk"] {
        let r = sc.client.post(sc.url(&format!("{base}/down/orders"))).json(&entries).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 500, "{base}");
        let h = r.headers().clone();
        assert_eq!(h.get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
        let text = r.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["errorCode"], "ERR_PUBSUB_PUBLISH_MESSAGE", "{body}");
        let mut ids: Vec<&str> = body["failedEntries"].as_array().unwrap().iter().map(|e| e["entryId"].as_str().unwrap()).collect();
        ids.sort();
        assert_eq!(ids, ["a", "b"], "{body}");
        assert!(body["failedEntries"].as_array().unwrap().iter().all(|e| !e["error"].as_str().unwrap_or_default().is_empty()), "each entry says why: {body}");
        assert_eq!(h.get("metadata.responsedata").and_then(|v| v.to_str().ok()), Some(text.as_str()), "the body again in a header");
        let error = h.get("metadata.error").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(error.starts_with("api error: code = Internal desc = error when publishing to topic orders in pubsub down: "), "{error}");
    }
}

fn publish_req(pubsub: &str, topic: &str, md: &[(&str, &str)]) -> pb::PublishEventRequest {
    pb::PublishEventRequest {
        pubsub_name: pubsub.into(),
        topic: topic.into(),
        data: b"x".to_vec(),
        data_content_type: "text/plain".into(),
        metadata: md.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

#[tokio::test]
#[allow(deprecated)] // reason: BulkPublishEventAlpha1 is deprecated by Dapr and still served; the test calls it.
async fn grpc_errors_as_daprd() {
    let sc = sidecar(|b| b).await;
    let mut c = sc.grpc().await;
    let cases = [
        (publish_req("", "t", &[]), tonic::Code::InvalidArgument, "DAPR_PUBSUB_NAME_EMPTY"),
        (publish_req("nope", "t", &[]), tonic::Code::InvalidArgument, "DAPR_PUBSUB_NOT_FOUND"),
        (publish_req("ps", "", &[]), tonic::Code::InvalidArgument, "DAPR_PUBSUB_TOPIC_NAME_EMPTY"),
        (publish_req("ps", "ok", &[("rawPayload", "maybe")]), tonic::Code::InvalidArgument, "DAPR_PUBSUB_METADATA_DESERIALIZATION"),
        (publish_req("ps", "orders/us", &[]), tonic::Code::PermissionDenied, "DAPR_PUBSUB_FORBIDDEN"),
    ];
    for (req, code, why) in cases {
        let st = c.publish_event(req.clone()).await.unwrap_err();
        assert_eq!((st.code(), st.get_details_error_info().map(|i| i.reason).unwrap_or_default().as_str()), (code, why), "{req:?}: {st:?}");
    }
    let mut bad_ce = publish_req("ps", "ok", &[]);
    bad_ce.data_content_type = "application/cloudevents+json".into();
    let st = c.publish_event(bad_ce).await.unwrap_err();
    assert_eq!((st.code(), st.get_details_error_info().unwrap().reason.as_str()), (tonic::Code::InvalidArgument, "DAPR_PUBSUB_CLOUD_EVENT_CREATION"));
    c.publish_event(publish_req("ps", "orders/eu", &[])).await.unwrap();
    // Bulk: both methods; a repeated entry id is refused, good entries publish.
    let entry = |id: &str| pb::BulkPublishRequestEntry { entry_id: id.into(), event: b"e".to_vec(), content_type: "text/plain".into(), metadata: Default::default() };
    let bulk = |entries: Vec<pb::BulkPublishRequestEntry>| pb::BulkPublishRequest { pubsub_name: "open".into(), topic: "t/x".into(), entries, metadata: Default::default() };
    let st = c.bulk_publish_event_alpha1(bulk(vec![entry("1"), entry("1")])).await.unwrap_err();
    assert_eq!((st.code(), st.get_details_error_info().unwrap().reason.as_str()), (tonic::Code::InvalidArgument, "DAPR_PUBSUB_MARSHAL_EVENTS"));
    let ok = c.bulk_publish_event(bulk(vec![entry("1"), entry("2")])).await.unwrap().into_inner();
    assert!(ok.failed_entries.is_empty());
    c.bulk_publish_event_alpha1(bulk(vec![entry("1")])).await.unwrap();
}

#[tokio::test]
async fn the_envelope_reaches_the_app_as_daprd_builds_it() {
    let topic = format!("env/{}", uuid::Uuid::new_v4().simple());
    let app = SubscriberApp::start(json!([{"pubsubname": "open", "topic": topic, "route": "/ev"}])).await;
    let sc = sidecar(|b| b.args(&["--app-port", &app.port_arg()])).await;
    let url = sc.url(&format!("/v1.0/publish/open/{topic}?metadata.cloudevent.subject=subj&metadata.ttlInSeconds=60"));
    // The in-memory bus keeps nothing: publish until the subscription runs.
    let got = eventually(Duration::from_secs(20), "the event at the app", || async {
        let r = sc.client.post(&url).header("content-type", "application/json").header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").body(r#"{"n":5}"#).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 204);
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.received("/ev").into_iter().next()
    })
    .await;
    assert_eq!(got.content_type, "application/cloudevents+json");
    let ev = got.json();
    assert_eq!(ev["data"], json!({"n": 5}));
    assert_eq!((ev["topic"].as_str(), ev["pubsubname"].as_str(), ev["source"].as_str()), (Some(topic.as_str()), Some("open"), Some(APP)));
    assert_eq!((ev["type"].as_str(), ev["specversion"].as_str(), ev["datacontenttype"].as_str()), (Some("com.dapr.event.sent"), Some("1.0"), Some("application/json")));
    assert_eq!(ev["subject"], "subj");
    assert!(ev["expiration"].is_string() && ev["time"].is_string() && ev["id"].is_string(), "{ev}");
    let tp = ev["traceparent"].as_str().unwrap_or_default();
    assert!(tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"), "the request's trace: {ev}");
    assert_eq!(ev["traceid"], ev["traceparent"]);
}
