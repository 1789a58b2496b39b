//! Zipkin export of real sidecars, with the Configuration `dapr init` writes (`samplingRate: "1"`,
//! `zipkin.endpointAddress`): an app invoked through two sidecars, over HTTP and over gRPC, and a
//! Zipkin v2 receiver run by the test that checks what daprd's exporter would have sent: span
//! names, kinds, service names, one trace id, and the caller sidecar's span as the parent of the
//! target sidecar's, itself the parent the app sees. Also what daprd's middleware writes back
//! (`traceparent` on HTTP answers, `grpc-trace-bin` on gRPC answers, read in preference to
//! `traceparent`), the pub/sub delivery span, and `samplingRate: "0"` switching tracing off.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::IntoResponse;
use axum::Router;
use rapr_proto::common::v1::{http_extension::Verb, HttpExtension, InvokeRequest};
use rapr_proto::runtime::v1::{GetStateRequest, InvokeServiceRequest};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::harness::{free_port, Sidecar, SidecarBuilder};

/// An app answering every call with the `traceparent` it received.
async fn traceparent_app() -> u16 {
    async fn echo(req: Request) -> impl IntoResponse {
        axum::Json(json!({ "traceparent": req.headers().get("traceparent").and_then(|v| v.to_str().ok()) }))
    }
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, Router::new().fallback(echo)).await.unwrap() });
    port
}

/// A Zipkin collector: every `POST /api/v2/spans` JSON array is forwarded span by span; the answer
/// is Zipkin's 202.
async fn zipkin_receiver() -> (u16, mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    async fn spans(State(tx): State<mpsc::UnboundedSender<Value>>, req: Request) -> impl IntoResponse {
        let ct = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let body = axum::body::to_bytes(req.into_body(), usize::MAX).await.unwrap();
        match serde_json::from_slice::<Vec<Value>>(&body) {
            Ok(list) if ct == "application/json" => {
                for s in list {
                    let _ = tx.send(s);
                }
                axum::http::StatusCode::ACCEPTED
            }
            _ => axum::http::StatusCode::BAD_REQUEST,
        }
    }
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let app = Router::new().route("/api/v2/spans", axum::routing::post(spans)).with_state(tx);
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (port, rx)
}

/// Receives spans into `got` until one of `trace_id` from each of `services` is there.
async fn spans_of(rx: &mut mpsc::UnboundedReceiver<Value>, got: &mut Vec<Value>, trace_id: &str, services: &[&str], sidecars: &[&Sidecar]) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ours: Vec<Value> = got.iter().filter(|s| s["traceId"] == trace_id).cloned().collect();
        if services.iter().all(|svc| ours.iter().any(|s| s["localEndpoint"]["serviceName"] == *svc)) {
            return ours;
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(s)) => got.push(s),
            _ => panic!("spans of {services:?} for {trace_id} did not arrive; got {got:#?}\n{}", sidecars.iter().map(|s| s.logs()).collect::<Vec<_>>().join("\n")),
        }
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn of<'a>(spans: &'a [Value], service: &str) -> &'a Value {
    let mine: Vec<&Value> = spans.iter().filter(|s| s["localEndpoint"]["serviceName"] == service).collect();
    assert_eq!(mine.len(), 1, "one span of {service}: {spans:#?}");
    mine[0]
}

#[tokio::test]
async fn spans_of_an_invocation_through_two_sidecars_reach_zipkin_as_daprds() {
    let (zipkin, mut rx) = zipkin_receiver().await;
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: daprConfig\nspec:\n  tracing:\n    samplingRate: \"1\"\n    zipkin:\n      endpointAddress: http://localhost:{zipkin}/api/v2/spans\n"),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let app = traceparent_app().await;
    let target = SidecarBuilder::new("zk-target").home(home.path()).args(&["--app-port", &app.to_string(), "--config", cfg]).start().await;
    let caller = SidecarBuilder::new("zk-caller").home(home.path()).args(&["--config", cfg]).start().await;
    assert!(!caller.logs().contains("not implemented"), "zipkin counts as implemented:\n{}", caller.logs());
    let mut got = Vec::new();

    // Over HTTP, inside the app's trace.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = caller.client.get(caller.url("/v1.0/invoke/zk-target/method/orders/7")).header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let answered = r.headers().get("traceparent").and_then(|v| v.to_str().ok()).expect("daprd's middleware puts traceparent on the answer").to_string();
    let seen: Value = r.json().await.unwrap();
    let app_parent = seen["traceparent"].as_str().expect("the app sees a traceparent").split('-').nth(2).unwrap().to_string();
    let ours = spans_of(&mut rx, &mut got, trace_id, &["zk-caller", "zk-target"], &[&caller, &target]).await;
    let (c, t) = (of(&ours, "zk-caller"), of(&ours, "zk-target"));
    assert_eq!((&c["name"], &c["kind"]), (&json!("CallLocal/zk-target/orders/7"), &json!("CLIENT")), "{c:#}");
    assert_eq!((&t["name"], &t["kind"]), (&json!("CallLocal/zk-target/orders/7"), &json!("SERVER")), "{t:#}");
    assert_eq!(c["parentId"], "00f067aa0ba902b7", "the caller sidecar's span is a child of the app's");
    assert_eq!(t["parentId"], c["id"], "the target sidecar's span is a child of the caller sidecar's");
    assert_eq!(app_parent, t["id"].as_str().unwrap(), "the app's parent is the target sidecar's span");
    assert_eq!(answered, format!("00-{trace_id}-{}-01", c["id"].as_str().unwrap()), "the answer carries the caller sidecar's span");
    // OpenTelemetry Go's exporter ranks `server.address` (daprd: the caller's IP) over
    // `net.peer.name` (the target app) for the remote endpoint, and writes it as a service name.
    assert_eq!(c["remoteEndpoint"]["serviceName"], "127.0.0.1", "{c:#}");
    assert_eq!(c["tags"]["dapr.protocol"], "http");
    assert_eq!(c["tags"]["dapr.api"], "GET /v1.0/invoke/zk-target/method/orders/7");
    assert_eq!(c["tags"]["dapr.status_code"], "200");
    // daprd fills these from the caller's RemoteAddr.
    assert_eq!(c["tags"]["server.address"], "127.0.0.1", "{c:#}");
    assert!(c["tags"]["server.port"].as_str().is_some_and(|p| p.parse::<u16>().is_ok()), "{c:#}");
    assert_eq!(t["tags"]["dapr.protocol"], "grpc");
    assert_eq!(t["tags"]["dapr.invoke_method"], "orders/7");
    assert!(c["timestamp"].as_u64().unwrap() > 1_600_000_000_000_000 && c["duration"].as_u64().is_some(), "microseconds: {c:#}");

    // Over gRPC InvokeService, with a trace started by the caller's sidecar.
    let mut client = caller.grpc().await;
    let req = InvokeServiceRequest {
        id: "zk-target".into(),
        message: Some(InvokeRequest {
            method: "grpc-called".into(),
            data: None,
            content_type: String::new(),
            http_extension: Some(HttpExtension { verb: Verb::Get as i32, querystring: String::new() }),
        }),
    };
    let resp = client.invoke_service(req).await.unwrap().into_inner();
    let seen: Value = serde_json::from_slice(&resp.data.unwrap().value).unwrap();
    let tp = seen["traceparent"].as_str().expect("the app sees a traceparent").to_string();
    let trace_id = tp.split('-').nth(1).unwrap().to_string();
    let ours = spans_of(&mut rx, &mut got, &trace_id, &["zk-caller", "zk-target"], &[&caller, &target]).await;
    let (c, t) = (of(&ours, "zk-caller"), of(&ours, "zk-target"));
    assert_eq!((&c["name"], &c["kind"]), (&json!("CallLocal/zk-target/grpc-called"), &json!("CLIENT")), "{c:#}");
    assert!(c.get("parentId").is_none(), "a new trace: {c:#}");
    assert_eq!(c["tags"]["dapr.api"], "/dapr.proto.runtime.v1.Dapr/InvokeService");
    assert_eq!(t["name"], "CallLocal/zk-target/grpc-called");
    assert_eq!(t["parentId"], c["id"]);

    // A gRPC state call: the method is the name, the store is tagged, the failure marks the span.
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let mut req = tonic::Request::new(GetStateRequest { store_name: "nostore".into(), key: "k".into(), ..Default::default() });
    req.metadata_mut().insert("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01").parse().unwrap());
    assert!(client.get_state(req).await.is_err(), "no such store");
    let ours = spans_of(&mut rx, &mut got, trace_id, &["zk-caller"], &[&caller, &target]).await;
    let c = of(&ours, "zk-caller");
    assert_eq!((&c["name"], &c["kind"]), (&json!("/dapr.proto.runtime.v1.Dapr/GetState"), &json!("CLIENT")), "{c:#}");
    assert_eq!((&c["tags"]["db.system"], &c["tags"]["db.name"]), (&json!("state"), &json!("nostore")), "{c:#}");
    assert_eq!(c["tags"]["otel.status_code"], "Error", "{c:#}");

    // `grpc-trace-bin` wins over `traceparent` (daprd reads it first), and the answer carries
    // this hop's span in it.
    let bin_trace = "5b8efff798038103d269b633813fc60c";
    let mut bin = vec![0u8, 0];
    bin.extend(hex(bin_trace));
    bin.push(1);
    bin.extend(hex("eee19b7ec3c1b174"));
    bin.extend([2, 1]);
    let mut req = tonic::Request::new(GetStateRequest { store_name: "nostore".into(), key: "k".into(), ..Default::default() });
    req.metadata_mut().insert_bin("grpc-trace-bin", tonic::metadata::MetadataValue::from_bytes(&bin));
    req.metadata_mut().insert("traceparent", "00-11111111111111111111111111111111-2222222222222222-01".parse().unwrap());
    let status = client.get_state(req).await.expect_err("no such store");
    let back = status.metadata().get_bin("grpc-trace-bin").and_then(|v| v.to_bytes().ok()).expect("grpc-trace-bin on the answer");
    let ours = spans_of(&mut rx, &mut got, bin_trace, &["zk-caller"], &[&caller, &target]).await;
    let c = of(&ours, "zk-caller");
    assert_eq!(c["parentId"], "eee19b7ec3c1b174", "{c:#}");
    assert_eq!((back.len(), &back[2..18], &back[19..27]), (29, &hex(bin_trace)[..], &hex(c["id"].as_str().unwrap())[..]), "daprd's binary layout with this hop's span");

    // Health probes (the harness polled them) are not traced, as in daprd.
    assert!(!got.iter().any(|s| s["name"].as_str().unwrap_or_default().contains("healthz")), "{got:#?}");
}

/// daprd's setupTracing fails the start on a Zipkin address its exporter cannot parse
/// (`failed to setup tracing: invalid collector URL ...`): so does rapr, exit code 1.
#[tokio::test]
async fn a_zipkin_endpoint_that_is_not_a_url_stops_the_start_as_daprd() {
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("config.yaml");
    std::fs::write(&cfg, "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  tracing:\n    samplingRate: \"1\"\n    zipkin:\n      endpointAddress: localhost:9411\n").unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_rapr"))
        .args(["sidecar", "--app-id", "zk-bad", "--dapr-http-port", &free_port().to_string(), "--dapr-grpc-port", &free_port().to_string(), "--metrics-port", "0"])
        .args(["--dapr-listen-addresses", "127.0.0.1", "--config"])
        .arg(&cfg)
        .env("RAPR_HOME", home.path())
        .stdin(std::process::Stdio::null())
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), out).await.expect("the start stops").unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{text}");
    for want in ["failed to setup tracing: invalid collector URL", "localhost:9411", "no scheme or host"] {
        assert!(text.contains(want), "{want} in {text}");
    }
}

fn zipkin_config(dir: &std::path::Path, zipkin: u16, rate: &str) -> String {
    let cfg = dir.join("config.yaml");
    std::fs::write(
        &cfg,
        format!("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  tracing:\n    samplingRate: \"{rate}\"\n    zipkin:\n      endpointAddress: http://localhost:{zipkin}/api/v2/spans\n"),
    )
    .unwrap();
    cfg.to_str().unwrap().to_string()
}

#[tokio::test]
async fn a_pubsub_delivery_runs_under_its_own_span_as_daprds_postman() {
    let (zipkin, mut rx) = zipkin_receiver().await;
    let home = tempfile::tempdir().unwrap();
    let cfg = zipkin_config(home.path(), zipkin, "1");
    let topic = format!("traced-{}", uuid::Uuid::new_v4().simple());
    let app = crate::pubsub::app::SubscriberApp::start(json!([{"pubsubname": "ps", "topic": topic, "route": "/ev"}])).await;
    let bulk_topic = format!("{topic}-bulk");
    let sc = SidecarBuilder::new("zk-pubsub")
        .file("ps.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: ps\nspec:\n  type: pubsub.in-memory\n  version: v1\n")
        .file("bulk.yaml", &format!("apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: bulk\nspec:\n  pubsubname: ps\n  topic: {bulk_topic}\n  routes:\n    default: /bulk\n  bulkSubscribe:\n    enabled: true\n    maxMessagesCount: 1\n    maxAwaitDurationMs: 100\n"))
        .args(&["--app-port", &app.port_arg(), "--config", &cfg])
        .start()
        .await;
    crate::pubsub::wait_active(&sc, "ps", &topic).await;
    let trace_id = "8f0c7a1e2b3d4c5f6a7b8c9d0e1f2a3b";
    let r = sc.client.post(sc.url(&format!("/v1.0/publish/ps/{topic}"))).header("content-type", "application/json").header("traceparent", format!("00-{trace_id}-1a2b3c4d5e6f7081-01")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 204);
    let got_at_app = app.wait_for("/ev", 1, Duration::from_secs(20)).await;
    let app_tp = got_at_app[0].headers.get("traceparent").cloned().expect("the app gets a traceparent");
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (publish, delivery) = loop {
        let ours: Vec<&Value> = got.iter().filter(|s: &&Value| s["traceId"] == trace_id).collect();
        let named = |n: &str| ours.iter().find(|s| s["name"] == n).map(|s| (*s).clone());
        if let (Some(p), Some(d)) = (named(&format!("/v1.0/publish/ps/{topic}")), named(&format!("pubsub/{topic}"))) {
            break (p, d);
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(s)) => got.push(s),
            _ => panic!("publish and delivery spans did not arrive: {got:#?}\n{}", sc.logs()),
        }
    };
    assert_eq!((&publish["kind"], &publish["parentId"]), (&json!("CLIENT"), &json!("1a2b3c4d5e6f7081")), "{publish:#}");
    assert_eq!((&publish["tags"]["messaging.system"], &publish["tags"]["messaging.destination.name"]), (&json!("pubsub"), &json!(topic)), "{publish:#}");
    assert_eq!((&delivery["kind"], &delivery["parentId"]), (&json!("CLIENT"), &publish["id"]), "the delivery is a child of the event's context (the publish span): {delivery:#}");
    assert_eq!(delivery["tags"]["messaging.destination.name"], json!(topic));
    assert_eq!(app_tp, format!("00-{trace_id}-{}-01", delivery["id"].as_str().unwrap()), "the app's parent is the delivery span, not the event's");
    assert_eq!(got_at_app[0].json()["traceparent"], format!("00-{trace_id}-{}-01", publish["id"].as_str().unwrap()), "the event itself keeps the publisher's context");

    // A bulk subscription: a delivery span per entry, the app gets its context.
    crate::pubsub::wait_active(&sc, "ps", &bulk_topic).await;
    let bulk_trace = "9a0c7a1e2b3d4c5f6a7b8c9d0e1f2a3b";
    let r = sc.client.post(sc.url(&format!("/v1.0/publish/ps/{bulk_topic}"))).header("content-type", "application/json").header("traceparent", format!("00-{bulk_trace}-1a2b3c4d5e6f7081-01")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 204);
    let bulk_at_app = app.wait_for("/bulk", 1, Duration::from_secs(20)).await;
    let bulk_tp = bulk_at_app[0].headers.get("traceparent").cloned().expect("the bulk call carries a traceparent");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let delivery = loop {
        if let Some(d) = got.iter().find(|s| s["traceId"] == bulk_trace && s["name"] == format!("pubsub/{bulk_topic}")) {
            break d.clone();
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(s)) => got.push(s),
            _ => panic!("the bulk delivery span did not arrive: {got:#?}\n{}", sc.logs()),
        }
    };
    assert_eq!(bulk_tp, format!("00-{bulk_trace}-{}-01", delivery["id"].as_str().unwrap()), "{delivery:#}");

    // A bulk publish: a PRODUCER span per entry, child of the request's span, named by the
    // request path; each event carries its own entry's span (daprd's onBulkPublish).
    let bp_trace = "7b0c7a1e2b3d4c5f6a7b8c9d0e1f2a3b";
    let path = format!("/v1.0-alpha1/publish/bulk/ps/{topic}");
    let entries = json!([
        {"entryId": "1", "event": {"n": 1}, "contentType": "application/json"},
        {"entryId": "2", "event": {"n": 2}, "contentType": "application/json"}
    ]);
    let r = sc.client.post(sc.url(&path)).header("traceparent", format!("00-{bp_trace}-1a2b3c4d5e6f7081-01")).json(&entries).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let at_app = app.wait_for("/ev", 3, Duration::from_secs(20)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (request, producers) = loop {
        let named: Vec<&Value> = got.iter().filter(|s| s["traceId"] == bp_trace && s["name"] == path.as_str()).collect();
        let request = named.iter().find(|s| s["kind"] == "CLIENT").map(|s| (*s).clone());
        let producers: Vec<Value> = named.iter().filter(|s| s["kind"] == "PRODUCER").map(|s| (*s).clone()).collect();
        if let (Some(r), 2) = (&request, producers.len()) {
            break (r.clone(), producers);
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(s)) => got.push(s),
            _ => panic!("the bulk publish's request and producer spans did not arrive: {got:#?}\n{}", sc.logs()),
        }
    };
    for p in &producers {
        assert_eq!(p["parentId"], request["id"], "{p:#}");
    }
    let mut event_parents: Vec<String> = at_app[1..].iter().map(|e| e.json()["traceparent"].as_str().unwrap().to_string()).collect();
    let mut span_parents: Vec<String> = producers.iter().map(|p| format!("00-{bp_trace}-{}-01", p["id"].as_str().unwrap())).collect();
    event_parents.sort();
    span_parents.sort();
    assert_eq!(event_parents, span_parents, "each event carries its entry's producer span");
}

#[tokio::test]
async fn sampling_rate_zero_switches_tracing_off() {
    let (zipkin, mut rx) = zipkin_receiver().await;
    let home = tempfile::tempdir().unwrap();
    let cfg = zipkin_config(home.path(), zipkin, "0");
    let app = traceparent_app().await;
    let sc = SidecarBuilder::new("zk-off").home(home.path()).args(&["--app-port", &app.to_string(), "--config", &cfg]).start().await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = sc.client.get(sc.url("/v1.0/invoke/zk-off/method/x")).header("traceparent", incoming).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("traceparent").is_none(), "no tracing middleware, no traceparent on the answer");
    let seen: Value = r.json().await.unwrap();
    assert!(seen["traceparent"].is_null() || seen["traceparent"] == incoming, "no span of this sidecar reaches the app: {seen}");
    let mut grpc = sc.grpc().await;
    let err = grpc.get_state(GetStateRequest { store_name: "nostore".into(), key: "k".into(), ..Default::default() }).await.expect_err("no such store");
    assert!(err.metadata().get_bin("grpc-trace-bin").is_none());
    // The batch exporter would send within a second; give it three.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(rx.try_recv().is_err(), "no span exported");
    assert!(sc.logs().contains("tracing disabled"), "{}", sc.logs());
}
