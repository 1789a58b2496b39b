"""Secrets through the official Python SDK (gRPC DaprClient): get_secret, get_bulk_secret, the
Configuration's secret scopes and daprd's error codes."""

from __future__ import annotations

import json

import grpc
import pytest

from raprkit import Sidecar

SECRETS = {"db": {"password": "s3cret"}, "token": "t0k", "hidden": "no"}

CONFIG = """apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: cfg
spec:
  secrets:
    scopes:
    - storeName: local
      defaultAccess: allow
      deniedSecrets: ["hidden"]
"""

STORE = """apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: local
spec:
  type: secretstores.local.file
  version: v1
  metadata:
  - name: secretsFile
    value: "{path}"
"""


@pytest.fixture(scope="module")
def secrets_client(sidecar, tmp_path_factory):
    from dapr.clients import DaprClient

    base = tmp_path_factory.mktemp("rapr-secrets")
    res = base / "components"
    res.mkdir()
    (base / "secrets.json").write_text(json.dumps(SECRETS))
    (res / "local.yaml").write_text(STORE.format(path=base / "secrets.json"))
    (base / "config.yaml").write_text(CONFIG)
    sc = Sidecar("sdk-secrets", res, base / "logs", extra_args=["--config", str(base / "config.yaml")])
    sc.start(timeout=30)
    try:
        with DaprClient(address=sc.grpc_address) as client:
            yield client
    finally:
        sc.stop()


def test_get_secret(secrets_client):
    assert dict(secrets_client.get_secret("local", "db:password").secret) == {"db:password": "s3cret"}
    assert dict(secrets_client.get_secret("local", "token").secret) == {"token": "t0k"}


def test_get_bulk_secret_filters_denied(secrets_client):
    bulk = secrets_client.get_bulk_secret("local").secrets
    assert bulk["token"] == {"token": "t0k"}
    assert bulk["db:password"] == {"db:password": "s3cret"}
    assert "hidden" not in bulk


def _code(fn, *args):
    with pytest.raises(grpc.RpcError) as ei:
        fn(*args)
    return ei.value.code(), ei.value.details()


def test_denied_secret_is_permission_denied(secrets_client):
    code, details = _code(secrets_client.get_secret, "local", "hidden")
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details == 'access denied by policy to get "hidden" from "local"'


def test_unknown_store_and_missing_secret(secrets_client):
    code, details = _code(secrets_client.get_secret, "nope", "x")
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == "failed finding secret store with key nope"
    code, details = _code(secrets_client.get_secret, "local", "missing")
    assert code == grpc.StatusCode.INTERNAL
    assert "failed getting secret with key missing from secret store local" in details
