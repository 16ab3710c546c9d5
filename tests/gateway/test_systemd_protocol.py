"""sd_notify, watchdog and socket activation against real peers (datagram socket, socket-activate)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import inprocess_daemon, spawn_daemon, unix_session, write_config


class NotifyListener:
    """A NOTIFY_SOCKET like systemd's: records every datagram with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def times(self, needle: str) -> list[float]:
        return [t for t, m in self.messages if needle in m.split("\n")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify(state_dir: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(state_dir / "notify.sock")
    yield listener
    listener.close()


async def _wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def test_ready_only_after_listening_and_watchdog_rate(state_dir: Path, notify: NotifyListener) -> None:
    config = write_config(state_dir)
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    dp = await spawn_daemon(config, env=env, wait_ready=False)
    try:
        await _wait_for(lambda: notify.times("READY=1"))
        # READY means the socket accepts connections right now.
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(state_dir / "api.sock"))
        probe.close()
        ready_at = notify.times("READY=1")[0]
        await asyncio.sleep(2.0)
        pings = [t for t in notify.times("WATCHDOG=1") if t >= ready_at]
        # WATCHDOG_USEC/2 = 0.2 s: about 10 pings in 2 s; allow slack for a loaded machine.
        assert 6 <= len(pings) <= 12, pings
        assert any(m.startswith("STATUS=") or "\nSTATUS=" in m for _, m in notify.messages)
    finally:
        assert await dp.stop() == 0
    assert notify.times("STOPPING=1"), "STOPPING=1 sent on shutdown"


async def test_no_watchdog_pings_while_loop_blocked(
    state_dir: Path, notify: NotifyListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    async with inprocess_daemon(state_dir):
        await _wait_for(lambda: len(notify.times("WATCHDOG=1")) >= 3)
        blocked_from = time.monotonic()
        time.sleep(1.5)  # the event loop is deliberately blocked, as a hung handler would
        blocked_to = time.monotonic()
        await asyncio.sleep(1.5)
        during = [t for t in notify.times("WATCHDOG=1") if blocked_from + 0.05 < t < blocked_to]
        after = [t for t in notify.times("WATCHDOG=1") if t > blocked_to]
        assert during == [], "no ping may leave while the loop is blocked"
        assert len(after) >= 2, "pings resume once the loop recovers"


async def test_socket_activation_serves_early_client(state_dir: Path) -> None:
    activator = shutil.which("systemd-socket-activate")
    assert activator, "systemd-socket-activate missing: apt-get install -y systemd"
    config = write_config(state_dir)
    sock_path = state_dir / "activated.sock"
    import sys

    proc = await asyncio.create_subprocess_exec(
        activator,
        "-l",
        str(sock_path),
        sys.executable,
        "-m",
        "gateway",
        "run",
        "-c",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await _wait_for(sock_path.exists)
        # Connect before the daemon exists: systemd holds the socket; the request waits in the backlog.
        async with unix_session(sock_path) as http:
            resp = await asyncio.wait_for(http.get("/v1/health"), 30)
            assert resp.status == 200
            status = await (await http.get("/v1/status")).json()
            assert status["listening"][0].startswith("fd:")
        assert not (state_dir / "api.sock").exists(), "the configured path is not bound when activated"
    finally:
        proc.terminate()
        _out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert b"Traceback" not in err
