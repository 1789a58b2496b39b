"""Wire-shape drift check (DESIGN.md section 2): the descriptors rapr serves through gRPC
server reflection must equal the pinned Python SDK's for every served method of
dapr.proto.runtime.v1.Dapr and every message and enum reachable from them.

When rapr starts serving a new method, add it to EXPECTED_DAPR_METHODS: the set is asserted
exactly so that serving nothing (or something unexpected) cannot pass.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

import dapr.proto.runtime.v1.dapr_pb2  # noqa: F401  (loads the SDK's files into the default pool)

DAPR_SERVICE = "dapr.proto.runtime.v1.Dapr"

EXPECTED_DAPR_METHODS = {
    "InvokeService",
    "GetState",
    "GetBulkState",
    "SaveState",
    "QueryStateAlpha1",
    "DeleteState",
    "DeleteBulkState",
    "ExecuteStateTransaction",
    "GetSecret",
    "GetBulkSecret",
    "GetMetadata",
    "SetMetadata",
    "Shutdown",
    "PublishEvent",
    "BulkPublishEventAlpha1",
    "BulkPublishEvent",
    "SubscribeTopicEventsAlpha1",
}


@pytest.fixture(scope="module")
def channel(sidecar):
    ch = grpc.insecure_channel(sidecar.grpc_address)
    grpc.channel_ready_future(ch).result(timeout=10)
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def reflection(channel):
    db = ProtoReflectionDescriptorDatabase(channel)
    return db, descriptor_pool.DescriptorPool(db)


@pytest.fixture(scope="module")
def sdk_pool():
    return descriptor_pool.Default()


def test_reflection_lists_services(reflection):
    db, _ = reflection
    services = set(db.get_services())
    assert "grpc.reflection.v1alpha.ServerReflection" in services, services
    assert DAPR_SERVICE in services, services


def test_served_dapr_methods_are_exactly_the_expected_set(reflection):
    _, pool = reflection
    served = {m.name for m in pool.FindServiceByName(DAPR_SERVICE).methods}
    assert served == EXPECTED_DAPR_METHODS, (
        f"missing: {sorted(EXPECTED_DAPR_METHODS - served)}; "
        f"unexpected: {sorted(served - EXPECTED_DAPR_METHODS)}"
    )


def _method_proto(m) -> descriptor_pb2.MethodDescriptorProto:
    p = descriptor_pb2.MethodDescriptorProto()
    m.CopyToProto(p)
    return p


def test_served_methods_match_sdk_signatures(reflection, sdk_pool):
    _, pool = reflection
    ours = pool.FindServiceByName(DAPR_SERVICE)
    theirs = sdk_pool.FindServiceByName(DAPR_SERVICE)
    problems = []
    for m in ours.methods:
        sdk_m = theirs.methods_by_name.get(m.name)
        if sdk_m is None:
            problems.append(f"{m.name}: not a method of the SDK's {DAPR_SERVICE}")
            continue
        a, b = _method_proto(m), _method_proto(sdk_m)
        for attr in ("input_type", "output_type", "client_streaming", "server_streaming"):
            if getattr(a, attr) != getattr(b, attr):
                problems.append(f"{m.name}.{attr}: ours={getattr(a, attr)!r} sdk={getattr(b, attr)!r}")
        if m.input_type.full_name != sdk_m.input_type.full_name:
            problems.append(f"{m.name} input: {m.input_type.full_name} != {sdk_m.input_type.full_name}")
        if m.output_type.full_name != sdk_m.output_type.full_name:
            problems.append(f"{m.name} output: {m.output_type.full_name} != {sdk_m.output_type.full_name}")
    assert not problems, "\n".join(problems)


def _msg_proto(d) -> descriptor_pb2.DescriptorProto:
    p = descriptor_pb2.DescriptorProto()
    d.CopyToProto(p)
    return p


def _enum_proto(d) -> descriptor_pb2.EnumDescriptorProto:
    p = descriptor_pb2.EnumDescriptorProto()
    d.CopyToProto(p)
    return p


FDP = descriptor_pb2.FieldDescriptorProto


def _field_facts(msg: descriptor_pb2.DescriptorProto, f: FDP) -> dict:
    oneof = ""
    if f.HasField("oneof_index") and not f.proto3_optional:
        oneof = msg.oneof_decl[f.oneof_index].name
    return {
        "name": f.name,
        "number": f.number,
        "type": FDP.Type.Name(f.type),
        "type_name": f.type_name,
        "label": FDP.Label.Name(f.label),
        "proto3_optional": f.proto3_optional,
        "oneof": oneof,
    }


def _reachable(pool, roots):
    """Full names of messages and enums reachable from the root messages through
    message- and enum-typed fields (google.protobuf.* well-known types are not walked)."""
    messages, enums = [], []
    seen = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        desc = pool.FindMessageTypeByName(name)
        messages.append(name)
        for f in _msg_proto(desc).field:
            tn = f.type_name.lstrip(".")
            if f.type == FDP.TYPE_MESSAGE and not tn.startswith("google.protobuf."):
                todo.append(tn)
            elif f.type == FDP.TYPE_ENUM and tn not in seen:
                seen.add(tn)
                enums.append(tn)
    return messages, enums


def test_reachable_messages_match_sdk(reflection, sdk_pool):
    _, pool = reflection
    service = pool.FindServiceByName(DAPR_SERVICE)
    roots = set()
    for m in service.methods:
        for t in (m.input_type, m.output_type):
            if not t.full_name.startswith("google.protobuf."):
                roots.add(t.full_name)
    messages, enums = _reachable(pool, roots)
    assert "dapr.proto.common.v1.StateItem" in messages  # the walk really went through fields

    problems = []
    for name in sorted(messages):
        ours = _msg_proto(pool.FindMessageTypeByName(name))
        try:
            theirs = _msg_proto(sdk_pool.FindMessageTypeByName(name))
        except KeyError:
            problems.append(f"message {name}: not in the SDK")
            continue
        if ours.options.map_entry != theirs.options.map_entry:
            problems.append(f"message {name}: map_entry ours={ours.options.map_entry} "
                            f"sdk={theirs.options.map_entry}")
        our_fields = {f.number: _field_facts(ours, f) for f in ours.field}
        sdk_fields = {f.number: _field_facts(theirs, f) for f in theirs.field}
        for num in sorted(set(our_fields) | set(sdk_fields)):
            a, b = our_fields.get(num), sdk_fields.get(num)
            if a is None:
                problems.append(f"{name}: field {b['name']} = {num} missing (SDK has {b})")
            elif b is None:
                problems.append(f"{name}: field {a['name']} = {num} not in the SDK (ours {a})")
            elif a != b:
                diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
                problems.append(f"{name}.{a['name']} = {num}: (ours, sdk) differ in {diff}")
    for name in sorted(enums):
        ours = _enum_proto(pool.FindEnumTypeByName(name))
        try:
            theirs = _enum_proto(sdk_pool.FindEnumTypeByName(name))
        except KeyError:
            problems.append(f"enum {name}: not in the SDK")
            continue
        a = [(v.name, v.number) for v in ours.value]
        b = [(v.name, v.number) for v in theirs.value]
        if sorted(a) != sorted(b):
            problems.append(f"enum {name}: ours={a} sdk={b}")
    assert not problems, f"{len(problems)} descriptor differences:\n" + "\n".join(problems)


def test_unimplemented_dapr_method_is_unimplemented(channel):
    call = channel.unary_unary(
        f"/{DAPR_SERVICE}/TryLockAlpha1",
        request_serializer=None,
        response_deserializer=None,
    )
    with pytest.raises(grpc.RpcError) as ei:
        call(b"", timeout=10)
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED, ei.value
    assert "TryLockAlpha1" in (ei.value.details() or ""), repr(ei.value.details())


def test_unknown_service_is_unimplemented(channel):
    call = channel.unary_unary("/dapr.proto.runtime.v1.NoSuchService/Nothing",
                               request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as ei:
        call(b"", timeout=10)
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED, ei.value
