//! Unit tests of the envelope: built as daprd builds it, read back as daprd reads it.

use serde_json::json;
use time::macros::datetime;

use super::*;

const NOW: OffsetDateTime = datetime!(2026-12-07 01:30:05.123 UTC);

fn md(pairs: &[(&str, &str)]) -> Metadata {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn publish<'a>(data: &'a [u8], ct: &'a str, m: &'a Metadata) -> Publish<'a> {
    Publish {
        app_id: "pub-app",
        pubsub: "ps",
        topic: "orders/eu",
        data,
        content_type: ct,
        trace_parent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        trace_state: "k=v",
        metadata: m,
        broker_has_ttl: false,
    }
}

#[test]
fn wraps_text_with_daprd_defaults() {
    let m = Metadata::new();
    let ev = build(&publish(b"hello", "", &m), NOW).unwrap();
    assert_eq!(ev["data"], "hello");
    assert_eq!(ev["datacontenttype"], "text/plain");
    assert_eq!(ev["source"], "pub-app");
    assert_eq!(ev["type"], "com.dapr.event.sent");
    assert_eq!(ev["specversion"], "1.0");
    assert_eq!(ev["topic"], "orders/eu");
    assert_eq!(ev["pubsubname"], "ps");
    assert_eq!(ev["traceid"], ev["traceparent"]);
    assert_eq!(ev["traceparent"], "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    assert_eq!(ev["tracestate"], "k=v");
    assert_eq!(ev["time"], "2026-12-07T01:30:05Z");
    assert!(uuid::Uuid::parse_str(ev["id"].as_str().unwrap()).is_ok());
    assert!(!ev.contains_key("subject") && !ev.contains_key("expiration") && !ev.contains_key("data_base64"));
}

#[test]
fn json_data_is_parsed_and_bad_json_kept_as_text() {
    let m = Metadata::new();
    let ev = build(&publish(br#"{"n":5,"big":12345678901234567890}"#, "application/json; charset=utf-8", &m), NOW).unwrap();
    assert_eq!(ev["data"], json!({"n": 5, "big": 12345678901234567890u64}));
    let ev = build(&publish(b"{not json", "application/json", &m), NOW).unwrap();
    assert_eq!(ev["data"], "{not json");
}

#[test]
fn binary_content_types_go_to_data_base64() {
    let m = Metadata::new();
    let ev = build(&publish(&[0, 159, 146, 150], "Application/Octet-Stream", &m), NOW).unwrap();
    assert_eq!(ev["data_base64"], "AJ+Slg==");
    assert!(!ev.contains_key("data"));
    // Other types are text, invalid UTF-8 replaced as Go's JSON encoder does.
    let ev = build(&publish(&[0x66, 0xff], "image/png", &m), NOW).unwrap();
    assert_eq!(ev["data"], "f\u{fffd}");
}

#[test]
fn cloudevent_metadata_overrides_case_insensitively() {
    let m = md(&[("cloudevent.id", "my-id"), ("CloudEvent.Source", "src"), ("cloudevent.type", "t"), ("cloudevent.subject", "s"), ("cloudevent.traceid", "tid"), ("cloudevent.tracestate", "ts")]);
    let ev = build(&publish(b"x", "text/plain", &m), NOW).unwrap();
    assert_eq!((ev["id"].as_str(), ev["source"].as_str(), ev["type"].as_str(), ev["subject"].as_str()), (Some("my-id"), Some("src"), Some("t"), Some("s")));
    assert_eq!((ev["traceid"].as_str(), ev["traceparent"].as_str(), ev["tracestate"].as_str()), (Some("tid"), Some("tid"), Some("ts")));
    let m = md(&[("cloudevent.traceid", "tid"), ("cloudevent.traceparent", "tp"), ("cloudevent.source", "")]);
    let ev = build(&publish(b"x", "text/plain", &m), NOW).unwrap();
    assert_eq!((ev["traceid"].as_str(), ev["traceparent"].as_str()), (Some("tp"), Some("tp")));
    assert_eq!(ev["source"], "Dapr", "an empty override falls back to daprd's default source");
}

#[test]
fn incoming_cloudevent_is_kept_with_daprd_overrides() {
    let m = md(&[("cloudevent.id", "ignored")]);
    let body = br#"{"id":"e1","source":null,"specversion":"1.0","data":{"a":1},"topic":"other","pubsubname":"x","custom":true,"traceparent":"old"}"#;
    let ev = build(&publish(body, "application/cloudevents+json", &m), NOW).unwrap();
    assert_eq!(ev["id"], "e1", "cloudevent.* overrides do not apply to an incoming event");
    assert_eq!(ev["topic"], "orders/eu");
    assert_eq!(ev["pubsubname"], "ps");
    assert_eq!(ev["source"], "Dapr");
    assert_eq!(ev["type"], "com.dapr.event.sent");
    assert_eq!(ev["custom"], true);
    assert_eq!(ev["time"], "2026-12-07T01:30:05Z");
    assert_eq!(ev["traceid"], "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "no traceid: both set from the span");
    assert_eq!(ev["traceparent"], ev["traceid"]);
    let body = br#"{"id":"e1","traceid":"mine","time":"2020-01-01T00:00:00Z","tracestate":"s"}"#;
    let ev = build(&publish(body, "application/cloudevents+json", &m), NOW).unwrap();
    assert_eq!((ev["traceid"].as_str(), ev["time"].as_str(), ev["tracestate"].as_str()), (Some("mine"), Some("2020-01-01T00:00:00Z"), Some("s")));
    assert!(!ev.contains_key("traceparent"));
}

#[test]
fn a_bad_incoming_cloudevent_is_an_error() {
    let m = Metadata::new();
    for body in [&b"[1]"[..], b"nope", b""] {
        assert!(matches!(build(&publish(body, "application/cloudevents+json", &m), NOW), Err(CloudEventError::InvalidCloudEvent(_))), "{body:?}");
    }
}

#[test]
fn ttl_sets_expiration_only_without_broker_ttl() {
    let m = md(&[("ttlInSeconds", "90")]);
    let ev = build(&publish(b"x", "", &m), NOW).unwrap();
    assert_eq!(ev["expiration"], "2026-12-07T01:31:35Z");
    let mut p = publish(b"x", "", &m);
    p.broker_has_ttl = true;
    assert!(!build(&p, NOW).unwrap().contains_key("expiration"));
    let m = md(&[("TTL", "2m")]);
    assert_eq!(build(&publish(b"x", "", &m), NOW).unwrap()["expiration"], "2026-12-07T01:32:05Z");
    // Go's ParseDuration reads "0" as a zero duration: expires at once, as daprd.
    assert_eq!(build(&publish(b"x", "", &md(&[("ttlInSeconds", "0")])), NOW).unwrap()["expiration"], "2026-12-07T01:30:05Z");
    for bad in ["-5", "abc", ""] {
        let m = md(&[("ttlInSeconds", bad)]);
        assert!(!build(&publish(b"x", "", &m), NOW).unwrap().contains_key("expiration"), "{bad}");
    }
}

#[test]
fn build_bytes_is_sorted_json() {
    let m = Metadata::new();
    let b = build_bytes(&publish(b"x", "", &m), NOW).unwrap();
    let s = std::str::from_utf8(&b).unwrap();
    assert!(s.starts_with(r#"{"data":"x","datacontenttype":"text/plain","id":"#), "{s}");
}

#[test]
fn raw_payload_flag_is_a_go_bool() {
    assert_eq!(raw_payload(&md(&[("rawPayload", "True")])), Ok(true));
    assert_eq!(raw_payload(&md(&[("rawPayload", "0")])), Ok(false));
    assert_eq!(raw_payload(&md(&[("rawPayload", "")])), Ok(false));
    assert_eq!(raw_payload(&Metadata::new()), Ok(false));
    assert_eq!(raw_payload(&md(&[("rawPayload", "yes")])), Err(CloudEventError::RawPayload("yes".into())));
}

fn message(data: &[u8], ct: Option<&str>, meta: &[(&str, &str)]) -> Message {
    Message { id: "1".into(), topic: "t".into(), data: Bytes::copy_from_slice(data), content_type: ct.map(str::to_string), metadata: md(meta), delivery_count: 1 }
}

#[test]
fn decodes_structured_events_with_trace_fallback() {
    let m = message(br#"{"id":"a","data":{"n":5}}"#, None, &[("traceparent", "tp"), ("tracestate", "ts")]);
    let ev = decode(&m, false).unwrap();
    assert_eq!(ev["data"]["n"], 5);
    assert_eq!((ev["traceparent"].as_str(), ev["traceid"].as_str(), ev["tracestate"].as_str()), (Some("tp"), Some("tp"), Some("ts")));
    let m = message(br#"{"id":"a","traceparent":"mine"}"#, None, &[("traceparent", "tp")]);
    assert_eq!(decode(&m, false).unwrap()["traceparent"], "mine");
    for bad in [&b"not json"[..], b"[]", b"\"s\""] {
        assert!(matches!(decode(&message(bad, None, &[]), false), Err(CloudEventError::Malformed(_))), "{bad:?}");
    }
}

#[test]
fn decodes_binary_mode_from_ce_headers() {
    let m = message(&[1, 2, 3], None, &[("content-type", "application/octet-stream"), ("Ce_Id", "b1"), ("ce_source", "s"), ("other", "x")]);
    let ev = decode(&m, false).unwrap();
    assert_eq!(ev["id"], "b1");
    assert_eq!(ev["source"], "s");
    assert_eq!(ev["data_base64"], "AQID");
    assert_eq!(ev["datacontenttype"], "application/octet-stream");
    assert!(!ev.contains_key("other"));
    let d = http_delivery(&ev, &m, false);
    assert_eq!(serde_json::from_slice::<Value>(&d.body).unwrap()["id"], "b1");
}

#[test]
fn wraps_raw_payloads() {
    let m = message(b"not an event", Some("application/json"), &[("pubsubName", "ps"), ("traceid", "t1"), ("traceparent", "tp")]);
    let ev = decode(&m, true).unwrap();
    assert_eq!(ev["data_base64"], base64::engine::general_purpose::STANDARD.encode("not an event"));
    assert_eq!(ev["datacontenttype"], "application/octet-stream");
    assert_eq!((ev["pubsubname"].as_str(), ev["topic"].as_str()), (Some("ps"), Some("t")));
    assert_eq!((ev["traceid"].as_str(), ev["traceparent"].as_str()), (Some("tp"), Some("tp")));
    let d = http_delivery(&ev, &m, true);
    assert_eq!(d.content_type, "application/cloudevents+json");
    assert_eq!(serde_json::from_slice::<Value>(&d.body).unwrap()["data_base64"], ev["data_base64"]);
    // A structured event is posted as the broker's bytes.
    let m = message(br#"{"id":"a"}"#, None, &[]);
    assert_eq!(http_delivery(&decode(&m, false).unwrap(), &m, false).body, m.data);
}

#[test]
fn expiry() {
    let mut ev = Event::new();
    assert!(!is_expired(&ev, NOW));
    ev.insert("expiration".into(), "2026-12-07T01:30:04Z".into());
    assert!(is_expired(&ev, NOW));
    ev.insert("expiration".into(), "2026-12-07T01:30:06+00:00".into());
    assert!(!is_expired(&ev, NOW));
    ev.insert("expiration".into(), "garbage".into());
    assert!(!is_expired(&ev, NOW));
    ev.insert("expiration".into(), json!(5));
    assert!(!is_expired(&ev, NOW));
}

#[test]
fn grpc_request_as_daprd() {
    let m = Metadata::new();
    let ev = build(&publish(br#"{"n":5}"#, "application/json", &m), NOW).unwrap();
    let r = grpc_request(&ev, "orders/eu", "ps", "/route").unwrap();
    assert_eq!(r.data, br#"{"n":5}"#);
    assert_eq!((r.r#type.as_str(), r.spec_version.as_str(), r.source.as_str()), ("com.dapr.event.sent", "1.0", "pub-app"));
    assert_eq!((r.topic.as_str(), r.pubsub_name.as_str(), r.path.as_str()), ("orders/eu", "ps", "/route"));
    let ext = r.extensions.unwrap();
    assert!(ext.fields.contains_key("traceparent") && ext.fields.contains_key("topic") && ext.fields.contains_key("time"));
    assert!(!ext.fields.contains_key("id") && !ext.fields.contains_key("data"));
    let ev = build(&publish(b"hi", "text/plain", &m), NOW).unwrap();
    assert_eq!(grpc_request(&ev, "t", "ps", "/").unwrap().data, b"hi");
    let ev = build(&publish(&[9, 8], "application/octet-stream", &m), NOW).unwrap();
    assert_eq!(grpc_request(&ev, "t", "ps", "/").unwrap().data, vec![9, 8]);
    assert_eq!(grpc_cloud_event(&ev).unwrap().data, vec![9, 8]);
    let mut bad = ev.clone();
    bad.insert("data_base64".into(), "!!".into());
    assert!(matches!(grpc_request(&bad, "t", "ps", "/"), Err(CloudEventError::UnexpectedData(_))));
    let mut bad = Event::new();
    bad.insert("datacontenttype".into(), "text/plain".into());
    bad.insert("data".into(), json!({"a": 1}));
    assert!(grpc_request(&bad, "t", "ps", "/").is_err());
}
