"""The README's examples must work as written: its marked blocks are executed against a real
sidecar (on free ports substituted for 3500 / 50001), and examples/hello.py is run through
`rapr run`.

Markers in README.md: an HTML comment `<!-- readme-test: NAME -->` right before a fenced block.
- `curl`: a `rapr sidecar ...` line (started here, in a scratch directory), then shell commands;
  a `# => TEXT` line asserts the stdout of the command before it.
- `python`: run with the SDK's Python; its stdout must equal the `python-output` block.
- `pubsub`: a `rapr run ... &` line (started here, in a scratch directory, with 5001 for the app
  port), then commands; the run's output must show the `pubsub-output` block's lines.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from raprkit import REPO_ROOT, Sidecar, free_ports, rapr_bin, wait_until, write_components

README = REPO_ROOT / "README.md"


@pytest.fixture(autouse=True)
def private_control_plane(tmp_path, monkeypatch):
    """`rapr run` starts an embedded control plane that outlives the run: each test gets its own
    (a free placement port, a scratch folder) and stops it afterwards."""
    (port,) = free_ports(1)
    monkeypatch.setenv("RAPR_PLACEMENT_PORT", str(port))
    monkeypatch.setenv("RAPR_CONTROL_PLANE_DIR", str(tmp_path / "control-plane"))
    yield
    subprocess.run([str(rapr_bin()), "stop", "--control-plane"], capture_output=True, timeout=30)


def readme_blocks() -> dict[str, str]:
    text = README.read_text()
    blocks = {}
    for m in re.finditer(r"<!--\s*readme-test:\s*([\w-]+)\s*-->\s*\n```[\w-]*\n(.*?)\n```", text, re.S):
        blocks[m.group(1)] = m.group(2)
    return blocks


def logical_lines(block: str) -> list[str]:
    """Lines with backslash continuations joined."""
    out, cur = [], ""
    for line in block.splitlines():
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        cur += line
        out.append(cur)
        cur = ""
    if cur:
        out.append(cur)
    return out


def substitute_ports(s: str, http_port: int, grpc_port: int) -> str:
    return s.replace("3500", str(http_port)).replace("50001", str(grpc_port))


def test_readme_has_marked_blocks():
    blocks = readme_blocks()
    assert {"curl", "python", "python-output", "pubsub", "pubsub-output"} <= set(blocks), sorted(blocks)


@pytest.fixture(scope="module")
def readme_sidecar(tmp_path_factory):
    """The sidecar of the README's curl block, started from its own command line, in a scratch
    directory holding a copy of examples/ (so ./examples/components and rapr-demo.db resolve there)."""
    lines = logical_lines(readme_blocks()["curl"])
    cmd_lines = [ln for ln in lines if ln.strip().startswith("rapr sidecar")]
    assert len(cmd_lines) == 1, lines
    argv = shlex.split(cmd_lines[0].strip().rstrip("&").strip())
    assert argv[:2] == ["rapr", "sidecar"]
    work = tmp_path_factory.mktemp("readme")
    shutil.copytree(REPO_ROOT / "examples", work / "examples")
    http_port, grpc_port = free_ports(2)
    args = [substitute_ports(a, http_port, grpc_port) for a in argv[2:]]
    assert "--dapr-http-port" in args and "--resources-path" in args
    app_id = args[args.index("--app-id") + 1]
    resources = Path(args[args.index("--resources-path") + 1])
    extra = list(args)
    # Raprkit's Sidecar passes app id, ports, resources, metrics and log level itself: keep the
    # README's other flags, if any.
    for flag in ("--app-id", "--dapr-http-port", "--resources-path"):
        i = extra.index(flag)
        del extra[i:i + 2]
    sc = Sidecar(app_id, (work / resources).resolve(), work / "logs",
                 http_port=http_port, grpc_port=grpc_port, extra_args=extra, cwd=work)
    sc.start(timeout=30)
    try:
        yield sc
    finally:
        sc.stop()


def test_readme_curl_example(readme_sidecar):
    sc = readme_sidecar
    lines = [ln for ln in logical_lines(readme_blocks()["curl"]) if ln.strip()]
    last_out = None
    ran = 0
    for ln in lines:
        s = ln.strip()
        if s.startswith("rapr sidecar"):
            continue
        if s.startswith("# =>"):
            expected = s[len("# =>"):].strip()
            assert last_out is not None, "an expectation with no command before it"
            assert last_out.strip() == expected, f"README promised {expected!r}, got {last_out!r}"
            continue
        if s.startswith("#"):
            continue
        cmd = substitute_ports(s, sc.http_port, sc.grpc_port).replace("localhost:", "127.0.0.1:")
        res = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, f"{cmd!r} failed ({res.returncode}): {res.stderr}\n{sc.logs()}"
        last_out = res.stdout
        ran += 1
    assert ran >= 2
    # The example component really is the SQLite file of examples/components/statestore.yaml.
    assert (sc.cwd / "rapr-demo.db").exists(), sorted(p.name for p in sc.cwd.iterdir())


def test_readme_python_example(readme_sidecar):
    sc = readme_sidecar
    blocks = readme_blocks()
    code = substitute_ports(blocks["python"], sc.http_port, sc.grpc_port)
    env = dict(os.environ)
    env.update(DAPR_HTTP_PORT=str(sc.http_port), DAPR_GRPC_PORT=str(sc.grpc_port),
               DAPR_RUNTIME_HOST="127.0.0.1", DAPR_HEALTH_TIMEOUT="20")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=env, cwd=str(sc.cwd))
    assert res.returncode == 0, f"stderr: {res.stderr}\n{sc.logs()}"
    assert res.stdout == blocks["python-output"] + "\n"


def test_hello_through_rapr_run(tmp_path):
    resources = tmp_path / "components"
    write_components(resources, tmp_path / "hello.db", with_memstore=False)
    http_port, grpc_port = free_ports(2)
    cmd = [str(rapr_bin()), "run", "--app-id", "hello", "--resources-path", str(resources),
           "--dapr-http-port", str(http_port), "--dapr-grpc-port", str(grpc_port),
           "--", "python3", "examples/hello.py"]
    if not rapr_bin().exists():
        pytest.fail(f"rapr binary not found at {rapr_bin()}")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=str(REPO_ROOT),
                         stdin=subprocess.DEVNULL)
    out = res.stdout
    detail = f"exit {res.returncode}\n--- stdout ---\n{out}\n--- stderr ---\n{res.stderr}"
    assert res.returncode == 0, detail
    assert "You're up and running!" in out + res.stderr, detail
    # The app writes to the terminal itself, unprefixed (as `dapr run` of CLI 1.17+).
    app_lines = out.splitlines()
    assert "Saved state: HTTP 204" in app_lines, detail
    assert 'Read back: {"message": "Hello from hello!"}' in app_lines, detail


def test_rapr_run_exits_with_the_apps_exit_code(tmp_path):
    resources = tmp_path / "components"
    write_components(resources, tmp_path / "exit.db", with_memstore=False)
    http_port, grpc_port = free_ports(2)
    script = "import os, sys; print('port', os.environ['DAPR_HTTP_PORT'], os.environ['APP_ID']); sys.exit(7)"
    cmd = [str(rapr_bin()), "run", "--app-id", "exiter", "--resources-path", str(resources),
           "--dapr-http-port", str(http_port), "--dapr-grpc-port", str(grpc_port),
           "--", "python3", "-c", script]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=str(tmp_path),
                         stdin=subprocess.DEVNULL)
    detail = f"exit {res.returncode}\n--- stdout ---\n{res.stdout}\n--- stderr ---\n{res.stderr}"
    assert res.returncode == 7, detail
    assert f"port {http_port} exiter" in res.stdout.splitlines(), detail


def test_readme_pubsub_example(tmp_path):
    """The pub/sub example: `rapr run` with examples/subscriber.py, a curl publish, the app prints
    the order."""
    blocks = readme_blocks()
    lines = [ln.strip() for ln in logical_lines(blocks["pubsub"]) if ln.strip()]
    run_lines = [ln for ln in lines if ln.startswith("rapr run")]
    assert len(run_lines) == 1, lines
    argv = shlex.split(run_lines[0].rstrip("&").strip())
    work = tmp_path / "readme-pubsub"
    shutil.copytree(REPO_ROOT / "examples", work / "examples")
    http_port, grpc_port, app_port = free_ports(3)
    args = [a.replace("3500", str(http_port)).replace("5001", str(app_port)) for a in argv[2:]]
    assert "--app-port" in args and "--" in args, args
    # rapr run's default gRPC port (50001) may be another test's: give it a free one.
    sep = args.index("--")
    args[sep:sep] = ["--dapr-grpc-port", str(grpc_port)]
    if not rapr_bin().exists():
        pytest.fail(f"rapr binary not found at {rapr_bin()}")
    proc = subprocess.Popen([str(rapr_bin()), "run", *args], cwd=str(work), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()

    def subscribed():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1.0/metadata", timeout=2) as r:
                return any(s.get("topic") == "orders" for s in json.load(r).get("subscriptions", []))
        except OSError:
            return False

    try:
        try:
            wait_until(subscribed, 30, what="the subscriber's subscription in /v1.0/metadata")
        except TimeoutError as e:
            raise AssertionError(f"{e}\n{''.join(out)}")
        for ln in lines:
            if ln.startswith("rapr run") or ln.startswith("#"):
                continue
            cmd = substitute_ports(ln, http_port, grpc_port).replace("localhost:", "127.0.0.1:")
            res = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=30)
            assert res.returncode == 0, f"{cmd!r} failed ({res.returncode}): {res.stderr}\n{''.join(out)}"
        expected = [ln for ln in blocks["pubsub-output"].splitlines() if ln.strip()]
        try:
            wait_until(lambda: all(e + "\n" in out for e in expected), 20, what="the subscriber's output")
        except TimeoutError as e:
            raise AssertionError(f"{e}\n{''.join(out)}")
        # The example component is the embedded broker's file.
        assert (work / "rapr-pubsub.db").exists(), sorted(p.name for p in work.iterdir())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        reader.join(timeout=5)
