"""Helpers shared by the SDK conformance tests: free ports, component files, and a
rapr sidecar process that is started, awaited (by polling with a deadline) and stopped."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[3]

T = TypeVar("T")


def rapr_bin() -> Path:
    """The sidecar binary: $RAPR_BIN, else target/debug/rapr (relative paths are taken
    from the repository root)."""
    p = Path(os.environ.get("RAPR_BIN", "target/debug/rapr"))
    if not p.is_absolute():
        p = REPO_ROOT / p
    return p


def _port_range() -> tuple[int, int]:
    """Ports below the kernel's ephemeral range, which outgoing connections never take (binding
    port 0 and releasing it races with every connection opened meanwhile), as rapr's own
    allocator (src/net_ports.rs) picks them."""
    low = 32768
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return (20000, low) if low > 21000 else (10000, 20000)


_LOW, _HIGH = _port_range()
_cursor = random.randrange(_HIGH - _LOW)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing listens on, never handed out before by this process (a cursor walks the
    range from a random start, so concurrent test processes rarely meet)."""
    global _cursor
    for _ in range(_HIGH - _LOW):
        port = _LOW + _cursor % (_HIGH - _LOW)
        _cursor += 1
        if _bindable(port):
            return port
    raise RuntimeError(f"no free port in {_LOW}..{_HIGH}")


def free_ports(n: int) -> list[int]:
    """n distinct free ports."""
    return [free_port() for _ in range(n)]


SQLITE_COMPONENT = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {name}
spec:
  type: state.sqlite
  version: v1
  metadata:
  - name: connectionString
    value: "{path}"
"""

INMEMORY_COMPONENT = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {name}
spec:
  type: state.in-memory
  version: v1
  metadata: []
"""


def write_components(resources_dir: Path, db_path: Path, with_memstore: bool = True) -> None:
    resources_dir.mkdir(parents=True, exist_ok=True)
    (resources_dir / "statestore.yaml").write_text(
        SQLITE_COMPONENT.format(name="statestore", path=db_path)
    )
    if with_memstore:
        (resources_dir / "memstore.yaml").write_text(INMEMORY_COMPONENT.format(name="memstore"))


def http_status(url: str, timeout: float = 2.0) -> Optional[int]:
    """Status code of a GET, or None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


def wait_until(pred: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition") -> T:
    """Poll pred() until it returns a truthy value; raise TimeoutError after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


class Sidecar:
    """A `rapr sidecar` process on free ports with its output in log files."""

    def __init__(self, app_id: str, resources_dir: Path, log_dir: Path,
                 http_port: Optional[int] = None, grpc_port: Optional[int] = None,
                 extra_args: Optional[list[str]] = None, cwd: Optional[Path] = None,
                 env: Optional[dict[str, str]] = None):
        if http_port is None or grpc_port is None:
            http_port, grpc_port = free_ports(2)
        self.app_id = app_id
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.resources_dir = resources_dir
        self.log_dir = log_dir
        self.extra_args = extra_args or []
        self.cwd = cwd or REPO_ROOT
        # Extra environment for the process (e.g. RAPR_HOME, shared by sidecars that call each other).
        self.env = env or {}
        self.proc: Optional[subprocess.Popen] = None
        self.stdout_path = log_dir / f"{app_id}-{http_port}.stdout.log"
        self.stderr_path = log_dir / f"{app_id}-{http_port}.stderr.log"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def command(self) -> list[str]:
        return [
            str(rapr_bin()), "sidecar",
            "--app-id", self.app_id,
            "--dapr-http-port", str(self.http_port),
            "--dapr-grpc-port", str(self.grpc_port),
            "--metrics-port", "0",
            "--dapr-listen-addresses", "127.0.0.1",
            "--resources-path", str(self.resources_dir),
            "--log-level", "info",
            *self.extra_args,
        ]

    def start(self, timeout: float = 30.0) -> "Sidecar":
        binary = rapr_bin()
        if not binary.exists():
            raise RuntimeError(
                f"rapr binary not found at {binary}: build it with `cargo build --bin rapr` "
                "or point RAPR_BIN at it"
            )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.stdout_path, "wb")
        err = open(self.stderr_path, "wb")
        try:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, cwd=str(self.cwd),
                                         env={**os.environ, **self.env})
        finally:
            out.close()
            err.close()
        try:
            self.wait_healthy(timeout)
        except Exception:
            logs = self.logs()
            self.stop()
            raise RuntimeError(f"rapr sidecar did not become healthy.\n{logs}")
        return self

    def wait_healthy(self, timeout: float) -> None:
        url = f"{self.http_url}/v1.0/healthz"

        def healthy():
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"rapr sidecar exited early with code {self.proc.returncode}")
            return http_status(url, timeout=1.0) == 204

        wait_until(healthy, timeout, interval=0.1, what=f"GET {url} -> 204")

    def logs(self, tail: int = 200) -> str:
        parts = [f"command: {' '.join(self.command())}"]
        for name, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError:
                lines = []
            parts.append(f"----- sidecar {name} (last {tail} lines) -----")
            parts.extend(lines[-tail:])
        return "\n".join(parts)

    def stop(self) -> Optional[int]:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode
