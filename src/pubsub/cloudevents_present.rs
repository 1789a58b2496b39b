//! How an event is handed to an app: the HTTP body and content type daprd's HTTP postman
//! posts, and the `TopicEventRequest` (or bulk `TopicEventCERequest`) its gRPC postman sends,
//! with the CloudEvent's other attributes as `extensions`.

use base64::Engine as _;
use bytes::Bytes;
use rapr_proto::app::{TopicEventCeRequest, TopicEventRequest};
use serde_json::Value;

use super::{field, is_binary_content_type, is_cloud_event_content_type, is_json_content_type, is_string_content_type, message_content_type, CloudEventError, Event, CLOUD_EVENT_CONTENT_TYPE};
use crate::components::pubsub::Message;

/// What an HTTP app is posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpDelivery {
    /// The request body.
    pub body: Bytes,
    /// Its `Content-Type` (always `application/cloudevents+json`, as daprd).
    pub content_type: &'static str,
}

/// The body an HTTP app receives for `msg`, decoded as `ev`: a structured CloudEvent is posted
/// as the broker's bytes, unchanged; a raw payload (wrapped by `decode`) and a binary-mode
/// event are posted as `ev` serialized. (daprd posts a binary-mode message's bytes as they are,
/// under the CloudEvents content type; rapr posts the event it built: docs/runtime-semantics.md.)
pub fn http_delivery(ev: &Event, msg: &Message, raw: bool) -> HttpDelivery {
    let body = if raw || is_binary_content_type(message_content_type(msg)) {
        // Serializing a Map of Values cannot fail.
        Bytes::from(serde_json::to_vec(ev).unwrap_or_default())
    } else {
        msg.data.clone()
    };
    HttpDelivery { body, content_type: CLOUD_EVENT_CONTENT_TYPE }
}

fn text(ev: &Event, k: &str) -> String {
    match ev.get(k) {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// The attributes a gRPC request carries in its own fields; the rest go to `extensions`.
const OWN_FIELDS: [&str; 7] = [field::ID, field::SOURCE, field::DATA_CONTENT_TYPE, field::TYPE, field::SPEC_VERSION, field::DATA, field::DATA_BASE64];

/// The event's data for a gRPC app, as daprd: `data_base64` decoded; `data` as text for string
/// content types, as JSON for JSON and CloudEvents content types, left out otherwise.
fn grpc_data(ev: &Event, content_type: &str) -> Result<Vec<u8>, CloudEventError> {
    if let Some(v) = ev.get(field::DATA_BASE64).filter(|v| !v.is_null()) {
        let Value::String(s) = v else {
            return Err(CloudEventError::UnexpectedData("data_base64 is not a string".into()));
        };
        return base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| CloudEventError::UnexpectedData(format!("data_base64: {e}")));
    }
    match ev.get(field::DATA) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(data) if is_string_content_type(content_type) => match data {
            Value::String(s) => Ok(s.clone().into_bytes()),
            _ => Err(CloudEventError::UnexpectedData(format!("data is not text for {content_type}"))),
        },
        Some(data) if is_json_content_type(content_type) || is_cloud_event_content_type(content_type) => Ok(serde_json::to_vec(data).unwrap_or_default()),
        Some(_) => Ok(Vec::new()),
    }
}

/// The `TopicEventRequest` a gRPC app's `OnTopicEvent` receives (daprd's
/// `GRPCEnvelopeFromSubscriptionMessage`); `pubsub` is the component name, `path` the route.
pub fn grpc_request(ev: &Event, topic: &str, pubsub: &str, path: &str) -> Result<TopicEventRequest, CloudEventError> {
    let data_content_type = text(ev, field::DATA_CONTENT_TYPE);
    Ok(TopicEventRequest {
        id: text(ev, field::ID),
        source: text(ev, field::SOURCE),
        r#type: text(ev, field::TYPE),
        spec_version: text(ev, field::SPEC_VERSION),
        data: grpc_data(ev, &data_content_type)?,
        data_content_type,
        topic: topic.to_string(),
        pubsub_name: pubsub.to_string(),
        path: path.to_string(),
        extensions: Some(extensions(ev)),
    })
}

/// One event of a bulk delivery to a gRPC app (daprd's `extractCloudEvent`). daprd reads only
/// `data` there, so a binary event reaches a bulk gRPC subscriber empty; rapr decodes
/// `data_base64` as for a single event (docs/runtime-semantics.md, pub/sub).
pub fn grpc_cloud_event(ev: &Event) -> Result<TopicEventCeRequest, CloudEventError> {
    let data_content_type = text(ev, field::DATA_CONTENT_TYPE);
    Ok(TopicEventCeRequest {
        id: text(ev, field::ID),
        source: text(ev, field::SOURCE),
        r#type: text(ev, field::TYPE),
        spec_version: text(ev, field::SPEC_VERSION),
        data: grpc_data(ev, &data_content_type)?,
        data_content_type,
        extensions: Some(extensions(ev)),
    })
}

fn extensions(ev: &Event) -> prost_types::Struct {
    let rest: serde_json::Map<String, Value> = ev.iter().filter(|(k, _)| !OWN_FIELDS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    json_to_struct(&rest)
}

/// A JSON object as a protobuf `Struct` (numbers become doubles, as protojson reads them).
pub fn json_to_struct(m: &serde_json::Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct { fields: m.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect() }
}

fn json_to_value(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue { values: a.iter().map(json_to_value).collect() }),
        Value::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}
