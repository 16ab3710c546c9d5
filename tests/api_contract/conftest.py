"""A gateway subprocess with simulated devices and a debug TCP listener, for contract tests and fuzzing."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.auth.pins import hash_pin
from gateway.auth.settings import decode_base32_secret
from gateway.auth.totp import totp_value
from tests.support.daemon import REPO, short_tmpdir, write_config

STAFF_ID = "tech1"
STAFF_PIN = "246810"
STAFF_TOTP = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def contract_config(state_dir: Path, port: int) -> Path:
    """Simulated ID card reader and printer, a technician who can prove PIN + TOTP while offline."""
    # write_config's [api] table cannot be extended from its `extra`, so debug_tcp goes in here.
    path = write_config(state_dir)
    text = path.read_text().replace("[api]\n", f'[api]\ndebug_tcp = "127.0.0.1:{port}"\n', 1)
    assert "debug_tcp" in text, "tests/support/daemon.py's write_config no longer has an [api] table"
    path.write_text(text + _EXTRA.format(staff=STAFF_ID, totp=STAFF_TOTP, pin_hash=hash_pin(STAFF_PIN)))
    return path


_EXTRA = """
[devices.idcard]
driver = "samv"
port = "sim://idcard"

[devices.printer]
driver = "escpos"
port = "sim://printer"
baudrate = 115200
sim_print_time_s = 0.05

[auth.staff.{staff}]
totp_secret = "{totp}"
pin_hash = "{pin_hash}"

# No broker in tests, so the gateway is offline: let PIN + TOTP authorise maintenance
# so the fuzzer reaches the maintenance routes' own answers.
[auth.policy.maintenance]
session_kinds = ["technician"]
offline_allowed = [["totp", "pin"]]
"""


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Gateway:
    """A running gateway subprocess reached over its debug TCP listener."""

    proc: subprocess.Popen[bytes]
    state_dir: Path
    port: int
    output: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        token: str | None = None,
        content_type: str | None = "application/json",
        timeout: float = 10.0,
    ) -> Reply:
        """One HTTP request on a fresh connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        headers: dict[str, str] = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None and content_type is not None:
            headers["Content-Type"] = content_type
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.output.read_text(errors="replace").splitlines()[-lines:])


def start_gateway(state_dir: Path, *, timeout: float = 20.0) -> Gateway:
    port = free_port()
    config = contract_config(state_dir, port)
    output = state_dir / "output.log"
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(config)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    gateway = Gateway(proc, state_dir, port, output)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f"http://127.0.0.1:{port}" in output.read_text(errors="replace"):
            return gateway
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    stop_gateway(gateway)
    raise AssertionError(f"the gateway did not start listening:\n{gateway.log_tail()}")


def stop_gateway(gateway: Gateway) -> None:
    if gateway.proc.poll() is None:
        gateway.proc.send_signal(signal.SIGTERM)
        try:
            gateway.proc.wait(15)
        except subprocess.TimeoutExpired:
            gateway.proc.kill()
            gateway.proc.wait(5)


@dataclass
class LiveSession:
    id: str
    token: str
    kind: str


@dataclass
class Sessions:
    """Live sessions for the fuzzer: a citizen one (recreated after a DELETE) and a two-factor technician."""

    gateway: Gateway
    _citizen: LiveSession | None = None
    _technician: LiveSession | None = None
    created: list[str] = field(default_factory=list)
    jobs: dict[str, str] = field(default_factory=dict)

    def create(self, kind: str) -> LiveSession:
        reply = self.gateway.request("POST", "/v1/sessions", body=json.dumps({"kind": kind}).encode())
        assert reply.status == 201, reply.body
        data = reply.json()
        self.created.append(data["id"])
        return LiveSession(data["id"], data["token"], kind)

    def alive(self, session: LiveSession) -> bool:
        return self.gateway.request("GET", f"/v1/sessions/{session.id}", token=session.token).status == 200

    def citizen(self) -> LiveSession:
        if self._citizen is None or not self.alive(self._citizen):
            self._citizen = self.create("citizen")
        return self._citizen

    def job(self, session: LiveSession) -> str:
        """The id of a print job of `session` (queues one the first time)."""
        if session.id not in self.jobs:
            reply = self.gateway.request(
                "POST",
                f"/v1/sessions/{session.id}/print",
                body=json.dumps({"lines": ["contract test"]}).encode(),
                token=session.token,
            )
            assert reply.status == 202, reply.body
            self.jobs[session.id] = reply.json()["job"]
        return self.jobs[session.id]

    def technician(self) -> LiveSession:
        """A technician session holding TOTP + PIN, so maintenance is authorised."""
        if self._technician is None or not self.alive(self._technician):
            session = self.create("technician")
            code = totp_value(decode_base32_secret(STAFF_TOTP), time.time())
            for path, payload in (
                ("totp", {"code": code, "staff_id": STAFF_ID}),
                ("pin", {"pin": STAFF_PIN, "staff_id": STAFF_ID}),
            ):
                reply = self.gateway.request(
                    "POST",
                    f"/v1/sessions/{session.id}/factors/{path}",
                    body=json.dumps(payload).encode(),
                    token=session.token,
                )
                assert reply.status == 200, (path, reply.body)
            self._technician = session
        return self._technician


@pytest.fixture(scope="session")
def gateway() -> Iterator[Gateway]:
    """One gateway subprocess for the package (starting one per test would dominate the run)."""
    state_dir = short_tmpdir()
    gw = start_gateway(state_dir)
    try:
        yield gw
    finally:
        stop_gateway(gw)
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def sessions(gateway: Gateway) -> Sessions:
    return Sessions(gateway)
