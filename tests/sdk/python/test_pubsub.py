"""Pub/sub through the official Dapr Python SDK (issue 11 E.13).

Three sidecars, each with its own resources: `py-pubsub` has no app (publish, bulk publish and
streaming subscriptions, sync and async); `py-pubsub-grpc` is in front of a `dapr.ext.grpc.App`
subscriber (`--app-protocol grpc`) answering RETRY once then SUCCESS, and DROP with a
dead-letter topic; `py-pubsub-http` is in front of a FastAPI app with a `DaprApp` subscriber.
Every sidecar has `pubsub` (pubsub.in-memory) and `litepubsub` (the embedded pubsub.sqlite);
topics are unique per test.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import urllib.request
import uuid
from pathlib import Path

import pytest
from dapr.clients import BulkPublishEntry, DaprClient
from dapr.clients.grpc._response import TopicEventResponse
from dapr.ext.grpc import SubscriptionMessage
from fastapi import Body, FastAPI

from raprkit import Sidecar, free_port, wait_until

NO_APP = "py-pubsub"
GRPC_APP = "py-pubsub-grpc"
HTTP_APP = "py-pubsub-http"
BROKERS = ["pubsub", "litepubsub"]

# Topics the apps subscribe to, unique per run (the sqlite file is per sidecar, but a rerun in
# the same directory must never see an old message).
RUN = uuid.uuid4().hex[:8]
T_RETRY = f"retry-{RUN}"
T_DROP = f"drop-{RUN}"
T_DEAD = f"dead-{RUN}"
T_HTTP = f"http-{RUN}"

COMPONENTS = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.in-memory
  version: v1
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: litepubsub
spec:
  type: pubsub.sqlite
  version: v1
  metadata:
  - name: connectionString
    value: "{db}"
  - name: redeliverInterval
    value: 200ms
  - name: processingTimeout
    value: 5s
---
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: quick-inbound
spec:
  policies:
    retries:
      quick:
        policy: constant
        duration: 50ms
        maxRetries: 3
  targets:
    components:
      pubsub:
        inbound:
          retry: quick
      litepubsub:
        inbound:
          retry: quick
"""


class Recorder:
    """What an app subscriber saw, with a condition to wait on."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seen: dict[str, list] = {}

    def add(self, topic: str, item) -> None:
        with self.lock:
            self.seen.setdefault(topic, []).append(item)

    def get(self, topic: str) -> list:
        with self.lock:
            return list(self.seen.get(topic, []))


def resources(base: Path, name: str) -> Path:
    d = base / name
    d.mkdir()
    (d / "components.yaml").write_text(COMPONENTS.format(db=base / f"{name}.db"))
    return d


def grpc_app(rec: Recorder):
    # Handlers annotated with SubscriptionMessage (imported at module level: annotations are
    # strings here and the SDK resolves them in the module's globals) get that type.
    from dapr.ext.grpc import App

    app = App()
    attempts: dict[str, int] = {}

    for broker in BROKERS:
        @app.subscribe(pubsub_name=broker, topic=T_RETRY, dead_letter_topic=T_DEAD)
        def retry_once(event: SubscriptionMessage) -> TopicEventResponse:
            n = attempts[event.id()] = attempts.get(event.id(), 0) + 1
            rec.add(f"{event.pubsub_name()}/{T_RETRY}", (event.id(), event.data(), n))
            return TopicEventResponse("retry" if n == 1 else "success")

        @app.subscribe(pubsub_name=broker, topic=T_DROP, dead_letter_topic=T_DEAD)
        def drop(event: SubscriptionMessage) -> TopicEventResponse:
            rec.add(f"{event.pubsub_name()}/{T_DROP}", (event.id(), event.data()))
            return TopicEventResponse("drop")

        @app.subscribe(pubsub_name=broker, topic=T_DEAD)
        def dead(event: SubscriptionMessage) -> TopicEventResponse:
            rec.add(f"{event.pubsub_name()}/{T_DEAD}", (event.id(), event.data()))
            return TopicEventResponse("success")

    return app


def fastapi_app(rec: Recorder):
    from dapr.ext.fastapi import DaprApp

    app = FastAPI()
    dapr_app = DaprApp(app)
    for broker in BROKERS:
        @dapr_app.subscribe(pubsub=broker, topic=T_HTTP)
        def handler(event_data=Body()):
            rec.add(f"{event_data['pubsubname']}/{T_HTTP}", event_data)
            return {"status": "SUCCESS"}

    return app


@pytest.fixture(scope="module")
def sidecars(tmp_path_factory):
    import uvicorn

    base = tmp_path_factory.mktemp("rapr-pubsub")
    rec = Recorder()

    http_port = free_port()
    server = uvicorn.Server(uvicorn.Config(fastapi_app(rec), host="127.0.0.1", port=http_port, log_level="warning"))
    http_thread = threading.Thread(target=server.run, daemon=True)
    http_thread.start()
    wait_until(lambda: server.started, 20, what="uvicorn to start")

    grpc_port = free_port()
    gapp = grpc_app(rec)
    gapp._server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    gapp._server.start()

    sidecars = [
        Sidecar(NO_APP, resources(base, NO_APP), base / "logs"),
        Sidecar(GRPC_APP, resources(base, GRPC_APP), base / "logs",
                extra_args=["--app-port", str(grpc_port), "--app-protocol", "grpc"]),
        Sidecar(HTTP_APP, resources(base, HTTP_APP), base / "logs", extra_args=["--app-port", str(http_port)]),
    ]
    started = []
    # The SDK's health wait before a streaming subscribe reads these (dapr.conf.settings).
    saved = {k: os.environ.get(k) for k in ("DAPR_HTTP_PORT", "DAPR_GRPC_PORT", "DAPR_RUNTIME_HOST",
                                             "DAPR_HEALTH_TIMEOUT", "DAPR_HTTP_ENDPOINT", "DAPR_GRPC_ENDPOINT")}
    try:
        for sc in sidecars:
            sc.start(timeout=30)
            started.append(sc)
        os.environ.update(DAPR_HTTP_PORT=str(sidecars[0].http_port), DAPR_GRPC_PORT=str(sidecars[0].grpc_port),
                          DAPR_RUNTIME_HOST="127.0.0.1", DAPR_HEALTH_TIMEOUT="20")
        os.environ.pop("DAPR_HTTP_ENDPOINT", None)
        os.environ.pop("DAPR_GRPC_ENDPOINT", None)
        yield {"rec": rec, **{sc.app_id: sc for sc in sidecars}}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for sc in started:
            sc.stop()
        gapp.stop()
        server.should_exit = True
        http_thread.join(timeout=10)


@pytest.fixture(params=BROKERS)
def broker(request) -> str:
    return request.param


def client_of(sc: Sidecar) -> DaprClient:
    return DaprClient(address=sc.grpc_address)


def topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def subscribed(sc: Sidecar, pubsub: str, t: str) -> bool:
    """Whether the sidecar's `/v1.0/metadata` lists a subscription to `pubsub`/`t` (the SDK's
    `get_metadata` does not expose subscriptions)."""
    with urllib.request.urlopen(f"{sc.http_url}/v1.0/metadata", timeout=5) as r:
        subs = json.load(r).get("subscriptions", [])
    return any(s.get("pubsubname") == pubsub and s.get("topic") == t for s in subs)


def test_publish_event_reaches_a_streaming_subscriber(sidecars, broker):
    sc = sidecars[NO_APP]
    t = topic("pub")
    with client_of(sc) as c:
        sub = c.subscribe(pubsub_name=broker, topic=t)
        try:
            c.publish_event(broker, t, json.dumps({"n": 1}), data_content_type="application/json")
            c.publish_event(broker, t, "plain words", data_content_type="text/plain")
            first = sub.next_message()
            assert (first.topic(), first.pubsub_name(), first.data()) == (t, broker, {"n": 1})
            assert first.type() == "com.dapr.event.sent" and first.source() == NO_APP
            sub.respond_success(first)
            second = sub.next_message()
            assert (second.data_content_type(), second.data()) == ("text/plain", "plain words")
            sub.respond_success(second)
        finally:
            sub.close()


def test_bulk_publish(sidecars, broker):
    sc = sidecars[NO_APP]
    t = topic("bulk")
    with client_of(sc) as c:
        sub = c.subscribe(pubsub_name=broker, topic=t)
        try:
            resp = c.publish_events(broker, t, [
                json.dumps({"n": 1}),
                BulkPublishEntry(event=json.dumps({"n": 2}), entry_id="two"),
                BulkPublishEntry(event="three", content_type="text/plain"),
            ], data_content_type="application/json")
            assert resp.failed_entries == []
            got = []
            for _ in range(3):
                m = sub.next_message()
                got.append((m.data_content_type(), m.data()))
                sub.respond_success(m)
            assert sorted(got, key=repr) == sorted([
                ("application/json", {"n": 1}), ("application/json", {"n": 2}), ("text/plain", "three"),
            ], key=repr)
        finally:
            sub.close()


def test_bulk_publish_to_an_unknown_pubsub_fails(sidecars):
    with client_of(sidecars[NO_APP]) as c:
        with pytest.raises(Exception) as ei:
            c.publish_events("nosuchpubsub", "t", ["x"])
        assert "nosuchpubsub" in str(ei.value)


def test_streaming_retry_redelivers_and_drop_dead_letters(sidecars):
    """RETRY: the event comes back on the stream (the inbound retry policy sends it again); DROP:
    it goes to the dead-letter topic."""
    sc = sidecars[NO_APP]
    retried, dropped, dead = topic("stream-retry"), topic("stream-drop"), topic("stream-dead")
    with client_of(sc) as c:
        r = c.subscribe(pubsub_name="litepubsub", topic=retried)
        s = c.subscribe(pubsub_name="litepubsub", topic=dropped, dead_letter_topic=dead)
        dl = c.subscribe(pubsub_name="litepubsub", topic=dead)
        try:
            wait_until(lambda: subscribed(sc, "litepubsub", retried), 10, what="the subscription in metadata")
            c.publish_event("litepubsub", retried, json.dumps({"k": "again"}), data_content_type="application/json")
            m = r.next_message()
            r.respond_retry(m)
            again = r.next_message()
            assert (again.id(), again.data()) == (m.id(), {"k": "again"})
            r.respond_success(again)

            c.publish_event("litepubsub", dropped, json.dumps({"k": "drop"}), data_content_type="application/json")
            m = s.next_message()
            s.respond_drop(m)
            d = dl.next_message()
            assert (d.id(), d.data()) == (m.id(), {"k": "drop"})
            dl.respond_success(d)
        finally:
            r.close()
            s.close()
            dl.close()
    wait_until(lambda: not subscribed(sc, "litepubsub", retried), 10, what="the closed subscription to leave metadata")


def test_subscribe_with_handler(sidecars, broker):
    sc = sidecars[NO_APP]
    t = topic("handler")
    got: list = []
    done = threading.Event()

    def handler(message):
        got.append(message.data())
        if len(got) == 2:
            done.set()
        return TopicEventResponse("success")

    with client_of(sc) as c:
        close = c.subscribe_with_handler(broker, t, handler)
        try:
            wait_until(lambda: subscribed(sc, broker, t), 10, what="the subscription in metadata")
            c.publish_event(broker, t, json.dumps({"n": 1}), data_content_type="application/json")
            c.publish_event(broker, t, json.dumps({"n": 2}), data_content_type="application/json")
            assert done.wait(15), got
            assert got == [{"n": 1}, {"n": 2}]
        finally:
            close()


def test_async_subscribe_and_subscribe_with_handler(sidecars, broker):
    from dapr.aio.clients import DaprClient as AsyncDaprClient

    sc = sidecars[NO_APP]
    t1, t2 = topic("aio"), topic("aio-handler")

    async def run():
        async with AsyncDaprClient(address=sc.grpc_address) as c:
            sub = await c.subscribe(pubsub_name=broker, topic=t1)
            try:
                await c.publish_event(broker, t1, json.dumps({"a": 1}), data_content_type="application/json")
                m = await asyncio.wait_for(sub.next_message(), 15)
                assert m.data() == {"a": 1}
                await sub.respond_success(m)
            finally:
                await sub.close()

            got = asyncio.Queue()

            async def handler(message):
                await got.put(message.data())
                return TopicEventResponse("success")

            close = await c.subscribe_with_handler(broker, t2, handler)
            try:
                await asyncio.get_running_loop().run_in_executor(
                    None, lambda: wait_until(lambda: subscribed(sc, broker, t2), 10, what="the subscription"))
                await c.publish_event(broker, t2, json.dumps({"b": 2}), data_content_type="application/json")
                assert await asyncio.wait_for(got.get(), 15) == {"b": 2}
            finally:
                await close()

    asyncio.run(run())


def test_grpc_app_retry_then_success(sidecars, broker):
    sc, rec = sidecars[GRPC_APP], sidecars["rec"]
    wait_until(lambda: subscribed(sc, broker, T_RETRY), 15, what="the app's subscriptions")
    with client_of(sc) as c:
        c.publish_event(broker, T_RETRY, json.dumps({"order": broker}), data_content_type="application/json")
    key = f"{broker}/{T_RETRY}"
    seen = wait_until(lambda: len(rec.get(key)) >= 2 and rec.get(key), 15, what="a retried delivery")
    assert [(d, n) for _, d, n in seen] == [({"order": broker}, 1), ({"order": broker}, 2)]
    assert seen[0][0] == seen[1][0]
    # Settled by the SUCCESS: not delivered again, and never dead-lettered.
    with pytest.raises(TimeoutError):
        wait_until(lambda: len(rec.get(key)) > 2, 1.0, what="no third delivery")
    assert [e for e in rec.get(f"{broker}/{T_DEAD}") if e[1] == {"order": broker}] == []


def test_grpc_app_drop_goes_to_the_dead_letter_topic(sidecars, broker):
    sc, rec = sidecars[GRPC_APP], sidecars["rec"]
    wait_until(lambda: subscribed(sc, broker, T_DROP), 15, what="the app's subscriptions")
    body = {"drop": uuid.uuid4().hex}
    with client_of(sc) as c:
        c.publish_event(broker, T_DROP, json.dumps(body), data_content_type="application/json")
    dead = wait_until(lambda: [e for e in rec.get(f"{broker}/{T_DEAD}") if e[1] == body], 15, what="the dead letter")
    dropped = [e for e in rec.get(f"{broker}/{T_DROP}") if e[1] == body]
    assert len(dropped) == 1 and dead[0][0] == dropped[0][0]


def test_fastapi_dapr_app_subscriber(sidecars, broker):
    sc, rec = sidecars[HTTP_APP], sidecars["rec"]
    wait_until(lambda: subscribed(sc, broker, T_HTTP), 15, what="the app's subscriptions")
    body = {"http": uuid.uuid4().hex}
    with client_of(sc) as c:
        c.publish_event(broker, T_HTTP, json.dumps(body), data_content_type="application/json")
    got = wait_until(lambda: [e for e in rec.get(f"{broker}/{T_HTTP}") if e.get("data") == body], 15, what="the event")
    ev = got[0]
    assert (ev["topic"], ev["pubsubname"], ev["source"], ev["specversion"]) == (T_HTTP, broker, HTTP_APP, "1.0")
    assert ev["datacontenttype"] == "application/json"
