"""The service's dependencies work under the unit's seccomp policy, and that policy bites.

No systemd PID 1 here: sandbox_exec.py loads the unit's SystemCallFilter=,
MemoryDenyWriteExecute= and RestrictAddressFamilies= with seccomp, the mechanism systemd uses.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Installed, need

HERE = Path(__file__).resolve().parent
# Any unprivileged id: the daemon runs as its own user, never as root.
SERVICE_UID = "990"


def sandboxed(repo: Path, *program: str) -> subprocess.CompletedProcess[str]:
    """Run `program` under the policy of systemd/edge-gateway.service, killing on a denied call."""
    need("systemd-analyze", "systemd")
    command = [
        sys.executable,
        "-m",
        "tests.systemd.sandbox_exec",
        str(repo / "systemd/edge-gateway.service"),
        "--as-uid",
        SERVICE_UID,
        "--",
        *program,
    ]
    return subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(params=["test-venv", "installed-venv"])
def python(request: pytest.FixtureRequest) -> str:
    """This test run's interpreter, and the one install.sh builds from Debian's python3."""
    if request.param == "test-venv":
        return sys.executable
    installed: Installed = request.getfixturevalue("installed")
    return str(installed.root / "opt/edge-gateway/venv/bin/python")


def test_dependencies_work_under_the_unit_sandbox(repo: Path, python: str) -> None:
    result = sandboxed(repo, python, str(HERE / "sandbox_workload.py"))
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    steps = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    assert steps["tls"].startswith("TLSv1.")
    assert set(steps) == {
        "ed25519",
        "tls",
        "http",
        "sqlite",
        "serial",
        "psutil",
        "getaddrinfo",
        "encoders",
        "pcsc",
    }
    assert result.stdout.splitlines()[-1] == "ok"


def test_a_resources_syscall_kills_the_process(repo: Path) -> None:
    result = sandboxed(repo, sys.executable, "-c", "import os; os.nice(1)")
    assert result.returncode == -signal.SIGSYS, result.stderr


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        pytest.param(
            "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)",
            errno.EPERM,
            id="writable-executable-mapping",
        ),
        pytest.param(
            "import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)",
            errno.EAFNOSUPPORT,
            id="packet-socket",
        ),
    ],
)
def test_denied_operations_fail(repo: Path, code: str, expected: int) -> None:
    probe = f"import sys\ntry:\n    {code}\nexcept OSError as e:\n    sys.exit(e.errno)\n"
    result = sandboxed(repo, sys.executable, "-c", probe)
    assert result.returncode == expected, result.stderr


async def unix_get(path: str, target: str) -> dict[str, object]:
    """GET `target` over the daemon's Unix socket; the parsed JSON body."""
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            writer.write(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            response = await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    parsed: dict[str, object] = json.loads(body)
    return parsed


async def test_the_daemon_runs_reloads_and_stops_under_the_unit_sandbox(repo: Path, tmp_path: Path) -> None:
    """`edge-gateway run` (embedded default: simulated devices) serves, reloads on SIGHUP, stops."""
    need("systemd-analyze", "systemd")
    env = {k: v for k, v in os.environ.items() if k != "EDGE_GATEWAY_CONFIG"}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.systemd.sandbox_exec",
        str(repo / "systemd/edge-gateway.service"),
        "--as-uid",
        SERVICE_UID,
        "--",
        sys.executable,
        "-m",
        "gateway",
        "run",
        cwd=repo,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    log: list[str] = []

    async def until(event: str) -> dict[str, object]:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            while line := (await proc.stdout.readline()).decode():
                log.append(line)
                if line.startswith("{") and (record := json.loads(line))["event"] == event:
                    parsed: dict[str, object] = record
                    return parsed
        raise AssertionError(f"daemon exited ({await proc.wait()}) before {event!r}:\n{''.join(log)}")

    try:
        ready = await until("ready")
        listening = ready["listening"]
        assert isinstance(listening, list)
        socket_path = str(listening[0])
        health = await unix_get(socket_path, "/v1/health")
        assert health["status"] in ("ok", "degraded"), health
        proc.send_signal(signal.SIGHUP)
        await until("reloaded")
        assert "loop" in await unix_get(socket_path, "/v1/status")
        proc.send_signal(signal.SIGTERM)
        await until("stopped")
        async with asyncio.timeout(30):
            rest, _ = await proc.communicate()
        log.append(rest.decode())
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # A syscall outside the allow-list would have killed it with SIGSYS instead.
    assert proc.returncode == 0, "".join(log)
