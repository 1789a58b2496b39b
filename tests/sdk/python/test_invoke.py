"""Service invocation through the official Dapr Python SDK.

Three sidecars share one RAPR_HOME (so name resolution): `py-inv-http` in front of a FastAPI
app (uvicorn, in a thread), `py-inv-grpc` in front of a `dapr.ext.grpc.App` (`--app-protocol
grpc`), and `py-inv-caller` without an app. `DaprClient.invoke_method` runs over HTTP and over
gRPC (`DAPR_API_METHOD_INVOCATION_PROTOCOL`) from the caller's sidecar to both apps; a plain
gRPC stub with `dapr-app-id` metadata exercises gRPC proxying to the gRPC app.
"""

from __future__ import annotations

import json
import threading

import grpc
import pytest
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprHttpError
from dapr.clients.grpc._request import InvokeMethodRequest
from dapr.clients.grpc._response import InvokeMethodResponse
from dapr.proto import common_v1
from dapr.proto.runtime.v1 import appcallback_pb2_grpc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from raprkit import Sidecar, free_port, wait_until

HTTP_APP = "py-inv-http"
GRPC_APP = "py-inv-grpc"
CALLER = "py-inv-caller"


def fastapi_app():
    # Annotations are strings here (`from __future__ import annotations`): FastAPI resolves them
    # in the module's globals, so its names are imported at module level.
    app = FastAPI()

    @app.api_route("/status/{code}", methods=["GET", "POST", "PUT", "DELETE"])
    async def status(code: int):
        return PlainTextResponse(f"status {code}", status_code=code)

    @app.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    async def echo(rest: str, request: Request):
        body = await request.body()
        return JSONResponse({
            "verb": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": {k: v for k, v in request.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }, headers={"x-app": "fastapi"})

    return app


def grpc_app():
    from dapr.ext.grpc import App

    app = App()

    @app.method(name="echo")
    def echo(request: InvokeMethodRequest) -> InvokeMethodResponse:
        md = {k: v[0] for k, v in request.metadata.items()}
        out = {"data": request.text(), "content_type": request.content_type, "metadata": md}
        return InvokeMethodResponse(json.dumps(out).encode(), "application/json")

    @app.method(name="fail")
    def fail(request: InvokeMethodRequest):
        raise ValueError("the app refuses")

    @app.method(name="typed")
    def typed(request: InvokeMethodRequest):
        # A message of the app's own type: the SDK packs it into an Any carrying its type_url.
        return common_v1.StateItem(key="typed-key", value=request.data)

    @app.method(name="raw")
    def raw(request: InvokeMethodRequest) -> InvokeMethodResponse:
        resp = InvokeMethodResponse(b"\x00\x01raw\xff", "application/octet-stream")
        resp.headers = (("x-reply", "r1"),)
        return resp

    return app


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    import uvicorn

    base = tmp_path_factory.mktemp("rapr-invoke")
    home = base / "home"
    resources = base / "components"
    resources.mkdir()
    env = {"RAPR_HOME": str(home)}

    http_port = free_port()
    server = uvicorn.Server(uvicorn.Config(fastapi_app(), host="127.0.0.1", port=http_port, log_level="warning"))
    http_thread = threading.Thread(target=server.run, daemon=True)
    http_thread.start()
    wait_until(lambda: server.started, 20, what="uvicorn to start")

    grpc_port = free_port()
    gapp = grpc_app()
    gapp._server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    gapp._server.start()

    sidecars = [
        Sidecar(HTTP_APP, resources, base / "logs", extra_args=["--app-port", str(http_port)], env=env),
        Sidecar(GRPC_APP, resources, base / "logs",
                extra_args=["--app-port", str(grpc_port), "--app-protocol", "grpc"], env=env),
        Sidecar(CALLER, resources, base / "logs", env=env),
    ]
    started = []
    try:
        for sc in sidecars:
            sc.start(timeout=30)
            started.append(sc)
        yield {sc.app_id: sc for sc in sidecars}
    finally:
        for sc in started:
            sc.stop()
        gapp.stop()
        server.should_exit = True
        http_thread.join(timeout=10)


@pytest.fixture(params=["HTTP", "GRPC"])
def client(request, apps, monkeypatch):
    """A DaprClient on the caller's sidecar, invoking over HTTP or gRPC."""
    caller = apps[CALLER]
    monkeypatch.setenv("DAPR_API_METHOD_INVOCATION_PROTOCOL", request.param)
    monkeypatch.setenv("DAPR_HTTP_PORT", str(caller.http_port))
    monkeypatch.setenv("DAPR_GRPC_PORT", str(caller.grpc_port))
    monkeypatch.setenv("DAPR_RUNTIME_HOST", "127.0.0.1")
    monkeypatch.setenv("DAPR_HEALTH_TIMEOUT", "20")
    for k in ("DAPR_HTTP_ENDPOINT", "DAPR_GRPC_ENDPOINT", "DAPR_API_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    c = DaprClient(address=caller.grpc_address)
    c.protocol = request.param
    try:
        yield c
    finally:
        c.close()


def test_invoke_http_app(client):
    resp = client.invoke_method(HTTP_APP, "orders/42", data=b'{"n": 1}', content_type="application/json",
                                http_verb="PUT", http_querystring=(("a", "1"), ("b", "two")))
    seen = json.loads(resp.data)
    assert seen["verb"] == "PUT"
    assert seen["path"] == "/orders/42"
    assert seen["query"] == "a=1&b=two"
    assert seen["body"] == '{"n": 1}'
    assert seen["headers"]["content-type"] == "application/json"
    assert seen["headers"]["dapr-caller-app-id"] == CALLER
    assert seen["headers"]["dapr-callee-app-id"] == HTTP_APP
    assert "application/json" in resp.content_type
    if client.protocol == "HTTP":
        assert resp.status_code == 200
        assert resp.headers.get("x-app") == ["fastapi"]


def test_invoke_http_app_error_status(client):
    if client.protocol == "HTTP":
        with pytest.raises(DaprHttpError) as ei:
            client.invoke_method(HTTP_APP, "status/404", data=b"", http_verb="GET")
        assert ei.value.status_code == 404
    else:
        # gRPC InvokeService: a non-2xx answer is an error with daprd's code mapping.
        with pytest.raises(grpc.RpcError) as ei:
            client.invoke_method(HTTP_APP, "status/404", data=b"", http_verb="GET")
        assert ei.value.code() == grpc.StatusCode.NOT_FOUND


def test_invoke_grpc_app(client):
    resp = client.invoke_method(GRPC_APP, "echo", data=b"hello", content_type="text/plain",
                                http_verb="POST")
    seen = json.loads(resp.data)
    assert seen["data"] == "hello"
    assert seen["content_type"] == "text/plain"
    assert seen["metadata"]["dapr-caller-app-id"] == CALLER
    assert seen["metadata"]["dapr-callee-app-id"] == GRPC_APP


def test_invoke_grpc_app_typed_answer(client):
    """A gRPC app's typed answer: the Any's type_url (gRPC callers) or daprd's protobuf content
    type (HTTP callers) reaches the caller, so the SDK can unpack it."""
    resp = client.invoke_method(GRPC_APP, "typed", data=b"v1", content_type="text/plain", http_verb="POST")
    item = common_v1.StateItem()
    resp.unpack(item)
    assert (item.key, item.value) == ("typed-key", b"v1")
    if client.protocol == "GRPC":
        assert resp.proto.type_url == "type.googleapis.com/dapr.proto.common.v1.StateItem"
    else:
        assert resp.content_type == "application/x-protobuf"


def test_invoke_grpc_app_raw_bytes(client):
    resp = client.invoke_method(GRPC_APP, "raw", data=b"", http_verb="POST")
    assert resp.data == b"\x00\x01raw\xff"
    assert resp.content_type == "application/octet-stream"
    assert resp.headers.get("x-reply") == ["r1"], "the app's response headers reach the caller"
    if client.protocol == "GRPC":
        assert resp.proto.type_url == ""


def test_invoke_grpc_app_error(client):
    if client.protocol == "HTTP":
        # The app's gRPC status (UNKNOWN for an exception) becomes HTTP 500 with the status as JSON.
        with pytest.raises(DaprHttpError) as ei:
            client.invoke_method(GRPC_APP, "fail", data=b"x", http_verb="POST")
        assert ei.value.status_code == 500
    else:
        with pytest.raises(grpc.RpcError) as ei:
            client.invoke_method(GRPC_APP, "fail", data=b"x")
        assert ei.value.code() == grpc.StatusCode.UNKNOWN
        assert "the app refuses" in ei.value.details()


def test_invoke_unknown_app(client):
    if client.protocol == "HTTP":
        with pytest.raises(DaprHttpError) as ei:
            client.invoke_method("py-nobody", "x", data=b"")
        assert ei.value.status_code == 500
        assert ei.value.as_dict()["errorCode"] == "ERR_DIRECT_INVOKE"
    else:
        with pytest.raises(grpc.RpcError) as ei:
            client.invoke_method("py-nobody", "x", data=b"")
        assert ei.value.code() == grpc.StatusCode.INTERNAL
        assert ei.value.details() == "failed to invoke, id: py-nobody, err: no host found with the given ID"


@pytest.mark.parametrize("via", [CALLER, GRPC_APP])
def test_grpc_proxy_to_python_app(apps, via):
    """A plain stub on any sidecar's gRPC port reaches the app named by dapr-app-id."""
    with grpc.insecure_channel(apps[via].grpc_address) as ch:
        stub = appcallback_pb2_grpc.AppCallbackStub(ch)
        req = common_v1.InvokeRequest(method="echo", content_type="text/plain")
        req.data.value = b"proxied"
        resp = stub.OnInvoke(req, metadata=(("dapr-app-id", GRPC_APP), ("x-custom", "c1")))
        seen = json.loads(resp.data.value)
        assert seen["data"] == "proxied"
        assert seen["metadata"]["x-custom"] == "c1"
        assert seen["metadata"]["dapr-app-id"] == GRPC_APP
        if via == CALLER:
            assert seen["metadata"]["dapr-caller-app-id"] == CALLER
        # The app's own UNIMPLEMENTED passes through.
        with pytest.raises(grpc.RpcError) as ei:
            stub.OnInvoke(common_v1.InvokeRequest(method="nope"), metadata=(("dapr-app-id", GRPC_APP),))
        assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # Unknown app: the resolver's error.
        with pytest.raises(grpc.RpcError) as ei:
            stub.OnInvoke(common_v1.InvokeRequest(method="echo"), metadata=(("dapr-app-id", "py-nobody"),))
        assert ei.value.code() == grpc.StatusCode.UNKNOWN
        assert ei.value.details() == "no host found with the given ID"
