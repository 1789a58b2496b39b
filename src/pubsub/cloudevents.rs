//! The CloudEvents 1.0 envelope as daprd builds and reads it: [`build`] wraps a publish
//! (daprd `NewCloudEvent` + contrib `NewCloudEventsEnvelope`/`FromCloudEvent`/`ApplyMetadata`),
//! [`decode`] turns a broker message back into the event a subscription routes and delivers
//! (structured JSON, binary mode from `ce_*` headers, a raw payload wrapped as daprd does),
//! [`is_expired`] is daprd's `HasExpired`, and [`http_delivery`]/[`grpc_request`] present an
//! event to an app the way daprd's HTTP and gRPC postmen do.
//!
//! Kept in one place so the publish facade and the delivery agree on every field name and
//! default. Events are `serde_json::Map`s (keys sorted, as Go's `json.Marshal` of a map writes
//! them), because CEL routing and gRPC extensions both want the event as a map.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::components::pubsub::{Message, Metadata};
use crate::config::duration;

/// Event type of a published event.
pub const DEFAULT_TYPE: &str = "com.dapr.event.sent";
/// Event type of a bulk delivery envelope.
pub const DEFAULT_BULK_TYPE: &str = "com.dapr.event.sent.bulk";
/// `specversion`.
pub const SPEC_VERSION: &str = "1.0";
/// `source` when none is given (daprd's default; publishes set the app id).
pub const DEFAULT_SOURCE: &str = "Dapr";
/// `datacontenttype` when the publisher gives none.
pub const DEFAULT_DATA_CONTENT_TYPE: &str = "text/plain";
/// A structured CloudEvent in JSON.
pub const CLOUD_EVENT_CONTENT_TYPE: &str = "application/cloudevents+json";
/// What daprd assumes a broker message is when the broker keeps no content type.
pub const DEFAULT_MESSAGE_CONTENT_TYPE: &str = "application/json";
/// Prefix of binary-mode CloudEvent attributes in broker headers.
pub const BINARY_HEADER_PREFIX: &str = "ce_";
/// The message metadata key the delivery sets to the component name (daprd's `pubsubName`);
/// also sent to the app as a header, as daprd does.
pub const PUBSUB_NAME_KEY: &str = "pubsubName";
/// Publish metadata asking for the bytes unchanged, no envelope.
pub const RAW_PAYLOAD_KEY: &str = "rawPayload";

/// Field names, as contrib spells them.
pub mod field {
    pub const ID: &str = "id";
    pub const SOURCE: &str = "source";
    pub const TYPE: &str = "type";
    pub const SPEC_VERSION: &str = "specversion";
    pub const DATA_CONTENT_TYPE: &str = "datacontenttype";
    pub const DATA: &str = "data";
    pub const DATA_BASE64: &str = "data_base64";
    pub const SUBJECT: &str = "subject";
    pub const TOPIC: &str = "topic";
    pub const PUBSUB: &str = "pubsubname";
    pub const TRACE_ID: &str = "traceid";
    pub const TRACE_PARENT: &str = "traceparent";
    pub const TRACE_STATE: &str = "tracestate";
    pub const TIME: &str = "time";
    pub const EXPIRATION: &str = "expiration";
}

/// An event as a JSON object.
pub type Event = Map<String, Value>;

/// Why an envelope could not be built or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudEventError {
    /// An `application/cloudevents+json` body that is not a JSON object.
    #[error("error deserializing cloud event: {0}")]
    InvalidCloudEvent(String),
    /// A broker message that should be a structured CloudEvent and is not.
    #[error("error deserializing cloud event: {0}")]
    Malformed(String),
    /// `rawPayload` is not a boolean.
    #[error("{RAW_PAYLOAD_KEY} value must be a valid boolean: actual is '{0}'")]
    RawPayload(String),
    /// `data_base64` is not base64 text, or `data` has a shape its content type does not allow.
    #[error("unexpected data type encountered in envelope: {0}")]
    UnexpectedData(String),
}

/// What a publish gives the envelope.
#[derive(Debug, Clone, Copy)]
pub struct Publish<'a> {
    /// The publishing app (the event's `source`).
    pub app_id: &'a str,
    /// The component name.
    pub pubsub: &'a str,
    /// The topic.
    pub topic: &'a str,
    /// The request body.
    pub data: &'a [u8],
    /// The request's content type (empty: `text/plain`).
    pub content_type: &'a str,
    /// The request span's W3C `traceparent` (empty when none).
    pub trace_parent: &'a str,
    /// Its `tracestate`.
    pub trace_state: &'a str,
    /// The request metadata (`cloudevent.*` overrides, `ttlInSeconds`).
    pub metadata: &'a Metadata,
    /// The broker expires messages itself (`Feature::MessageTtl`): no `expiration` then.
    pub broker_has_ttl: bool,
}

/// contrib's `isContentType`: case-insensitive, parameters after `;` ignored.
fn is_content_type(ct: &str, expected: &str) -> bool {
    let lower = ct.to_ascii_lowercase();
    lower.split(';').next().is_some_and(|base| base == expected)
}

/// `application/cloudevents+json`.
pub fn is_cloud_event_content_type(ct: &str) -> bool {
    is_content_type(ct, CLOUD_EVENT_CONTENT_TYPE)
}

/// `application/json`.
pub fn is_json_content_type(ct: &str) -> bool {
    is_content_type(ct, "application/json")
}

/// `text/*` or `application/xml`.
pub fn is_string_content_type(ct: &str) -> bool {
    ct.to_ascii_lowercase().starts_with("text/") || is_content_type(ct, "application/xml")
}

/// `application/octet-stream`.
pub fn is_binary_content_type(ct: &str) -> bool {
    is_content_type(ct, "application/octet-stream")
}

/// Go's `strconv.ParseBool`.
fn go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// contrib's `IsRawPayload`: `rawPayload` parsed as a Go boolean, absent or empty is false.
pub fn raw_payload(md: &Metadata) -> Result<bool, CloudEventError> {
    match md.get(RAW_PAYLOAD_KEY) {
        None => Ok(false),
        Some(v) if v.is_empty() => Ok(false),
        Some(v) => go_bool(v).ok_or_else(|| CloudEventError::RawPayload(v.clone())),
    }
}

/// Go's `json.Decoder.Decode` with `UseNumber`: the first JSON value of `data` (trailing bytes
/// ignored, as Go's decoder reads one value).
fn first_json_value(data: &[u8]) -> Option<Value> {
    serde_json::Deserializer::from_slice(data).into_iter::<Value>().next().and_then(Result::ok)
}

/// Now in RFC 3339 to the second, UTC (Go's `time.Now().Format(time.RFC3339)` on a UTC host).
fn rfc3339_seconds(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    // Invariant: nanosecond 0 is always in range.
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

/// A `cloudevent.<name>` override, matched case-insensitively as mapstructure does.
fn override_of<'m>(md: &'m Metadata, name: &str) -> Option<&'m str> {
    md.iter().find(|(k, _)| k.len() == 11 + name.len() && k[..11].eq_ignore_ascii_case("cloudevent.") && k[11..].eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The envelope of one publish, daprd's way.
///
/// An `application/cloudevents+json` body is kept with `topic`, `pubsubname` set and `time`,
/// trace, `source`, `type`, `specversion` defaulted; any other body is wrapped, with the
/// `cloudevent.*` metadata overriding `id`, `source`, `type`, `subject`, `traceid`,
/// `traceparent`, `tracestate`. Either way `expiration` is added from `ttlInSeconds` (or `ttl`)
/// when the broker has no TTL of its own.
pub fn build(p: &Publish<'_>, now: OffsetDateTime) -> Result<Event, CloudEventError> {
    let mut ev = if is_cloud_event_content_type(p.content_type) { from_cloud_event(p, now)? } else { wrap(p, now) };
    apply_ttl(&mut ev, p.metadata, p.broker_has_ttl, now);
    Ok(ev)
}

/// [`build`] serialized: the bytes to hand the broker.
pub fn build_bytes(p: &Publish<'_>, now: OffsetDateTime) -> Result<Bytes, CloudEventError> {
    let ev = build(p, now)?;
    // Serializing a Map of Values cannot fail (string keys, no non-finite floats from parsing).
    Ok(Bytes::from(serde_json::to_vec(&ev).unwrap_or_default()))
}

fn from_cloud_event(p: &Publish<'_>, now: OffsetDateTime) -> Result<Event, CloudEventError> {
    let mut ev = match first_json_value(p.data) {
        Some(Value::Object(m)) => m,
        Some(other) => return Err(CloudEventError::InvalidCloudEvent(format!("expected a JSON object, got {}", json_kind(&other)))),
        None => {
            let why = serde_json::from_slice::<Value>(p.data).err().map_or_else(|| "empty body".to_string(), |e| e.to_string());
            return Err(CloudEventError::InvalidCloudEvent(why));
        }
    };
    ev.entry(field::TIME).or_insert_with(|| Value::String(rfc3339_seconds(now)));
    if !ev.contains_key(field::TRACE_ID) {
        ev.insert(field::TRACE_ID.into(), p.trace_parent.into());
        ev.insert(field::TRACE_PARENT.into(), p.trace_parent.into());
    }
    ev.entry(field::TRACE_STATE).or_insert_with(|| p.trace_state.into());
    ev.insert(field::TOPIC.into(), p.topic.into());
    ev.insert(field::PUBSUB.into(), p.pubsub.into());
    // Go's `m[k] == nil`: absent or JSON null.
    for (k, default) in [(field::SOURCE, DEFAULT_SOURCE), (field::TYPE, DEFAULT_TYPE), (field::SPEC_VERSION, SPEC_VERSION)] {
        if ev.get(k).is_none_or(Value::is_null) {
            ev.insert(k.into(), default.into());
        }
    }
    Ok(ev)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrap(p: &Publish<'_>, now: OffsetDateTime) -> Event {
    let md = p.metadata;
    let pick = |name: &str, default: &str| override_of(md, name).unwrap_or(default).to_string();
    let id = pick("id", "");
    let source = pick("source", p.app_id);
    let event_type = pick("type", "");
    let subject = pick("subject", "");
    let trace_state = pick("tracestate", p.trace_state);
    let mut trace_id = pick("traceid", p.trace_parent);
    // The envelope carries one trace context under both names; a `traceparent` override wins.
    if let Some(tp) = override_of(md, "traceparent").filter(|s| !s.is_empty()) {
        trace_id = tp.to_string();
    }
    let or = |v: String, d: &str| if v.is_empty() { d.to_string() } else { v };
    let content_type = or(p.content_type.to_string(), DEFAULT_DATA_CONTENT_TYPE);

    let mut ev = Event::new();
    if is_json_content_type(&content_type) {
        let data = first_json_value(p.data).unwrap_or_else(|| Value::String(String::from_utf8_lossy(p.data).into_owned()));
        ev.insert(field::DATA.into(), data);
    } else if is_binary_content_type(&content_type) || is_content_type(&content_type, "application/cloudevents+protobuf") {
        ev.insert(field::DATA_BASE64.into(), base64::engine::general_purpose::STANDARD.encode(p.data).into());
    } else {
        ev.insert(field::DATA.into(), String::from_utf8_lossy(p.data).into_owned().into());
    }
    ev.insert(field::ID.into(), or(id, &uuid::Uuid::new_v4().to_string()).into());
    ev.insert(field::SPEC_VERSION.into(), SPEC_VERSION.into());
    ev.insert(field::DATA_CONTENT_TYPE.into(), content_type.into());
    ev.insert(field::SOURCE.into(), or(source, DEFAULT_SOURCE).into());
    ev.insert(field::TYPE.into(), or(event_type, DEFAULT_TYPE).into());
    ev.insert(field::TOPIC.into(), p.topic.into());
    ev.insert(field::PUBSUB.into(), p.pubsub.into());
    ev.insert(field::TRACE_ID.into(), trace_id.clone().into());
    ev.insert(field::TRACE_PARENT.into(), trace_id.into());
    ev.insert(field::TRACE_STATE.into(), trace_state.into());
    ev.insert(field::TIME.into(), rfc3339_seconds(now).into());
    if !subject.is_empty() {
        ev.insert(field::SUBJECT.into(), subject.into());
    }
    ev
}

/// contrib's `TryGetTTL` (keys `ttl` then `ttlInSeconds`, case-insensitive; Go duration or
/// whole seconds > 0); an invalid value is ignored, as `ApplyMetadata` ignores it.
pub fn ttl(md: &Metadata) -> Option<std::time::Duration> {
    let val = ["ttl", "ttlInSeconds"].iter().find_map(|want| md.iter().find(|(k, _)| k.eq_ignore_ascii_case(want)).map(|(_, v)| v.as_str()))?;
    if val.is_empty() {
        return None;
    }
    if let Ok(d) = duration::parse_go(val) {
        return Some(d.clamped());
    }
    let secs: i64 = val.parse().ok()?;
    (secs > 0).then(|| std::time::Duration::from_secs(secs.unsigned_abs()))
}

fn apply_ttl(ev: &mut Event, md: &Metadata, broker_has_ttl: bool, now: OffsetDateTime) {
    if broker_has_ttl {
        return;
    }
    let Some(ttl) = ttl(md) else { return };
    let ttl = time::Duration::try_from(ttl).unwrap_or(time::Duration::MAX);
    let at = now.checked_add(ttl).unwrap_or(now);
    ev.insert(field::EXPIRATION.into(), rfc3339_seconds(at).into());
}

/// daprd's `HasExpired`: an RFC 3339 `expiration` before `now`; anything unreadable is not
/// expired.
pub fn is_expired(ev: &Event, now: OffsetDateTime) -> bool {
    match ev.get(field::EXPIRATION) {
        Some(Value::String(s)) if !s.is_empty() => OffsetDateTime::parse(s, &Rfc3339).is_ok_and(|at| at < now),
        _ => false,
    }
}

/// Trace context from broker headers, for events that lack it (daprd's fallback; a
/// `traceparent` supersedes `traceid`).
fn trace_from_headers(ev: &mut Event, md: &Metadata, only_missing: bool) {
    let set = |ev: &mut Event, k: &str| !only_missing || !ev.contains_key(k);
    if set(ev, field::TRACE_ID) {
        if let Some(v) = md.get(field::TRACE_ID) {
            ev.insert(field::TRACE_ID.into(), v.clone().into());
        }
    }
    if set(ev, field::TRACE_PARENT) {
        if let Some(v) = md.get(field::TRACE_PARENT) {
            ev.insert(field::TRACE_PARENT.into(), v.clone().into());
            ev.insert(field::TRACE_ID.into(), v.clone().into());
        }
    }
    if set(ev, field::TRACE_STATE) {
        if let Some(v) = md.get(field::TRACE_STATE) {
            ev.insert(field::TRACE_STATE.into(), v.clone().into());
        }
    }
}

/// The content type of a broker message as daprd reads it: the broker's, else the
/// `content-type` header, else `application/json`.
pub fn message_content_type(msg: &Message) -> &str {
    msg.content_type.as_deref().or_else(|| msg.metadata.get("content-type").map(String::as_str)).unwrap_or(DEFAULT_MESSAGE_CONTENT_TYPE)
}

/// The event a subscription sees for `msg`, as daprd reads it.
///
/// - `raw` (the subscription's `rawPayload`): the bytes wrapped in a fresh event (new id,
///   `application/octet-stream`, `data_base64`), trace context from the broker's headers;
///   `pubsubname` comes from `msg.metadata["pubsubName"]`, which the delivery sets to the
///   component name first (as daprd does).
/// - `application/octet-stream` messages: a binary-mode CloudEvent, attributes from the
///   `ce_*` headers. daprd keeps the bytes as a Go `[]byte` under `data`; rapr writes them as
///   `data_base64` (docs/runtime-semantics.md, pub/sub).
/// - anything else: the bytes must be a JSON object (else [`CloudEventError::Malformed`]);
///   trace context missing from it is taken from the broker's headers.
pub fn decode(msg: &Message, raw: bool) -> Result<Event, CloudEventError> {
    if raw {
        let mut ev = Event::new();
        ev.insert(field::ID.into(), uuid::Uuid::new_v4().to_string().into());
        ev.insert(field::SPEC_VERSION.into(), SPEC_VERSION.into());
        ev.insert(field::DATA_CONTENT_TYPE.into(), "application/octet-stream".into());
        ev.insert(field::SOURCE.into(), DEFAULT_SOURCE.into());
        ev.insert(field::TYPE.into(), DEFAULT_TYPE.into());
        ev.insert(field::TOPIC.into(), msg.topic.clone().into());
        ev.insert(field::PUBSUB.into(), msg.metadata.get(PUBSUB_NAME_KEY).cloned().unwrap_or_default().into());
        ev.insert(field::DATA_BASE64.into(), base64::engine::general_purpose::STANDARD.encode(&msg.data).into());
        trace_from_headers(&mut ev, &msg.metadata, false);
        return Ok(ev);
    }
    let ct = message_content_type(msg);
    if is_binary_content_type(ct) {
        let mut ev = Event::new();
        for (k, v) in &msg.metadata {
            let lower = k.to_ascii_lowercase();
            if let Some(name) = lower.strip_prefix(BINARY_HEADER_PREFIX) {
                ev.insert(name.to_string(), v.clone().into());
            }
        }
        ev.remove(field::DATA);
        ev.insert(field::DATA_BASE64.into(), base64::engine::general_purpose::STANDARD.encode(&msg.data).into());
        ev.insert(field::DATA_CONTENT_TYPE.into(), ct.to_string().into());
        return Ok(ev);
    }
    let mut ev = match serde_json::from_slice::<Value>(&msg.data) {
        Ok(Value::Object(m)) => m,
        Ok(other) => return Err(CloudEventError::Malformed(format!("expected a JSON object, got {}", json_kind(&other)))),
        Err(e) => return Err(CloudEventError::Malformed(e.to_string())),
    };
    trace_from_headers(&mut ev, &msg.metadata, true);
    Ok(ev)
}

#[path = "cloudevents_present.rs"]
mod present;
pub use present::{grpc_cloud_event, grpc_request, http_delivery, json_to_struct, HttpDelivery};

#[cfg(test)]
#[path = "cloudevents_tests.rs"]
mod tests;
