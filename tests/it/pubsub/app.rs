//! A recording HTTP subscriber app shared by the pub/sub tests: it records every request per
//! route (headers, content type, body) and answers each route as the test programs it (SUCCESS,
//! RETRY, DROP, an empty 200, any status, slowly). It serves `GET /dapr/subscribe` from the JSON
//! it was given and `/healthz` from a switch, and counts deliveries in flight (the most at once)
//! so a test can check `--app-max-concurrency`.
//!
//! Usage: `let app = SubscriberApp::start(json!([{"pubsubname": "ps", "topic": "t", "route": "/t"}])).await;`
//! then `app.answer("/t", Answer::Retry)`, start a sidecar with `--app-port app.port`, and
//! `app.wait_for("/t", 3, deadline).await` for the first three deliveries.

#![allow(dead_code)]
// reason: the app is a stand-in for a user's program, not a rapr process: its handlers and the test read
// and write the same records, which a lock keeps simple.
#![allow(clippy::disallowed_types)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

/// How the app answers one route.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 200 `{"status":"SUCCESS"}` (bulk: every entry SUCCESS).
    Success,
    /// 200 `{"status":"RETRY"}` (bulk: every entry RETRY).
    Retry,
    /// 200 `{"status":"DROP"}` (bulk: every entry DROP).
    Drop,
    /// 200 with an empty body (bulk: no `statuses` at all).
    Empty,
    /// This status with an empty body (404, 500, ...).
    Status(u16),
    /// 200 with this JSON body, verbatim.
    Json(Value),
    /// Waits, then answers as the inner answer.
    Slow(Duration, Box<Answer>),
}

/// One request the app got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The path.
    pub route: String,
    /// Headers, lowercase names.
    pub headers: HashMap<String, String>,
    /// The `content-type` header.
    pub content_type: String,
    /// The body bytes.
    pub body: Bytes,
}

impl Received {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The CloudEvent's `id` (or, for a bulk request, the ids of its entries' events joined by `,`).
    pub fn event_id(&self) -> String {
        let v = self.json();
        match v.get("entries").and_then(Value::as_array) {
            Some(entries) => entries.iter().filter_map(|e| e.pointer("/event/id").and_then(Value::as_str)).collect::<Vec<_>>().join(","),
            None => v.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
        }
    }
}

#[derive(Default)]
struct Shared {
    subscribe: Mutex<Value>,
    answers: Mutex<HashMap<String, Answer>>,
    received: Mutex<Vec<Received>>,
    unhealthy: AtomicBool,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    subscribe_calls: AtomicUsize,
}

/// The running app (it lives as long as the test's runtime).
#[derive(Clone)]
pub struct SubscriberApp {
    /// Its port on 127.0.0.1.
    pub port: u16,
    shared: Arc<Shared>,
}

impl SubscriberApp {
    /// Starts the app; `GET /dapr/subscribe` answers `subscribe` (use `json!([])` for none).
    /// Every route answers `Answer::Success` until programmed otherwise.
    pub async fn start(subscribe: Value) -> Self {
        let shared = Arc::new(Shared { subscribe: Mutex::new(subscribe), ..Default::default() });
        let app = Router::new()
            .route("/dapr/subscribe", get(subscriptions))
            .route("/healthz", get(health))
            .fallback(record)
            .with_state(shared.clone());
        let l = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("bind the subscriber app");
        let port = l.local_addr().expect("a bound address").port();
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        Self { port, shared }
    }

    /// `--app-port` flags for a sidecar in front of this app.
    pub fn port_arg(&self) -> String {
        self.port.to_string()
    }

    /// Programs the answer of `route` (e.g. `/orders`).
    pub fn answer(&self, route: &str, a: Answer) {
        self.shared.answers.lock().unwrap().insert(route.to_string(), a);
    }

    /// Replaces the `/dapr/subscribe` answer.
    pub fn set_subscriptions(&self, v: Value) {
        *self.shared.subscribe.lock().unwrap() = v;
    }

    /// Makes `/healthz` answer 503 (`false`) or 200 (`true`).
    pub fn set_healthy(&self, healthy: bool) {
        self.shared.unhealthy.store(!healthy, Ordering::SeqCst);
    }

    /// How many times the sidecar fetched `/dapr/subscribe`.
    pub fn subscribe_calls(&self) -> usize {
        self.shared.subscribe_calls.load(Ordering::SeqCst)
    }

    /// Every request to `route` so far, in arrival order.
    pub fn received(&self, route: &str) -> Vec<Received> {
        self.shared.received.lock().unwrap().iter().filter(|r| r.route == route).cloned().collect()
    }

    /// Every request so far, all routes.
    pub fn all(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Requests in the app's hands right now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests the app had in progress at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Waits until `route` got at least `n` requests; panics after `deadline`.
    pub async fn wait_for(&self, route: &str, n: usize, deadline: Duration) -> Vec<Received> {
        crate::harness::eventually(deadline, &format!("{n} deliveries to {route}"), || {
            let got = self.received(route);
            async move { (got.len() >= n).then_some(got) }
        })
        .await
    }
}

async fn subscriptions(State(s): State<Arc<Shared>>) -> Response {
    s.subscribe_calls.fetch_add(1, Ordering::SeqCst);
    axum::Json(s.subscribe.lock().unwrap().clone()).into_response()
}

async fn health(State(s): State<Arc<Shared>>) -> StatusCode {
    if s.unhealthy.load(Ordering::SeqCst) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

async fn record(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let route = req.uri().path().to_string();
    let headers = lower(req.headers());
    let content_type = headers.get("content-type").cloned().unwrap_or_default();
    let body = axum::body::to_bytes(req.into_body(), usize::MAX).await.unwrap_or_default();
    let got = Received { route: route.clone(), headers, content_type, body };
    let bulk_ids: Option<Vec<String>> = got
        .json()
        .get("entries")
        .and_then(Value::as_array)
        .map(|es| es.iter().filter_map(|e| e.get("entryId").and_then(Value::as_str).map(str::to_string)).collect());
    s.received.lock().unwrap().push(got);
    let mut answer = s.answers.lock().unwrap().get(&route).cloned().unwrap_or(Answer::Success);
    while let Answer::Slow(d, inner) = answer {
        tokio::time::sleep(d).await;
        answer = *inner;
    }
    s.in_flight.fetch_sub(1, Ordering::SeqCst);
    respond(&answer, bulk_ids)
}

fn respond(a: &Answer, bulk: Option<Vec<String>>) -> Response {
    let status = |st: &str| match &bulk {
        Some(ids) => json!({ "statuses": ids.iter().map(|id| json!({ "entryId": id, "status": st })).collect::<Vec<_>>() }),
        None => json!({ "status": st }),
    };
    match a {
        Answer::Success => axum::Json(status("SUCCESS")).into_response(),
        Answer::Retry => axum::Json(status("RETRY")).into_response(),
        Answer::Drop => axum::Json(status("DROP")).into_response(),
        Answer::Empty => StatusCode::OK.into_response(),
        Answer::Status(code) => StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR).into_response(),
        Answer::Json(v) => axum::Json(v.clone()).into_response(),
        // Unwrapped by the caller's loop.
        Answer::Slow(..) => StatusCode::OK.into_response(),
    }
}

fn lower(h: &HeaderMap) -> HashMap<String, String> {
    h.iter().filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_ascii_lowercase(), v.to_string()))).collect()
}
