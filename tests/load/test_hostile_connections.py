"""Connection exhaustion: a local stranger holding idle connections cannot take the API down.

The daemon runs as a subprocess under systemd's default open-file limit (1,024); the attacker is
another process that drops to uid 65534 (nobody) and holds 1,100 idle connections.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.load.conftest import gateway
from tests.load.hostile import (
    flood_result,
    hostile_config,
    limit_open_files,
    metrics,
    probe_health,
    run_flood,
    sampling,
    socket_of,
)
from tests.support.daemon import running_daemon, short_tmpdir

FILE_LIMIT = 1024
FLOOD = 1100


@pytest.fixture
def root() -> Iterator[Path]:
    path = short_tmpdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _lines(output: str, event: str) -> list[str]:
    return [line for line in output.splitlines() if f'"event": "{event}"' in line]


async def test_refused_uid_flood_is_closed_at_accept_and_health_keeps_answering(root: Path) -> None:
    config = hostile_config(root, api='allowed_uids = [0]\nsocket_mode = "0666"')
    sock = socket_of(config)
    async with running_daemon(config, preexec_fn=limit_open_files(FILE_LIMIT)) as daemon:
        mark = len(daemon.output)
        async with sampling(daemon.proc.pid) as peak:
            flood = await run_flood(sock, connections=FLOOD, seconds=6, reconnect=True)
            await asyncio.sleep(0.5)
            probe = await probe_health(sock, 5)
            stats = await flood_result(flood)
        figures = await metrics(sock)
        output = daemon.output[mark:]
    assert stats["uid"] == 65534
    assert stats["connected"] >= FLOOD, stats
    # Every connection the stranger made was closed by the gateway, none answered.
    assert stats["closed_by_server"] >= FLOOD and stats.get("answered", 0) == 0, stats
    assert figures['edge_gateway_api_connections_refused_total{reason="peer"}'] >= FLOOD
    # The allowed client was served throughout, each time within a second.
    assert probe.latencies and not probe.failures, probe.failures[:5]
    # The gateway never held the stranger's connections: far from its 1,024 files.
    assert peak["fds"] < 200, peak
    assert figures["edge_gateway_api_accept_errors_total"] == 0
    # One log line for the first refusal (a later summary at most), no traceback.
    assert "Traceback" not in output and "out of system resource" not in output
    assert 1 <= len(_lines(output, "api_connection_refused")) <= 2, output[-2000:]
    assert len(output) < 8_000, len(output)


async def test_a_full_house_keeps_room_for_allowed_clients(root: Path) -> None:
    # No allow-list: any uid that can open the socket is served, up to the cap less the reserve.
    config = hostile_config(root, api='socket_mode = "0666"\nheader_timeout_s = 60')
    sock = socket_of(config)
    async with running_daemon(config, preexec_fn=limit_open_files(FILE_LIMIT)) as daemon:
        mark = len(daemon.output)
        async with sampling(daemon.proc.pid) as peak:
            flood = await run_flood(sock, connections=FLOOD, seconds=6)
            await asyncio.sleep(1.5)
            during = await metrics(sock)
            probe = await probe_health(sock, 3)
            stats = await flood_result(flood)
        output = daemon.output[mark:]
    cap = during["edge_gateway_api_connections_max"]
    assert cap == FILE_LIMIT - 256
    # The stranger got at most the cap less the 32 places kept for allowed clients.
    assert stats["held_at_end"] <= cap - 32, stats
    assert during["edge_gateway_api_connections_open"] <= cap - 32 + 1, during
    assert during['edge_gateway_api_connections_refused_total{reason="full"}'] >= FLOOD - cap, during
    # Root (an allowed client) still got in, every time, within a second.
    assert probe.latencies and not probe.failures, probe.failures[:5]
    assert peak["fds"] < FILE_LIMIT - 100, peak
    assert during["edge_gateway_api_accept_errors_total"] == 0
    assert "Traceback" not in output
    assert len(_lines(output, "api_connection_refused")) <= 2


async def test_a_silent_connection_is_closed_after_the_header_timeout(root: Path) -> None:
    config = hostile_config(root, api='socket_mode = "0666"\nheader_timeout_s = 0.5\nidle_timeout_s = 1')
    sock = socket_of(config)
    async with running_daemon(config) as _daemon:
        # Half a request head, then nothing: closed (the stranger sees EOF), and counted.
        flood = await run_flood(
            sock, connections=20, seconds=3, send="GET /v1/health HTTP/1.1\\r\\nHost: x\\r\\n"
        )
        stats = await flood_result(flood)
        assert stats["connected"] == 20 and stats["closed_by_server"] == 20, stats
        assert stats.get("answered", 0) == 0, stats
        # A kiosk that asked once and then idles is closed after idle_timeout_s.
        reader, writer = await asyncio.open_unix_connection(str(sock))
        writer.write(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            rest = await reader.read()  # the body, then EOF when the idle connection is closed
        assert rest.endswith(b"}")
        writer.close()
        figures = await metrics(sock)
    assert figures["edge_gateway_api_header_timeouts_total"] >= 20


async def test_out_of_descriptors_pauses_accepting_instead_of_spinning(state_dir: Path) -> None:
    async with gateway(state_dir) as gw:
        assert gw.daemon.server is not None and gw.daemon.server.guard is not None
        guard = gw.daemon.server.guard
        # The clients' sockets exist before the limit drops; only the gateway's accept() needs a new fd.
        clients = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(3)]
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        in_use = len(os.listdir("/proc/self/fd"))
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (in_use, hard))
            for client in clients:
                client.setblocking(False)
                client.connect(str(gw.socket_path))  # lands in the listen backlog
            await asyncio.sleep(1.2)
            errors_while_out = guard.accept_errors
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        # Paused and retried every 0.5 s: a handful of attempts, not a tight loop.
        assert 1 <= errors_while_out <= 6, errors_while_out
        # With descriptors back, the waiting connections are served.
        for client in clients:
            reader, writer = await asyncio.open_unix_connection(sock=client)
            writer.write(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            async with asyncio.timeout(10):
                assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            writer.close()
        assert guard.stats().accept_errors == errors_while_out
