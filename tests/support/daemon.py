"""Start the gateway for tests: as a subprocess (real signals, real exit codes) or in-process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway.config import GatewayConfig, parse_config
from gateway.daemon import Daemon

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on (?P<where>\S+)")


def short_tmpdir() -> Path:
    """A temp dir with a short path: Unix socket paths are limited to 107 bytes."""
    return Path(tempfile.mkdtemp(prefix="egw-", dir="/tmp"))


def write_config(
    state_dir: Path, extra: str = "", *, node_id: str = "edge-test", api_extra: str = ""
) -> Path:
    """A minimal config for tests: state in `state_dir`, no broker unless `extra` sets one.

    `api_extra` goes inside the [api] table (which this config already declares).
    """
    path = state_dir / "gateway.toml"
    text = f"""
[node]
id = "{node_id}"
state_dir = "{state_dir}"
auto_init_key = true

[api]
socket = "{state_dir / "api.sock"}"
{api_extra}

[log]
level = "debug"
format = "json"
{extra}
"""
    path.write_text(text)
    return path


def unix_session(socket_path: Path, **kwargs: Any) -> aiohttp.ClientSession:
    """An aiohttp client talking to the gateway's Unix socket."""
    connector = aiohttp.UnixConnector(path=str(socket_path), limit=kwargs.pop("limit", 300))
    return aiohttp.ClientSession(
        base_url="http://localhost", connector=connector, raise_for_status=False, **kwargs
    )


@dataclass
class DaemonProcess:
    """A gateway subprocess with its captured output."""

    proc: asyncio.subprocess.Process
    config_path: Path
    state_dir: Path
    socket_path: Path
    stdout_lines: list[str] = field(default_factory=list)
    stderr_lines: list[str] = field(default_factory=list)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "\n".join(self.stdout_lines + self.stderr_lines)

    async def wait_exit(self, timeout: float = 10.0) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.gather(*self._readers, return_exceptions=True)
        return code

    def signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)

    async def stop(self, timeout: float = 10.0) -> int:
        self.signal(signal.SIGTERM)
        try:
            return await self.wait_exit(timeout)
        except TimeoutError:
            self.signal(signal.SIGKILL)
            return await self.wait_exit(timeout)

    async def wait_for_output(self, pattern: str, timeout: float = 10.0) -> str:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.stdout_lines + self.stderr_lines:
                if regex.search(line):
                    return line
            if self.proc.returncode is not None and all(r.done() for r in self._readers):
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"no output matching {pattern!r}; output so far:\n{self.output}")


async def _pump(stream: asyncio.StreamReader | None, sink: list[str]) -> None:
    if stream is None:
        return
    while line := await stream.readline():
        sink.append(line.decode(errors="replace").rstrip("\n"))


async def spawn_daemon(
    config_path: Path | None,
    *,
    args: list[str] | None = None,
    env: Mapping[str, str] | None = None,
    wait_ready: bool = True,
    timeout: float = 20.0,
    preexec_fn: Callable[[], None] | None = None,
) -> DaemonProcess:
    """Run `python -m gateway run -c CONFIG` and wait until it prints its listening line.

    `preexec_fn` runs in the child before the gateway starts (a file limit, a umask).
    """
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    argv = args if args is not None else ["run", *(["-c", str(config_path)] if config_path else [])]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=full_env,
        cwd=REPO,
        preexec_fn=preexec_fn,
    )
    state_dir = config_path.parent if config_path else Path()
    dp = DaemonProcess(proc, config_path or Path(), state_dir, state_dir / "api.sock")
    dp._readers = [
        asyncio.create_task(_pump(proc.stdout, dp.stdout_lines)),
        asyncio.create_task(_pump(proc.stderr, dp.stderr_lines)),
    ]
    if wait_ready:
        try:
            line = await dp.wait_for_output(r"listening on ", timeout=timeout)
        except AssertionError:
            await dp.stop()
            raise
        match = LISTENING.search(line)
        if match and match.group("where").startswith("/"):
            dp.socket_path = Path(match.group("where").rstrip(","))
    return dp


@contextlib.asynccontextmanager
async def running_daemon(config_path: Path, **kwargs: Any) -> AsyncIterator[DaemonProcess]:
    dp = await spawn_daemon(config_path, **kwargs)
    try:
        yield dp
    finally:
        if dp.proc.returncode is None:
            await dp.stop()
        else:
            await asyncio.gather(*dp._readers, return_exceptions=True)


@dataclass
class InProcessDaemon:
    daemon: Daemon
    task: asyncio.Task[int]
    config: GatewayConfig

    @property
    def socket_path(self) -> Path:
        return self.config.socket_path

    def client(self, **kwargs: Any) -> aiohttp.ClientSession:
        return unix_session(self.socket_path, **kwargs)


@contextlib.asynccontextmanager
async def inprocess_daemon(
    state_dir: Path, extra: str = "", *, api_extra: str = "", **daemon_kwargs: Any
) -> AsyncIterator[InProcessDaemon]:
    """The daemon in the test's own event loop (fast; for API-level tests)."""
    config_path = write_config(state_dir, extra, api_extra=api_extra)
    config = parse_config(config_path.read_text(), source=str(config_path))
    ready = asyncio.Event()
    lines: list[str] = []

    def announce(line: str) -> None:
        lines.append(line)
        if "listening on" in line:  # parts (the in-process cloud) may announce earlier
            ready.set()

    daemon = Daemon(
        config,
        config_path=str(config_path),
        announce=announce,
        install_signals=False,
        **daemon_kwargs,
    )
    task = asyncio.create_task(daemon.run())
    ready_wait = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait({task, ready_wait}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if ready_wait not in done:
        ready_wait.cancel()
        if task.done():
            task.result()
        raise AssertionError("in-process daemon did not become ready")
    try:
        yield InProcessDaemon(daemon, task, config)
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 20)
