"""State API through the official Dapr Python SDK's gRPC client (DaprClient).

Every test that makes sense for both stores runs against `statestore` (state.sqlite) and
`memstore` (state.in-memory); the query tests target statestore only (QUERY_API is a rapr
extension on SQLite; in-memory does not claim it, and daprd answers a query on such a store
with ERR_STATE_STORE_NOT_SUPPORTED: gRPC INTERNAL).
"""

from __future__ import annotations

import json
import time
import uuid

import grpc
import pytest
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._state import Concurrency, StateOptions
from dapr.proto import api_v1

from raprkit import wait_until


def uniq(name: str) -> str:
    """A key no other test (or earlier run) uses."""
    return f"{name}-{uuid.uuid4().hex[:12]}"


def expect_grpc_error(code: grpc.StatusCode, fn, *args, **kwargs) -> DaprGrpcError:
    with pytest.raises(grpc.RpcError) as ei:
        fn(*args, **kwargs)
    err = ei.value
    assert err.code() == code, f"expected {code}, got {err.code()}: {err.details()}"
    return err


# ---------------------------------------------------------------- save / get


def test_save_get_str(dapr_client, store):
    key = uniq("str")
    dapr_client.save_state(store, key, "hello wörld")
    resp = dapr_client.get_state(store, key)
    assert resp.data == "hello wörld".encode("utf-8")
    assert resp.text() == "hello wörld"
    assert isinstance(resp.etag, str) and resp.etag != ""


def test_save_get_bytes(dapr_client, store):
    key = uniq("bytes")
    value = bytes(range(256)) + b"\x00\xff\xfe not utf-8"
    dapr_client.save_state(store, key, value)
    resp = dapr_client.get_state(store, key)
    assert resp.data == value
    assert resp.etag != ""


def test_save_get_json_bytes_roundtrip_unchanged(dapr_client, store):
    key = uniq("json")
    value = b'{"b": 2, "a": [1, 2, 3], "s": "x"}'
    dapr_client.save_state(store, key, value)
    assert dapr_client.get_state(store, key).data == value


def test_update_changes_etag(dapr_client, store):
    key = uniq("upd")
    dapr_client.save_state(store, key, "v1")
    first = dapr_client.get_state(store, key)
    dapr_client.save_state(store, key, "v2")
    second = dapr_client.get_state(store, key)
    assert first.data == b"v1"
    assert second.data == b"v2"
    assert first.etag != "" and second.etag != ""
    assert first.etag != second.etag


def test_get_missing_key_is_empty(dapr_client, store):
    resp = dapr_client.get_state(store, uniq("missing"))
    assert resp.data == b""
    assert resp.etag == ""


def test_save_bulk_then_get_bulk_with_missing_key(dapr_client, store):
    from dapr.clients.grpc._state import StateItem

    k1, k2, missing = uniq("bulk1"), uniq("bulk2"), uniq("bulk-missing")
    dapr_client.save_bulk_state(store, [StateItem(k1, "one"), StateItem(k2, b"\x00two")])
    etag1 = dapr_client.get_state(store, k1).etag
    etag2 = dapr_client.get_state(store, k2).etag

    resp = dapr_client.get_bulk_state(store, [k1, k2, missing], parallelism=2)
    items = {i.key: i for i in resp.items}
    assert len(resp.items) == 3
    assert set(items) == {k1, k2, missing}
    assert items[k1].data == b"one"
    assert items[k1].etag == etag1
    assert items[k1].error == ""
    assert items[k2].data == b"\x00two"
    assert items[k2].etag == etag2
    assert items[missing].data == b""
    assert items[missing].etag == ""
    assert items[missing].error == ""


# ---------------------------------------------------------------- delete


def test_delete(dapr_client, store):
    key = uniq("del")
    dapr_client.save_state(store, key, "doomed")
    assert dapr_client.get_state(store, key).data == b"doomed"
    dapr_client.delete_state(store, key)
    resp = dapr_client.get_state(store, key)
    assert resp.data == b""
    assert resp.etag == ""


def test_delete_missing_key_succeeds(dapr_client, store):
    dapr_client.delete_state(store, uniq("never-saved"))


def test_delete_with_current_etag(dapr_client, store):
    key = uniq("del-etag")
    dapr_client.save_state(store, key, "x")
    etag = dapr_client.get_state(store, key).etag
    dapr_client.delete_state(store, key, etag=etag)
    assert dapr_client.get_state(store, key).data == b""


def test_delete_with_wrong_etag_is_aborted(dapr_client, store):
    key = uniq("del-wrong")
    dapr_client.save_state(store, key, "kept")
    before = dapr_client.get_state(store, key)
    wrong = str(uuid.uuid4())
    assert wrong != before.etag
    expect_grpc_error(grpc.StatusCode.ABORTED, dapr_client.delete_state, store, key, etag=wrong)
    after = dapr_client.get_state(store, key)
    assert after.data == b"kept"
    assert after.etag == before.etag


def test_delete_bulk_state_via_sdk_stub(dapr_client, store):
    from dapr.proto import common_v1

    keys = [uniq("dbulk") for _ in range(3)]
    for k in keys:
        dapr_client.save_state(store, k, k)
    dapr_client._stub.DeleteBulkState(
        api_v1.DeleteBulkStateRequest(
            store_name=store, states=[common_v1.StateItem(key=k) for k in keys[:2]]
        )
    )
    assert dapr_client.get_state(store, keys[0]).data == b""
    assert dapr_client.get_state(store, keys[1]).data == b""
    assert dapr_client.get_state(store, keys[2]).data == keys[2].encode()


# ---------------------------------------------------------------- concurrency


def test_save_with_wrong_etag_is_aborted(dapr_client, store):
    key = uniq("save-wrong")
    dapr_client.save_state(store, key, "original")
    before = dapr_client.get_state(store, key)
    expect_grpc_error(grpc.StatusCode.ABORTED, dapr_client.save_state, store, key, "clobber",
                      etag=str(uuid.uuid4()))
    after = dapr_client.get_state(store, key)
    assert after.data == b"original"
    assert after.etag == before.etag


def test_save_with_current_etag(dapr_client, store):
    key = uniq("save-etag")
    dapr_client.save_state(store, key, "v1")
    etag = dapr_client.get_state(store, key).etag
    dapr_client.save_state(store, key, "v2", etag=etag)
    resp = dapr_client.get_state(store, key)
    assert resp.data == b"v2"
    assert resp.etag != etag
    # The etag just used is now stale.
    expect_grpc_error(grpc.StatusCode.ABORTED, dapr_client.save_state, store, key, "v3", etag=etag)
    assert dapr_client.get_state(store, key).data == b"v2"


def test_first_write_concurrency(dapr_client, store):
    key = uniq("first-write")
    fw = StateOptions(concurrency=Concurrency.first_write)
    # New key, no etag: allowed.
    dapr_client.save_state(store, key, "first", options=fw)
    resp = dapr_client.get_state(store, key)
    assert resp.data == b"first"
    # Existing key, no etag, first-write: the item exists, so this is a conflict.
    expect_grpc_error(grpc.StatusCode.ABORTED, dapr_client.save_state, store, key, "second", options=fw)
    assert dapr_client.get_state(store, key).data == b"first"
    # With the current etag: allowed.
    dapr_client.save_state(store, key, "third", etag=resp.etag, options=fw)
    assert dapr_client.get_state(store, key).data == b"third"
    # With the now stale etag: conflict.
    expect_grpc_error(grpc.StatusCode.ABORTED, dapr_client.save_state, store, key, "fourth",
                      etag=resp.etag, options=fw)
    assert dapr_client.get_state(store, key).data == b"third"


def test_last_write_concurrency_without_etag_overwrites(dapr_client, store):
    key = uniq("last-write")
    lw = StateOptions(concurrency=Concurrency.last_write)
    dapr_client.save_state(store, key, "a", options=lw)
    dapr_client.save_state(store, key, "b", options=lw)
    assert dapr_client.get_state(store, key).data == b"b"


# ---------------------------------------------------------------- transactions


def test_transaction_upsert_and_delete(dapr_client, store):
    a, b, gone, keep = uniq("tx-a"), uniq("tx-b"), uniq("tx-gone"), uniq("tx-keep")
    dapr_client.save_state(store, gone, "to be deleted")
    dapr_client.save_state(store, keep, "untouched")
    keep_etag = dapr_client.get_state(store, keep).etag

    dapr_client.execute_state_transaction(
        store,
        operations=[
            TransactionalStateOperation(key=a, data="A"),
            TransactionalStateOperation(key=b, data=b"\x01B"),
            TransactionalStateOperation(key=gone, operation_type=TransactionOperationType.delete),
        ],
    )
    assert dapr_client.get_state(store, a).data == b"A"
    assert dapr_client.get_state(store, b).data == b"\x01B"
    assert dapr_client.get_state(store, gone).data == b""
    kept = dapr_client.get_state(store, keep)
    assert kept.data == b"untouched"
    assert kept.etag == keep_etag


def test_transaction_with_stale_etag_rolls_back(dapr_client, store):
    new, guarded = uniq("tx-new"), uniq("tx-guarded")
    dapr_client.save_state(store, guarded, "guarded")
    with pytest.raises(grpc.RpcError):
        dapr_client.execute_state_transaction(
            store,
            operations=[
                TransactionalStateOperation(key=new, data="must not persist"),
                TransactionalStateOperation(key=guarded, etag=str(uuid.uuid4()),
                                            operation_type=TransactionOperationType.delete),
            ],
        )
    assert dapr_client.get_state(store, new).data == b""
    assert dapr_client.get_state(store, guarded).data == b"guarded"


# ---------------------------------------------------------------- TTL


def test_ttl_expires_key(dapr_client, store):
    short, visible, control = uniq("ttl1"), uniq("ttl2"), uniq("ttl-control")
    dapr_client.save_state(store, control, "stays")
    dapr_client.save_state(store, short, "ephemeral", state_metadata={"ttlInSeconds": "1"})
    dapr_client.save_state(store, visible, "briefly", state_metadata={"ttlInSeconds": "2"})
    # With 2 s to live it must still be readable right away (even with second-granular expiry).
    assert dapr_client.get_state(store, visible).data == b"briefly"
    started = time.monotonic()
    wait_until(lambda: dapr_client.get_state(store, short).data == b"", timeout=15,
               interval=0.2, what="ttlInSeconds=1 key to disappear")
    wait_until(lambda: dapr_client.get_state(store, visible).data == b"", timeout=15,
               interval=0.2, what="ttlInSeconds=2 key to disappear")
    assert time.monotonic() - started >= 0.5, "the ttl=2 key vanished far too early"
    assert dapr_client.get_state(store, control).data == b"stays"


# ---------------------------------------------------------------- query (statestore only)

QUERY_DOCS = {
    "q-1": {"person": {"org": "Dev Ops", "id": 1036}, "city": "San Francisco", "state": "CA"},
    "q-2": {"person": {"org": "Hardware", "id": 1028}, "city": "Seattle", "state": "WA"},
    "q-3": {"person": {"org": "Finance", "id": 1071}, "city": "Sacramento", "state": "CA"},
    "q-4": {"person": {"org": "Dev Ops", "id": 1042}, "city": "Los Angeles", "state": "CA"},
}


@pytest.fixture(scope="module")
def query_docs(dapr_client):
    prefix = f"query-{uuid.uuid4().hex[:8]}-"
    keys = {}
    for name, doc in QUERY_DOCS.items():
        key = prefix + name
        # As with daprd, a value is stored as JSON (and so can be queried) only when its
        # contentType says so; otherwise gRPC values are opaque bytes.
        dapr_client.save_state("statestore", key, json.dumps(doc),
                               state_metadata={"contentType": "application/json"})
        keys[name] = key
    return keys


def test_query_filter_and_sort(dapr_client, query_docs):
    query = json.dumps({"filter": {"EQ": {"state": "CA"}},
                        "sort": [{"key": "person.id", "order": "DESC"}]})
    resp = dapr_client.query_state("statestore", query)
    got = [(r.key, json.loads(r.value)) for r in resp.results]
    expected = [(query_docs[n], QUERY_DOCS[n]) for n in ("q-3", "q-4", "q-1")]
    assert got == expected
    for r in resp.results:
        assert r.etag == dapr_client.get_state("statestore", r.key).etag
        assert r.error == ""


def test_query_paging_token(dapr_client, query_docs):
    base = {"filter": {"EQ": {"state": "CA"}}, "sort": [{"key": "person.id", "order": "ASC"}]}
    first = dapr_client.query_state("statestore", json.dumps({**base, "page": {"limit": 2}}))
    assert [r.key for r in first.results] == [query_docs["q-1"], query_docs["q-4"]]
    assert first.token != ""
    second = dapr_client.query_state(
        "statestore", json.dumps({**base, "page": {"limit": 2, "token": first.token}})
    )
    assert [r.key for r in second.results] == [query_docs["q-3"]]
    assert json.loads(second.results[0].value) == QUERY_DOCS["q-3"]


def test_query_in_filter(dapr_client, query_docs):
    query = json.dumps({"filter": {"AND": [{"EQ": {"person.org": "Dev Ops"}},
                                           {"IN": {"state": ["CA", "WA"]}}]},
                        "sort": [{"key": "person.id"}]})
    resp = dapr_client.query_state("statestore", query)
    assert [r.key for r in resp.results] == [query_docs["q-1"], query_docs["q-4"]]


def test_query_on_memstore_not_supported(dapr_client):
    err = expect_grpc_error(grpc.StatusCode.INTERNAL, dapr_client.query_state, "memstore",
                            json.dumps({"filter": {"EQ": {"state": "CA"}}}))
    assert err.details() == "state store does not support querying"
    assert err.error_code() == "DAPR_STATE_QUERYING_NOT_SUPPORTED"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("call", ["get", "save", "delete", "bulk", "query", "tx"])
def test_unknown_store_is_invalid_argument(dapr_client, call):
    calls = {
        "get": lambda: dapr_client.get_state("nosuchstore", "k"),
        "save": lambda: dapr_client.save_state("nosuchstore", "k", "v"),
        "delete": lambda: dapr_client.delete_state("nosuchstore", "k"),
        "bulk": lambda: dapr_client.get_bulk_state("nosuchstore", ["k"]),
        "query": lambda: dapr_client.query_state("nosuchstore", '{"filter": {}}'),
        "tx": lambda: dapr_client.execute_state_transaction(
            "nosuchstore", [TransactionalStateOperation(key="k", data="v")]),
    }
    err = expect_grpc_error(grpc.StatusCode.INVALID_ARGUMENT, calls[call])
    assert err.details() == "state store nosuchstore is not found"
    assert err.error_code() == "DAPR_STATE_NOT_FOUND"


# ---------------------------------------------------------------- metadata


def test_get_metadata(dapr_client):
    md = dapr_client.get_metadata()
    assert md.application_id == "sdk-tests"
    comps = {c.name: c for c in md.registered_components}
    assert "statestore" in comps and "memstore" in comps, comps
    sqlite = comps["statestore"]
    assert sqlite.type == "state.sqlite"
    assert sqlite.version == "v1"
    assert {"ETAG", "TRANSACTIONAL", "TTL", "QUERY_API"} <= set(sqlite.capabilities)
    mem = comps["memstore"]
    assert mem.type == "state.in-memory"
    assert mem.version == "v1"
    assert {"ETAG", "TRANSACTIONAL"} <= set(mem.capabilities)
    assert "QUERY_API" not in mem.capabilities
    assert "ACTOR" not in sqlite.capabilities and "ACTOR" not in mem.capabilities


def test_set_metadata_shows_in_extended_metadata(dapr_client):
    name, value = uniq("attr"), "value with spaces ✓"
    dapr_client.set_metadata(name, value)
    md = dapr_client.get_metadata()
    assert md.extended_metadata.get(name) == value
    dapr_client.set_metadata(name, "overwritten")
    assert dapr_client.get_metadata().extended_metadata.get(name) == "overwritten"
