"""The service's dependencies work under the unit's seccomp policy, and that policy bites.

No systemd PID 1 here: sandbox_exec.py loads the unit's SystemCallFilter=,
MemoryDenyWriteExecute= and RestrictAddressFamilies= with seccomp, the mechanism systemd uses.
"""

from __future__ import annotations

import errno
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
