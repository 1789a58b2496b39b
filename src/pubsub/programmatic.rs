//! Programmatic subscriptions: the app's own list, asked once the app channel is up (issue 11
//! B.4). HTTP apps answer `GET /dapr/subscribe` with a JSON array; gRPC apps answer
//! `AppCallback.ListTopicSubscriptions`.
//!
//! As daprd (pkg/runtime/pubsub/subscriptions.go): the call is retried on transport failure
//! with the built-in initialization policy (exponential from 500 ms, ×1.5, at most 1 s, three
//! retries; rapr's default schedule has no jitter), which a resiliency resource may redefine
//! under its daprd name `DaprBuiltInInitializationRetries` (then its schedule is used as is); HTTP 404 means no subscriptions, any other non-200 is logged as an error and means
//! none; a body that is not the expected JSON is an error (none); an empty body is none; gRPC
//! `Unimplemented` is none. `routes.default` wins over `route`; an HTTP entry with no route at
//! all is dropped with a warning; a gRPC entry without routes gets the empty path. Where daprd
//! drops the whole list for one bad `match`, rapr drops that entry only (docs/runtime-semantics.md).

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use rapr_proto::app::app_callback_client::AppCallbackClient;
use rapr_proto::app::{ListTopicSubscriptionsResponse, TopicSubscription};
use serde_json::{Map, Value};

use super::routing::Routes;
use super::{BulkSubscribe, Rule, Subscription, SubscriptionKind};
use crate::invoke::app_channel::{AppChannel, AppProtocol};
use crate::invoke::message::CallMeta;
use crate::resiliency::{AttemptError, Policy};

/// Pauses between attempts: daprd's `DaprBuiltInInitializationRetries` without its jitter.
const RETRY_DELAYS: [Duration; 3] = [Duration::from_millis(500), Duration::from_millis(750), Duration::from_secs(1)];

/// The app's subscriptions; empty when it has none or could not say (errors are logged).
pub async fn load(channel: &AppChannel, app_id: &str) -> Vec<Subscription> {
    load_with(channel, app_id, None).await
}

/// `load`, retried under `policy` when a resource redefines `DaprBuiltInInitializationRetries`
/// (`Resiliency::built_in_override`), else with the built-in schedule.
pub async fn load_with(channel: &AppChannel, app_id: &str, policy: Option<Policy>) -> Vec<Subscription> {
    let policy = policy.as_ref();
    let result = match channel.protocol() {
        AppProtocol::Grpc => with_retries(policy, || ask_grpc(channel)).await.map(from_grpc),
        AppProtocol::Http | AppProtocol::H2c => with_retries(policy, || ask_http(channel, app_id)).await.and_then(|answer| match answer {
            HttpAnswer::Body(body) => from_http(&body).map_err(|e| format!("error getting topics from app: {e}")),
            HttpAnswer::None => Ok(Vec::new()),
        }),
    };
    let subs = match result {
        Ok(subs) => subs,
        Err(e) => {
            tracing::error!(error = %e, "error getting the app's pub/sub subscriptions; the app has no programmatic subscription");
            return Vec::new();
        }
    };
    let subs: Vec<Subscription> = subs.into_iter().filter_map(compiled).collect();
    for s in &subs {
        tracing::info!(pubsub = %s.pubsub, topic = %s.topic, "app is subscribed to a topic");
    }
    subs
}

/// One subscription per (pub/sub, topic), as daprd keeps them (compstore
/// `ListSubscriptionsAppByPubSub`): the first declarative one of a topic, replaced in place by
/// the app's own for that topic (the app's last one when it lists a topic twice). Two
/// subscriptions of one topic would otherwise be two consumers splitting its messages.
pub fn merge(declared: Vec<Subscription>, programmatic: Vec<Subscription>) -> Vec<Subscription> {
    let mut out: Vec<Subscription> = Vec::with_capacity(declared.len() + programmatic.len());
    let mut taken: HashMap<(String, String), usize> = HashMap::new();
    for sub in declared {
        let key = (sub.pubsub.clone(), sub.topic.clone());
        if taken.contains_key(&key) {
            tracing::warn!(subscription = %sub.name, pubsub = %sub.pubsub, topic = %sub.topic, "another Subscription already covers this topic; ignored");
            continue;
        }
        taken.insert(key, out.len());
        out.push(sub);
    }
    for sub in programmatic {
        let key = (sub.pubsub.clone(), sub.topic.clone());
        match taken.get(&key) {
            Some(&i) => {
                tracing::info!(pubsub = %sub.pubsub, topic = %sub.topic, replaced = %out[i].name, "the app's own subscription replaces the declared one for this topic");
                out[i] = sub;
            }
            None => {
                taken.insert(key, out.len());
                out.push(sub);
            }
        }
    }
    out
}

/// `sub` if its routes compile; otherwise logged and dropped.
fn compiled(sub: Subscription) -> Option<Subscription> {
    match Routes::compile(&sub) {
        Ok(_) => Some(sub),
        Err(e) => {
            tracing::error!(pubsub = %sub.pubsub, topic = %sub.topic, error = %e, "app subscription rejected");
            None
        }
    }
}

async fn with_retries<T, F, Fut>(policy: Option<&Policy>, mut call: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    if let Some(p) = policy {
        return p.run(|| {
            let attempt = call();
            async move { attempt.await.map_err(AttemptError::Retriable) }
        })
        .await
        .map_err(|e| e.to_string());
    }
    let mut delays = RETRY_DELAYS.iter();
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) => match delays.next() {
                Some(d) => {
                    tracing::debug!(error = %e, retry_in = ?d, "asking the app for its subscriptions failed; retrying");
                    tokio::time::sleep(*d).await;
                }
                None => return Err(e),
            },
        }
    }
}

enum HttpAnswer {
    Body(bytes::Bytes),
    None,
}

async fn ask_http(channel: &AppChannel, app_id: &str) -> Result<HttpAnswer, String> {
    let mut headers = Vec::new();
    if !app_id.is_empty() {
        headers.push(("dapr-app-id".to_string(), app_id.to_string()));
    }
    let meta = CallMeta { method: "dapr/subscribe".into(), verb: Method::GET, query: String::new(), content_type: Some("application/json".into()), headers };
    let resp = channel.call_http(&meta, Body::empty()).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(|e| format!("error reading the app's answer: {e}"))?.to_bytes();
    match status {
        StatusCode::OK => Ok(HttpAnswer::Body(body)),
        StatusCode::NOT_FOUND => {
            tracing::debug!("user app did not subscribe to any topic");
            Ok(HttpAnswer::None)
        }
        other => {
            tracing::error!(status = other.as_u16(), "app returned http status code {} from subscription endpoint", other.as_u16());
            Ok(HttpAnswer::None)
        }
    }
}

async fn ask_grpc(channel: &AppChannel) -> Result<ListTopicSubscriptionsResponse, String> {
    let Some((conn, token, _permit)) = channel.grpc_call().await else {
        return Err("the app does not speak gRPC".into());
    };
    let mut req = tonic::Request::new(());
    if let Some(t) = token.as_ref().and_then(|t| t.to_str().ok()).and_then(|t| t.parse().ok()) {
        req.metadata_mut().insert("dapr-api-token", t);
    }
    match AppCallbackClient::new(conn).list_topic_subscriptions(req).await {
        Ok(resp) => Ok(resp.into_inner()),
        Err(s) if s.code() == tonic::Code::Unimplemented => {
            tracing::info!("pubsub subscriptions: gRPC app does not implement ListTopicSubscriptions");
            Ok(ListTopicSubscriptionsResponse::default())
        }
        Err(s) => Err(format!("error getting topic list from app: {s}")),
    }
}

/// The gRPC answer as subscriptions (daprd's `parseRoutingRulesGRPC`).
fn from_grpc(resp: ListTopicSubscriptionsResponse) -> Vec<Subscription> {
    resp.subscriptions.into_iter().map(grpc_one).collect()
}

fn grpc_one(s: TopicSubscription) -> Subscription {
    let mut rules = Vec::new();
    if let Some(routes) = &s.routes {
        rules.extend(routes.rules.iter().map(|r| Rule { match_expr: r.r#match.trim().to_string(), path: r.path.clone() }));
        if !routes.default.is_empty() {
            rules.push(Rule { match_expr: String::new(), path: routes.default.clone() });
        }
    }
    if rules.is_empty() {
        rules.push(Rule { match_expr: String::new(), path: String::new() });
    }
    let mut sub = Subscription::new(SubscriptionKind::Programmatic, &s.pubsub_name, &s.topic, "");
    sub.rules = rules;
    sub.dead_letter_topic = Some(s.dead_letter_topic).filter(|t| !t.is_empty());
    sub.metadata = s.metadata;
    if let Some(b) = s.bulk_subscribe {
        sub.bulk = BulkSubscribe { enabled: b.enabled, max_messages_count: b.max_messages_count, max_await_duration_ms: b.max_await_duration_ms };
    }
    sub
}

/// A field of a JSON object as Go's `encoding/json` finds it: the exact key, else one that
/// differs only in case.
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)).filter(|v| !v.is_null())
}

fn string(obj: &Map<String, Value>, name: &str) -> Result<String, String> {
    match field(obj, name) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("{name}: expected a string, got {other}")),
    }
}

fn int32(obj: &Map<String, Value>, name: &str) -> Result<i32, String> {
    match field(obj, name) {
        None => Ok(0),
        Some(v) => v.as_i64().and_then(|n| i32::try_from(n).ok()).ok_or_else(|| format!("{name}: expected an int32, got {v}")),
    }
}

fn object<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a Map<String, Value>>, String> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(other) => Err(format!("{name}: expected an object, got {other}")),
    }
}

/// The `/dapr/subscribe` body as subscriptions; `Err` when it is not daprd's JSON shape (daprd
/// then uses none). Entries without any route are dropped with a warning.
fn from_http(body: &[u8]) -> Result<Vec<Subscription>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let items = match serde_json::from_slice::<Value>(body).map_err(|e| e.to_string())? {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => return Err(format!("expected an array of subscriptions, got {other}")),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Object(o) = item else { return Err(format!("expected a subscription object, got {item}")) };
        let sub = http_one(&o)?;
        if sub.rules.is_empty() {
            tracing::warn!(topic = %sub.topic, "topic {} has an empty routes. removing from subscriptions list", sub.topic);
            continue;
        }
        out.push(sub);
    }
    Ok(out)
}

fn http_one(o: &Map<String, Value>) -> Result<Subscription, String> {
    let mut rules = Vec::new();
    let mut default = String::new();
    if let Some(routes) = object(o, "routes")? {
        match field(routes, "rules") {
            None => {}
            Some(Value::Array(list)) => {
                for r in list {
                    let Value::Object(r) = r else { return Err(format!("routes.rules: expected an object, got {r}")) };
                    rules.push(Rule { match_expr: string(r, "match")?.trim().to_string(), path: string(r, "path")? });
                }
            }
            Some(other) => return Err(format!("routes.rules: expected an array, got {other}")),
        }
        default = string(routes, "default")?;
    }
    let route = string(o, "route")?;
    if !default.is_empty() {
        rules.push(Rule { match_expr: String::new(), path: default });
    } else if !route.is_empty() {
        rules.push(Rule { match_expr: String::new(), path: route });
    }
    let mut metadata = HashMap::new();
    if let Some(md) = object(o, "metadata")? {
        for (k, v) in md {
            match v {
                Value::String(s) => {
                    metadata.insert(k.clone(), s.clone());
                }
                other => return Err(format!("metadata.{k}: expected a string, got {other}")),
            }
        }
    }
    let bulk = match object(o, "bulkSubscribe")? {
        None => BulkSubscribe::default(),
        Some(b) => BulkSubscribe {
            enabled: match field(b, "enabled") {
                None => false,
                Some(Value::Bool(e)) => *e,
                Some(other) => return Err(format!("bulkSubscribe.enabled: expected a bool, got {other}")),
            },
            max_messages_count: int32(b, "maxMessagesCount")?,
            max_await_duration_ms: int32(b, "maxAwaitDurationMs")?,
        },
    };
    let mut sub = Subscription::new(SubscriptionKind::Programmatic, &string(o, "pubsubname")?, &string(o, "topic")?, "");
    sub.rules = rules;
    sub.dead_letter_topic = Some(string(o, "deadLetterTopic")?).filter(|t| !t.is_empty());
    sub.metadata = metadata;
    sub.bulk = bulk;
    Ok(sub)
}

#[cfg(test)]
#[path = "programmatic_tests.rs"]
mod tests;
