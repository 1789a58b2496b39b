"""Session fixtures for the Python SDK conformance suite.

One `rapr sidecar` (app id `sdk-tests`) is started for the session on free ports, with two
state stores: `statestore` (state.sqlite, in a temp file) and `memstore` (state.in-memory).
The official Dapr Python SDK (pinned in tests/sdk/requirements.txt) drives it over gRPC.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from raprkit import Sidecar, write_components  # noqa: E402

APP_ID = "sdk-tests"
STORES = ["statestore", "memstore"]

_sidecars: list[Sidecar] = []


@pytest.fixture(scope="session")
def sidecar(tmp_path_factory) -> Sidecar:
    base = tmp_path_factory.mktemp("rapr-sdk")
    resources = base / "components"
    write_components(resources, base / "state.db")
    sc = Sidecar(APP_ID, resources, base / "logs")
    sc.start(timeout=30)
    _sidecars.append(sc)

    # The SDK resolves these settings (dapr.conf.settings) from the environment when read.
    saved = {k: os.environ.get(k) for k in
             ("DAPR_HTTP_PORT", "DAPR_GRPC_PORT", "DAPR_RUNTIME_HOST", "DAPR_HEALTH_TIMEOUT",
              "DAPR_HTTP_ENDPOINT", "DAPR_GRPC_ENDPOINT", "DAPR_API_TOKEN")}
    os.environ["DAPR_HTTP_PORT"] = str(sc.http_port)
    os.environ["DAPR_GRPC_PORT"] = str(sc.grpc_port)
    os.environ["DAPR_RUNTIME_HOST"] = "127.0.0.1"
    os.environ["DAPR_HEALTH_TIMEOUT"] = "20"
    for k in ("DAPR_HTTP_ENDPOINT", "DAPR_GRPC_ENDPOINT", "DAPR_API_TOKEN"):
        os.environ.pop(k, None)
    try:
        yield sc
    finally:
        code = sc.stop()
        _sidecars.remove(sc)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        print(f"\nrapr sidecar exited with {code}")


@pytest.fixture(scope="session")
def dapr_client(sidecar):
    from dapr.clients import DaprClient

    client = DaprClient(address=sidecar.grpc_address)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(params=STORES)
def store(request) -> str:
    return request.param


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the tail of the sidecar's logs to a failing test's report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _sidecars:
        for sc in _sidecars:
            report.sections.append((f"rapr sidecar {sc.app_id} logs", sc.logs(tail=60)))
