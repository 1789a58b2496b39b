//! The state building block over gRPC (`dapr.proto.runtime.v1.Dapr`), against a real sidecar
//! with a `state.sqlite` store (`statestore`) and a `state.in-memory` store (`mem`).
//!
//! Success paths (values, ETags, TTL metadata, first-write, bulk, transactions, query) run on
//! both stores where both offer the feature. Every error is checked as daprd v1.18 sends it:
//! gRPC code, message, and the rich details (`ErrorInfo` reason/domain/metadata, `ResourceInfo`,
//! `BadRequest`). Also: the 4 MiB message limit, a 10,000-key bulk get, methods rapr does not
//! implement, `GetMetadata`/`SetMetadata` and `Shutdown`.

use std::collections::HashMap;
use std::time::Duration;

use rapr_proto::common::v1 as common;
use rapr_proto::runtime::v1 as pb;
use rapr_proto::runtime::v1::dapr_client::DaprClient;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::harness::{Sidecar, SidecarBuilder};

/// Both stores: SQLite first, in-memory second.
const STORES: [&str; 2] = ["statestore", "mem"];
/// A version no store could have issued for these keys (a well-formed UUID).
const WRONG_ETAG: &str = "8f0b8c3e-1f8a-4f5e-9a63-2a3b4c5d6e7f";

async fn sidecar() -> Sidecar {
    SidecarBuilder::new("app").sqlite("statestore").memory("mem").start().await
}

fn item(key: &str, value: &[u8]) -> common::StateItem {
    common::StateItem { key: key.into(), value: value.to_vec(), ..Default::default() }
}

fn json_item(key: &str, value: &Value) -> common::StateItem {
    common::StateItem {
        key: key.into(),
        value: serde_json::to_vec(value).unwrap(),
        metadata: HashMap::from([("contentType".to_string(), "application/json".to_string())]),
        ..Default::default()
    }
}

fn with_etag(mut i: common::StateItem, etag: &str) -> common::StateItem {
    i.etag = Some(common::Etag { value: etag.into() });
    i
}

fn first_write() -> Option<common::StateOptions> {
    Some(common::StateOptions {
        concurrency: common::state_options::StateConcurrency::ConcurrencyFirstWrite as i32,
        consistency: common::state_options::StateConsistency::ConsistencyStrong as i32,
    })
}

async fn save(c: &mut DaprClient<Channel>, store: &str, items: Vec<common::StateItem>) -> Result<(), Status> {
    c.save_state(pb::SaveStateRequest { store_name: store.into(), states: items }).await.map(|_| ())
}

async fn get(c: &mut DaprClient<Channel>, store: &str, key: &str) -> Result<pb::GetStateResponse, Status> {
    c.get_state(pb::GetStateRequest { store_name: store.into(), key: key.into(), ..Default::default() }).await.map(|r| r.into_inner())
}

async fn delete(c: &mut DaprClient<Channel>, store: &str, key: &str, etag: Option<&str>) -> Result<(), Status> {
    c.delete_state(pb::DeleteStateRequest {
        store_name: store.into(),
        key: key.into(),
        etag: etag.map(|e| common::Etag { value: e.into() }),
        ..Default::default()
    })
    .await
    .map(|_| ())
}

async fn transact(c: &mut DaprClient<Channel>, store: &str, ops: Vec<(&str, common::StateItem)>) -> Result<(), Status> {
    let operations = ops
        .into_iter()
        .map(|(t, i)| pb::TransactionalStateOperation { operation_type: t.into(), request: Some(i) })
        .collect();
    c.execute_state_transaction(pb::ExecuteStateTransactionRequest { store_name: store.into(), operations, metadata: HashMap::new() })
        .await
        .map(|_| ())
}

async fn query(c: &mut DaprClient<Channel>, store: &str, q: &str) -> Result<pb::QueryStateResponse, Status> {
    c.query_state_alpha1(pb::QueryStateRequest { store_name: store.into(), query: q.into(), metadata: HashMap::new() })
        .await
        .map(|r| r.into_inner())
}

/// Asserts an ErrorInfo with Dapr's domain, the reason, and exactly this metadata.
fn assert_info(s: &Status, reason: &str, metadata: &[(&str, &str)]) {
    let info = s.get_details_error_info().unwrap_or_else(|| panic!("no ErrorInfo in {s:?}"));
    assert_eq!(info.reason, reason, "{s:?}");
    assert_eq!(info.domain, "dapr.io", "{s:?}");
    let want: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(info.metadata, want, "{s:?}");
}

fn assert_resource(s: &Status, name: &str) {
    let r = s.get_details_resource_info().unwrap_or_else(|| panic!("no ResourceInfo in {s:?}"));
    assert_eq!((r.resource_type.as_str(), r.resource_name.as_str()), ("state", name), "{s:?}");
}

#[tokio::test]
async fn save_get_and_delete_on_both_stores() {
    let sc = sidecar().await;
    let mut c = sc.grpc().await;
    for store in STORES {
        save(&mut c, store, vec![item("k", b"\x00bytes\xff")]).await.unwrap();
        let r = get(&mut c, store, "k").await.unwrap();
        assert_eq!(r.data, b"\x00bytes\xff", "{store}");
        assert!(uuid::Uuid::parse_str(&r.etag).is_ok(), "{store}: etag {:?}", r.etag);
        assert!(!r.metadata.contains_key("ttlExpireTime"), "{store}: {:?}", r.metadata);

        // A new write issues a new version; the old one no longer matches.
        save(&mut c, store, vec![with_etag(item("k", b"second"), &r.etag)]).await.unwrap();
        let r2 = get(&mut c, store, "k").await.unwrap();
        assert_eq!(r2.data, b"second");
        assert_ne!(r2.etag, r.etag, "{store}");

        // JSON values are stored canonically and read back as JSON.
        save(&mut c, store, vec![json_item("j", &json!({"a": [1, 2], "b": "x"}))]).await.unwrap();
        let j: Value = serde_json::from_slice(&get(&mut c, store, "j").await.unwrap().data).unwrap();
        assert_eq!(j, json!({"a": [1, 2], "b": "x"}));

        // A missing key is an empty answer, not an error.
        let missing = get(&mut c, store, "never-written").await.unwrap();
        assert_eq!((missing.data.len(), missing.etag.as_str()), (0, ""), "{store}");

        delete(&mut c, store, "k", Some(&r2.etag)).await.unwrap();
        delete(&mut c, store, "j", None).await.unwrap();
        assert!(get(&mut c, store, "k").await.unwrap().data.is_empty(), "{store}");
        assert!(get(&mut c, store, "j").await.unwrap().data.is_empty(), "{store}");
        // Deleting a missing key without an ETag succeeds.
        delete(&mut c, store, "never-written", None).await.unwrap();
    }
}

#[tokio::test]
async fn ttl_in_seconds_is_reported_as_ttl_expire_time() {
    let sc = sidecar().await;
    let mut c = sc.grpc().await;
    for store in STORES {
        let mut i = item("ttl", b"v");
        i.metadata.insert("ttlInSeconds".into(), "100".into());
        let before = OffsetDateTime::now_utc();
        save(&mut c, store, vec![i]).await.unwrap();
        let r = get(&mut c, store, "ttl").await.unwrap();
        assert_eq!(r.data, b"v");
        let expire = r.metadata.get("ttlExpireTime").unwrap_or_else(|| panic!("{store}: no ttlExpireTime in {:?}", r.metadata));
        let at = OffsetDateTime::parse(expire, &Rfc3339).unwrap_or_else(|e| panic!("{store}: {expire:?} is not RFC 3339: {e}"));
        let secs = (at - before).whole_seconds();
        assert!((95..=105).contains(&secs), "{store}: expires in {secs}s ({expire})");

        // ttlInSeconds -1 means never expire: no expiry reported.
        let mut forever = item("ttl", b"v2");
        forever.metadata.insert("ttlInSeconds".into(), "-1".into());
        save(&mut c, store, vec![forever]).await.unwrap();
        let r = get(&mut c, store, "ttl").await.unwrap();
        assert!(!r.metadata.contains_key("ttlExpireTime"), "{store}: {:?}", r.metadata);
    }
}

#[tokio::test]
async fn first_write_concurrency_needs_the_current_etag() {
    let sc = sidecar().await;
    let mut c = sc.grpc().await;
    for store in STORES {
        let mut i = item("fw", b"one");
        i.options = first_write();
        save(&mut c, store, vec![i.clone()]).await.unwrap();

        // The key exists now: first-write without its ETag loses.
        let e = save(&mut c, store, vec![i.clone()]).await.unwrap_err();
        assert_eq!(e.code(), Code::Aborted, "{store}: {e:?}");
        assert!(e.message().starts_with(&format!("failed saving state in state store {store}: possible etag mismatch")), "{store}: {e:?}");

        let etag = get(&mut c, store, "fw").await.unwrap().etag;
        let mut again = with_etag(item("fw", b"two"), &etag);
        again.options = first_write();
        save(&mut c, store, vec![again]).await.unwrap();
        assert_eq!(get(&mut c, store, "fw").await.unwrap().data, b"two", "{store}");
    }
}

#[tokio::test]
async fn bulk_get_and_bulk_delete_with_a_missing_key() {
    let sc = sidecar().await;
    let mut c = sc.grpc().await;
    for store in STORES {
        save(&mut c, store, vec![item("a", b"1"), item("b", b"2")]).await.unwrap();
        let r = c
            .get_bulk_state(pb::GetBulkStateRequest { store_name: store.into(), keys: vec!["a".into(), "missing".into(), "b".into()], ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let keys: Vec<&str> = r.items.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["a", "missing", "b"], "{store}");
        assert_eq!(r.items[0].data, b"1");
        assert_eq!(r.items[2].data, b"2");
        assert!(!r.items[0].etag.is_empty() && !r.items[2].etag.is_empty(), "{store}");
        let m = &r.items[1];
        assert_eq!((m.data.len(), m.etag.as_str(), m.error.as_str()), (0, "", ""), "{store}: missing key answered {m:?}");

        c.delete_bulk_state(pb::DeleteBulkStateRequest { store_name: store.into(), states: vec![item("a", b""), item("b", b""), item("missing", b"")] })
            .await
            .unwrap();
        assert!(get(&mut c, store, "a").await.unwrap().data.is_empty(), "{store}");
        assert!(get(&mut c, store, "b").await.unwrap().data.is_empty(), "{store}");
    }
}

#[tokio::test]
async fn transaction_upserts_and_deletes_together() {
    let sc = sidecar().await;
    let mut c = sc.grpc().await;
    for store in STORES {
        save(&mut c, store, vec![item("old", b"o")]).await.unwrap();
        transact(&mut c, store, vec![("upsert", item("new", b"n")), ("upsert", json_item("doc", &json!({"x": 1}))), ("delete", item("old", b""))])
            .await
            .unwrap();
        assert_eq!(get(&mut c, store, "new").await.unwrap().data, b"n", "{store}");
        let doc: Value = serde_json::from_slice(&get(&mut c, store, "doc").await.unwrap().data).unwrap();
        assert_eq!(doc, json!({"x": 1}), "{store}");
        assert!(get(&mut c, store, "old").await.unwrap().data.is_empty(), "{store}");
        // An empty transaction is a no-op success.
        transact(&mut c, store, vec![]).await.unwrap();
    }
}

#[tokio::test]
async fn query_with_filter_sort_and_page_token_on_sqlite() {
    let sc = sidecar().await;
    let mut c = sc.grpc().await;
    let mut items: Vec<_> = (0..4).map(|n| json_item(&format!("p{n}"), &json!({"city": "paris", "n": n}))).collect();
    items.push(json_item("r0", &json!({"city": "rome", "n": 9})));
    save(&mut c, "statestore", items).await.unwrap();

    let page = |token: Option<&str>| {
        let mut q = json!({"filter": {"EQ": {"city": "paris"}}, "sort": [{"key": "n", "order": "DESC"}], "page": {"limit": 2}});
        if let Some(t) = token {
            q["page"]["token"] = json!(t);
        }
        q.to_string()
    };
    let first = query(&mut c, "statestore", &page(None)).await.unwrap();
    let keys: Vec<&str> = first.results.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["p3", "p2"]);
    let v: Value = serde_json::from_slice(&first.results[0].data).unwrap();
    assert_eq!(v, json!({"city": "paris", "n": 3}));
    assert!(!first.results[0].etag.is_empty());
    assert!(!first.token.is_empty(), "a second page is due");

    let second = query(&mut c, "statestore", &page(Some(&first.token))).await.unwrap();
    let keys: Vec<&str> = second.results.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["p1", "p0"]);
    assert_eq!(second.token, "", "no page after the last");
}

#[tokio::test]
async fn unknown_store_is_invalid_argument_without_app_id() {
    let sc = sidecar().await;
    let mut c = sc.grpc().await;
    let mut errors = vec![
        ("GetState", get(&mut c, "nosuch", "k").await.unwrap_err()),
        ("SaveState", save(&mut c, "nosuch", vec![item("k", b"v")]).await.unwrap_err()),
        ("DeleteState", delete(&mut c, "nosuch", "k", None).await.unwrap_err()),
        ("ExecuteStateTransaction", transact(&mut c, "nosuch", vec![("upsert", item("k", b"v"))]).await.unwrap_err()),
        ("QueryStateAlpha1", query(&mut c, "nosuch", "{}").await.unwrap_err()),
    ];
    let bulk = c
        .get_bulk_state(pb::GetBulkStateRequest { store_name: "nosuch".into(), keys: vec!["k".into()], ..Default::default() })
        .await
        .unwrap_err();
    errors.push(("GetBulkState", bulk));
    let bulk_delete =
        c.delete_bulk_state(pb::DeleteBulkStateRequest { store_name: "nosuch".into(), states: vec![item("k", b"")] }).await.unwrap_err();
    errors.push(("DeleteBulkState", bulk_delete));
    for (rpc, e) in errors {
        assert_eq!(e.code(), Code::InvalidArgument, "{rpc}: {e:?}");
        assert_eq!(e.message(), "state store nosuch is not found", "{rpc}");
        // daprd's gRPC `GetStateStore` builds it with an empty app id: no metadata.
        assert_info(&e, "DAPR_STATE_NOT_FOUND", &[]);
        assert!(e.get_details_resource_info().is_none(), "{rpc}: daprd sends no ResourceInfo here: {e:?}");
    }
}

#[tokio::test]
async fn no_store_configured_is_failed_precondition() {
    let sc = SidecarBuilder::new("app").start().await;
    let mut c = sc.grpc().await;
    for e in [get(&mut c, "statestore", "k").await.unwrap_err(), save(&mut c, "statestore", vec![item("k", b"v")]).await.unwrap_err()] {
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert_eq!(e.message(), "state store statestore is not configured");
        assert_info(&e, "DAPR_STATE_NOT_CONFIGURED", &[]);
    }
}

#[tokio::test]
async fn key_with_separator_is_an_illegal_key() {
    let sc = sidecar().await;
    let mut c = sc.grpc().await;
    for store in STORES {
        let errors = [
            get(&mut c, store, "a||b").await.unwrap_err(),
            save(&mut c, store, vec![item("a||b", b"v")]).await.unwrap_err(),
            delete(&mut c, store, "a||b", None).await.unwrap_err(),
        ];
        for e in errors {
            assert_eq!(e.code(), Code::InvalidArgument, "{store}: {e:?}");
            assert_eq!(e.message(), "input key/keyPrefix 'a||b' can't contain '||'");
            assert_info(&e, "DAPR_STATE_ILLEGAL_KEY", &[]);
            let bad = e.get_details_bad_request().unwrap_or_else(|| panic!("no BadRequest in {e:?}"));
            assert_eq!(bad.field_violations.len(), 1);
            assert_eq!(bad.field_violations[0].field, "a||b");
            assert_eq!(bad.field_violations[0].description, e.message());
        }
    }
}

/// daprd's `StateStoreInvalidKeyName` also carries `ResourceInfo{state, <store>}`.
#[tokio::test]
async fn illegal_key_names_the_store_in_resource_info() {
    let sc = sidecar().await;
    let mut c = sc.grpc().await;
    let e = get(&mut c, "statestore", "a||b").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_resource(&e, "statestore");
}

#[tokio::test]
async fn etag_mismatch_on_save_and_delete_is_aborted() {
    let sc = sidecar().await;
    let mut c = sc.grpc().await;
    for store in STORES {
        save(&mut c, store, vec![item("e", b"v")]).await.unwrap();
        let e = save(&mut c, store, vec![with_etag(item("e", b"w"), WRONG_ETAG)]).await.unwrap_err();
        assert_eq!(e.code(), Code::Aborted, "{store}: {e:?}");
        assert!(e.message().starts_with(&format!("failed saving state in state store {store}: possible etag mismatch")), "{e:?}");

        let e = delete(&mut c, store, "e", Some(WRONG_ETAG)).await.unwrap_err();
        assert_eq!(e.code(), Code::Aborted, "{store}: {e:?}");
        assert!(e.message().starts_with("failed deleting state with key e: possible etag mismatch"), "{e:?}");
        // Neither write landed.
        assert_eq!(get(&mut c, store, "e").await.unwrap().data, b"v", "{store}");
    }
}

/// SQLite and in-memory never parse an ETag (contrib's stores): one that is not even a UUID is a
/// mismatch like any other, never INVALID_ARGUMENT.
#[tokio::test]
async fn non_uuid_etag_is_a_mismatch() {
    let sc = sidecar().await;
    let mut c = sc.grpc().await;
    for store in STORES {
        save(&mut c, store, vec![item("m", b"v")]).await.unwrap();
        let e = save(&mut c, store, vec![with_etag(item("m", b"w"), "not-a-uuid")]).await.unwrap_err();
        assert_eq!(e.code(), Code::Aborted, "{store}: {e:?}");
        assert!(e.message().starts_with(&format!("failed saving state in state store {store}: possible etag mismatch")), "{e:?}");

        let e = delete(&mut c, store, "m", Some("not-a-uuid")).await.unwrap_err();
        assert_eq!(e.code(), Code::Aborted, "{store}: {e:?}");
        assert!(e.message().starts_with("failed deleting state with key m: possible etag mismatch"), "{e:?}");
        // First write with an ETag on a key that does not exist.
        let mut fw = with_etag(item("absent", b"w"), "not-a-uuid");
        fw.options = first_write();
        let e = save(&mut c, store, vec![fw]).await.unwrap_err();
        assert_eq!(e.code(), Code::Aborted, "{store}: {e:?}");
        assert_eq!(get(&mut c, store, "m").await.unwrap().data, b"v", "{store}");
    }
}

#[tokio::test]
async fn query_on_in_memory_is_not_supported() {
    let sc = sidecar().await;
    let mut c = sc.grpc().await;
    let e = query(&mut c, "mem", r#"{"filter": {"EQ": {"a": 1}}}"#).await.unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    assert_eq!(e.message(), "state store does not support querying");
    assert_info(&e, "DAPR_STATE_QUERYING_NOT_SUPPORTED", &[]);
    assert_resource(&e, "mem");
}

#[tokio::test]
async fn bad_query_json_is_query_failed() {
    let sc = sidecar().await;
    let mut c = sc.grpc().await;
    let e = query(&mut c, "statestore", "{not json").await.unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    assert!(e.message().starts_with("state store statestore query failed: failed to parse JSON query body: "), "{e:?}");
    assert_info(&e, "DAPR_STATE_QUERY_FAILED", &[]);
    assert_resource(&e, "statestore");
}

#[tokio::test]
async fn unknown_transaction_operation_is_unimplemented() {
    let sc = sidecar().await;
    let mut c = sc.grpc().await;
    for store in STORES {
        let e = transact(&mut c, store, vec![("upsert", item("t", b"v")), ("merge", item("t", b"w"))]).await.unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented, "{store}: {e:?}");
        assert_eq!(e.message(), "operation type merge not supported");
        assert!(get(&mut c, store, "t").await.unwrap().data.is_empty(), "{store}: nothing applied");
    }
}

#[tokio::test]
async fn transaction_with_a_stale_etag_applies_nothing() {
    let sc = sidecar().await;
    let mut c = sc.grpc().await;
    for store in STORES {
        save(&mut c, store, vec![item("keep", b"k"), item("stale", b"v1")]).await.unwrap();
        let old = get(&mut c, store, "stale").await.unwrap().etag;
        save(&mut c, store, vec![item("stale", b"v2")]).await.unwrap();

        let e = transact(
            &mut c,
            store,
            vec![("upsert", item("fresh", b"f")), ("delete", item("keep", b"")), ("upsert", with_etag(item("stale", b"v3"), &old))],
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::Internal, "{store}: {e:?}");
        assert!(e.message().starts_with("error while executing state transaction: "), "{e:?}");

        assert!(get(&mut c, store, "fresh").await.unwrap().data.is_empty(), "{store}: upsert before the failure was applied");
        assert_eq!(get(&mut c, store, "keep").await.unwrap().data, b"k", "{store}: delete before the failure was applied");
        assert_eq!(get(&mut c, store, "stale").await.unwrap().data, b"v2", "{store}");
    }
}

#[tokio::test]
async fn non_numeric_ttl_is_internal() {
    let sc = sidecar().await;
    let mut c = sc.grpc().await;
    for store in STORES {
        let mut i = item("bad-ttl", b"v");
        i.metadata.insert("ttlInSeconds".into(), "soon".into());
        let e = save(&mut c, store, vec![i]).await.unwrap_err();
        assert_eq!(e.code(), Code::Internal, "{store}: {e:?}");
        assert!(e.message().starts_with(&format!("failed saving state in state store {store}: ")), "{e:?}");
        assert!(e.message().contains("ttlInSeconds"), "{store}: {e:?}");
        assert!(get(&mut c, store, "bad-ttl").await.unwrap().data.is_empty(), "{store}");
    }
}

#[tokio::test]
async fn message_over_four_mib_is_rejected_and_the_sidecar_keeps_serving() {
    let sc = sidecar().await;
    let mut c = sc.grpc().await;
    let big = vec![b'x'; 5 << 20];
    let e = save(&mut c, "statestore", vec![item("big", &big)]).await.unwrap_err();
    // daprd (grpc-go) answers RESOURCE_EXHAUSTED; tonic's decoder limit answers OUT_OF_RANGE.
    assert!(matches!(e.code(), Code::ResourceExhausted | Code::OutOfRange), "{e:?}");
    assert!(e.message().contains("4194304"), "the limit is named: {e:?}");

    let mut fresh = sc.grpc().await;
    save(&mut fresh, "statestore", vec![item("small", b"ok")]).await.unwrap();
    assert_eq!(get(&mut fresh, "statestore", "small").await.unwrap().data, b"ok");
    assert!(get(&mut fresh, "statestore", "big").await.unwrap().data.is_empty());
    // Just under the limit still passes.
    let near = vec![b'y'; (4 << 20) - 4096];
    save(&mut fresh, "statestore", vec![item("near", &near)]).await.unwrap();
}

/// grpc-go (daprd) rejects an oversize message with RESOURCE_EXHAUSTED
/// (`grpc: received message larger than max (N vs. 4194304)`).
#[tokio::test]
async fn message_over_four_mib_is_resource_exhausted_as_in_daprd() {
    let sc = sidecar().await;
    let mut c = sc.grpc().await;
    let e = save(&mut c, "statestore", vec![item("big", &vec![b'x'; 5 << 20])]).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
}

#[tokio::test]
async fn bulk_get_of_ten_thousand_keys_answers_all_in_order() {
    let sc = sidecar().await;
    let mut c = sc.grpc().await;
    for store in STORES {
        let written: Vec<_> = (0..10_000).step_by(100).map(|i| item(&format!("k{i}"), format!("v{i}").as_bytes())).collect();
        save(&mut c, store, written).await.unwrap();
        let keys: Vec<String> = (0..10_000).map(|i| format!("k{i}")).collect();
        let r = c
            .get_bulk_state(pb::GetBulkStateRequest { store_name: store.into(), keys: keys.clone(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.items.len(), 10_000, "{store}");
        for (i, it) in r.items.iter().enumerate() {
            assert_eq!(it.key, keys[i], "{store}: item {i} out of order");
            assert_eq!(it.error, "", "{store}: {it:?}");
            if i % 100 == 0 {
                assert_eq!(it.data, format!("v{i}").as_bytes(), "{store}: {}", it.key);
            } else {
                assert!(it.data.is_empty() && it.etag.is_empty(), "{store}: {it:?}");
            }
        }
    }
}

async fn raw_unary(sc: &Sidecar, path: &'static str) -> Status {
    let ch = Channel::from_shared(format!("http://127.0.0.1:{}", sc.grpc)).unwrap().connect().await.unwrap();
    let mut g = tonic::client::Grpc::new(ch);
    g.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    g.unary(tonic::Request::new(()), http::uri::PathAndQuery::from_static(path), codec)
        .await
        .expect_err("rapr does not implement this method")
}

#[tokio::test]
async fn methods_rapr_does_not_implement_are_unimplemented_and_named() {
    let sc = sidecar().await;
    let e = raw_unary(&sc, "/dapr.proto.runtime.v1.Dapr/TryLockAlpha1").await;
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    assert!(e.message().contains("TryLockAlpha1"), "{e:?}");
    let e = raw_unary(&sc, "/dapr.proto.runtime.v1.AppCallbackAlpha/OnBulkTopicEventAlpha1").await;
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    assert!(e.message().contains("OnBulkTopicEventAlpha1"), "{e:?}");
    // The connection and the served methods are unaffected.
    let mut c = sc.grpc().await;
    save(&mut c, "mem", vec![item("after", b"x")]).await.unwrap();
}

#[tokio::test]
async fn get_metadata_lists_components_and_set_metadata_adds_to_extended() {
    let sc = sidecar().await;
    let mut c = sc.grpc().await;
    let m = c.get_metadata(pb::GetMetadataRequest {}).await.unwrap().into_inner();
    assert_eq!(m.id, "app");
    assert!(!m.runtime_version.is_empty());
    assert_eq!(m.extended_metadata.get("daprRuntimeVersion"), Some(&m.runtime_version), "{:?}", m.extended_metadata);
    let mut comps: Vec<_> = m.registered_components.iter().map(|c| (c.name.as_str(), c.r#type.as_str(), c.version.as_str())).collect();
    comps.sort();
    assert_eq!(comps, [("mem", "state.in-memory", "v1"), ("statestore", "state.sqlite", "v1")]);
    for comp in &m.registered_components {
        for cap in ["ETAG", "TRANSACTIONAL", "TTL"] {
            assert!(comp.capabilities.iter().any(|c| c == cap), "{comp:?} lacks {cap}");
        }
        let query = comp.capabilities.iter().any(|c| c == "QUERY_API");
        assert_eq!(query, comp.name == "statestore", "{comp:?}");
    }

    c.set_metadata(pb::SetMetadataRequest { key: "owner".into(), value: "team-a".into() }).await.unwrap();
    c.set_metadata(pb::SetMetadataRequest { key: "owner".into(), value: "team-b".into() }).await.unwrap();
    let m = c.get_metadata(pb::GetMetadataRequest {}).await.unwrap().into_inner();
    assert_eq!(m.extended_metadata.get("owner").map(String::as_str), Some("team-b"));
    // The HTTP view agrees.
    let body: Value = sc.client.get(sc.url("/v1.0/metadata")).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["extended"]["owner"], "team-b");
}

#[tokio::test]
async fn shutdown_makes_the_process_exit_zero() {
    let mut sc = sidecar().await;
    let mut c = sc.grpc().await;
    c.shutdown(pb::ShutdownRequest {}).await.unwrap();
    let status = sc.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{status}");
}
