"""Hostile requests: quiet 400s, 401 for junk tokens, duplicate JSON keys, private state, debug_tcp."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.load.conftest import gateway, sim_devices
from tests.load.hostile import hostile_config, metrics, socket_of
from tests.load.kiosk import open_session
from tests.support.daemon import REPO, running_daemon, short_tmpdir


@pytest.fixture
def root() -> Iterator[Path]:
    path = short_tmpdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def _exchange(socket_path: Path, request: bytes) -> bytes:
    """Send raw bytes on a fresh connection; everything the server answers until it closes."""
    reader, writer = await asyncio.open_unix_connection(str(socket_path))
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            return head + await reader.readexactly(length)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


MALFORMED = (
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS hello on a plain socket
    b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\n",  # a header too long
    b"GET /v1/health HTTP/9.9\r\nHost: x\r\n\r\n",  # no such version
    b"G\x00T / HTTP/1.1\r\n\r\n",  # a NUL in the method
    b"GET /v1/health HTTP/1.1\r\nBad Header\r\n\r\n",  # no colon
)


async def test_malformed_requests_get_400_and_one_log_line_not_a_traceback_each(root: Path) -> None:
    config = hostile_config(root)
    sock = socket_of(config)
    async with running_daemon(config) as daemon:
        mark = len(daemon.output)
        statuses: set[bytes] = set()
        for index in range(1000):
            answer = await _exchange(sock, MALFORMED[index % len(MALFORMED)])
            statuses.add(answer.split(b" ", 2)[1])
        output = daemon.output[mark:]
        figures = await metrics(sock)
        health = await _exchange(sock, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert statuses == {b"400"}, statuses
    assert health.startswith(b"HTTP/1.1 200")
    assert figures["edge_gateway_api_malformed_requests_total"] >= 1000
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if "http_malformed_request" in line]
    # The first of each kind of parse error, nothing per request (aiohttp wrote ~800 bytes each).
    assert 1 <= len(lines) <= len(MALFORMED), lines
    assert len(output) < 4_000, output[-2000:]


async def test_a_token_that_is_not_utf8_is_401_and_only_the_sessions_own_errors_count(
    state_dir: Path,
) -> None:
    async with gateway(state_dir, devices=sim_devices(idcard=False)) as gw, gw.client() as http:
        session = await open_session(http)
        target = session.path("/factors/idcard")
        junk = (
            f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n".encode()
            + b"Authorization: Bearer \xff\xfe\x80\r\n\r\n"
        )
        answer = await _exchange(gw.socket_path, junk)
        assert answer.startswith(b"HTTP/1.1 401"), answer
        assert b"application/problem+json" in answer and b"unauthenticated" in answer
        live = gw.daemon.parts.sessions.get(session.id)
        assert live is not None and live.errors == 0
        # The scheme is case-insensitive (RFC 9110 section 11.1).
        token = session.auth["Authorization"].split(" ", 1)[1]
        async with http.get(session.path(), headers={"Authorization": f"bearer {token}"}) as resp:
            assert resp.status == 200
        async with http.get(session.path(), headers={"Authorization": f"BEARER  {token} "}) as resp:
            assert resp.status == 200
        # The session's own request failing (no ID card reader here: 503) does count.
        async with http.post(target, headers=session.auth) as resp:
            assert resp.status == 503
        assert live.errors == 1


async def test_a_json_body_with_a_key_twice_is_refused(state_dir: Path) -> None:
    async with gateway(state_dir, devices=sim_devices(idcard=False)) as gw, gw.client() as http:
        headers = {"Content-Type": "application/json"}
        body = b'{"kind": "citizen", "kind": "technician"}'
        async with http.post("/v1/sessions", data=body, headers=headers) as resp:
            assert resp.status == 400
            problem = await resp.json(content_type=None)
            assert problem["type"].endswith("/malformed-body") and "duplicate" in problem["detail"]
        async with http.get("/v1/status") as resp:
            assert (await resp.json())["sessions"]["open"] == 0, "no session was made"
        session = await open_session(http)
        nested = b'{"lines": ["a"], "qr": "x", "cut": true, "cut": false}'
        async with http.post(
            session.path("/print"), data=nested, headers={**headers, **session.auth}
        ) as resp:
            assert resp.status == 400
        async with http.get(session.path(), headers=session.auth) as resp:
            assert (await resp.json())["jobs"] == 0


def _loose(path: Path) -> list[str]:
    """Files and directories under `path` that anyone but the owner can read (sockets aside)."""
    found = []
    for item in [path, *path.rglob("*")]:
        mode = item.lstat().st_mode
        if stat.S_ISSOCK(mode):
            continue
        if mode & 0o077:
            found.append(f"{item.relative_to(path.parent)} {stat.filemode(mode)}")
    return found


async def test_state_is_private_whatever_umask_starts_the_daemon(root: Path) -> None:
    config = hostile_config(root, extra="[ops]\ntelemetry_interval_s = 0.2\n")
    state = root / "state"
    assert not state.exists()
    async with running_daemon(config, preexec_fn=lambda: os.umask(0o022) and None) as daemon:
        wal = state / "outbox.sqlite3-wal"
        for _ in range(100):
            if wal.exists() and wal.stat().st_size > 0:
                break
            await asyncio.sleep(0.1)
        assert wal.exists(), daemon.output[-2000:]
        assert _loose(state) == []
    assert _loose(state) == []
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


async def test_a_state_dir_left_loose_by_an_old_run_is_made_private(root: Path) -> None:
    config = hostile_config(root)
    state = root / "state"
    (state / "usage").mkdir(parents=True)
    state.chmod(0o755)
    (state / "usage").chmod(0o755)
    old = state / "usage" / "2026-01-01.json"  # a file the daemon does not rewrite
    old.write_text("{}")
    old.chmod(0o644)
    async with running_daemon(config) as daemon:
        assert _loose(state) == [], daemon.output[-2000:]
        assert any("state_made_private" in line for line in daemon.output.splitlines())
    assert stat.S_IMODE(old.stat().st_mode) == 0o600


async def _gateway_cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_debug_tcp_cannot_be_combined_with_allowed_uids(root: Path) -> None:
    config = hostile_config(root, api='allowed_uids = [0]\ndebug_tcp = "127.0.0.1:18099"')
    code, out = await _gateway_cli("config", "check", "-c", str(config))
    assert code == 2, out
    assert "api" in out and "debug_tcp cannot be combined with allowed_uids" in out
    code, out = await _gateway_cli("run", "-c", str(config))
    assert code == 2, out
    assert "debug_tcp cannot be combined with allowed_uids" in out
    assert not socket_of(config).exists(), "nothing listened"
