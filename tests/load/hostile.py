"""Shared pieces of the hostile-input tests and bench: a daemon config, probes, /metrics reading."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.daemon import REPO, unix_session

REFUSED_UID = 65534  # nobody


def limit_open_files(limit: int) -> Callable[[], None]:
    """A preexec_fn giving the child a soft and hard RLIMIT_NOFILE of `limit` (systemd's default soft)."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


def hostile_config(root: Path, *, api: str = "", extra: str = "", level: str = "info") -> Path:
    """A config whose API socket another uid can reach: its directory is world-searchable.

    The state directory stays private (the daemon makes it 0700); only the socket's directory is
    opened up, as /run/edge-gateway is in production.
    """
    root.chmod(0o755)
    sock_dir = root / "sock"
    sock_dir.mkdir(exist_ok=True)
    sock_dir.chmod(0o755)
    path = root / "gateway.toml"
    path.write_text(
        f"""
[node]
id = "edge-hostile"
state_dir = "{root / "state"}"
auto_init_key = true

[api]
socket = "{sock_dir / "api.sock"}"
{api}

[log]
level = "{level}"
format = "json"
{extra}
"""
    )
    return path


def socket_of(config: Path) -> Path:
    return config.parent / "sock" / "api.sock"


@dataclass
class Probe:
    """What a well-behaved client saw while it kept asking for /v1/health."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def probe_health(
    socket_path: Path, seconds: float, *, timeout: float = 1.0, pause: float = 0.05
) -> Probe:
    """GET /v1/health on a fresh connection each time for `seconds`; a miss of `timeout` fails."""
    probe = Probe()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        connector = aiohttp.UnixConnector(path=str(socket_path), force_close=True)
        started = time.perf_counter()
        try:
            async with (
                aiohttp.ClientSession(base_url="http://localhost", connector=connector) as http,
                asyncio.timeout(timeout),
                http.get("/v1/health") as resp,
            ):
                await resp.read()
                if resp.status != 200:
                    probe.failures.append(f"status {resp.status}")
                else:
                    probe.latencies.append(time.perf_counter() - started)
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            probe.failures.append(f"{type(err).__name__}: {err}")
        await asyncio.sleep(pause)
    return probe


def parse_metrics(text: str) -> dict[str, float]:
    """`name{labels}` -> value for every sample line of a Prometheus text exposition."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            values[name] = float(value)
    return values


async def metrics(socket_path: Path) -> dict[str, float]:
    async with unix_session(socket_path) as http, http.get("/metrics") as resp:
        assert resp.status == 200
        return parse_metrics(await resp.text())


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    assert match, text
    return int(match.group(1)) * 1024


@contextlib.asynccontextmanager
async def sampling(pid: int, every: float = 0.1) -> AsyncIterator[dict[str, int]]:
    """The largest fd count and RSS of `pid` seen while the block runs."""
    peak = {"fds": open_fds(pid), "rss": rss_bytes(pid)}

    async def watch() -> None:
        while True:
            with contextlib.suppress(OSError):
                peak["fds"] = max(peak["fds"], open_fds(pid))
                peak["rss"] = max(peak["rss"], rss_bytes(pid))
            await asyncio.sleep(every)

    task = asyncio.create_task(watch())
    try:
        yield peak
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run_flood(
    socket_path: Path,
    *,
    connections: int,
    seconds: float,
    uid: int | None = REFUSED_UID,
    reconnect: bool = False,
    rate: float = 2000.0,
    send: str = "",
) -> asyncio.subprocess.Process:
    """Start tests.load.flood in its own process (it drops to `uid` itself)."""
    argv = ["--socket", str(socket_path), "--connections", str(connections), "--seconds", str(seconds)]
    argv += ["--rate", str(rate)]
    if uid is not None:
        argv += ["--uid", str(uid)]
    if reconnect:
        argv.append("--reconnect")
    if send:
        argv += ["--send", send]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.load.flood", *argv, stdout=asyncio.subprocess.PIPE, cwd=REPO, env=env
    )


async def flood_result(proc: asyncio.subprocess.Process, timeout: float = 60.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        out, _ = await proc.communicate()
    assert proc.returncode == 0, out
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result
