"""A tiny app for rapr: saves a value through its sidecar's state API and reads it back.

Standard library only. Run it with its sidecar:
    cargo run --release -- run --app-id hello -- python3 examples/hello.py
`rapr run` gives the app DAPR_HTTP_PORT (and DAPR_GRPC_PORT, APP_ID, APP_PORT).
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

PORT = os.environ.get("DAPR_HTTP_PORT", "3500")
BASE = f"http://127.0.0.1:{PORT}/v1.0"
STATE_URL = f"{BASE}/state/statestore"


def wait_for_sidecar(timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{BASE}/healthz", timeout=2) as resp:
                if resp.status == 204:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            sys.exit(f"the sidecar at {BASE} did not become healthy")
        time.sleep(0.2)


def main():
    wait_for_sidecar()
    app_id = os.environ.get("APP_ID", "hello")
    body = json.dumps([{"key": "greeting", "value": {"message": f"Hello from {app_id}!"}}])
    req = urllib.request.Request(STATE_URL, data=body.encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        print(f"Saved state: HTTP {resp.status}")
    with urllib.request.urlopen(f"{STATE_URL}/greeting", timeout=10) as resp:
        value = json.loads(resp.read())
    print(f"Read back: {json.dumps(value)}")


if __name__ == "__main__":
    main()
