"""Fixtures for load and behaviour tests: a state dir and an in-process gateway with simulated devices."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from gateway.config import GatewayConfig, parse_config
from gateway.daemon import Daemon
from tests.support.daemon import short_tmpdir, unix_session


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = short_tmpdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def sim_devices(
    *,
    print_time: float = 0.01,
    printer_depth: int = 64,
    printer_port: str = "sim://printer",
    idcard: bool = True,
    idcard_depth: int = 64,
) -> str:
    """TOML for the simulated ID card reader and receipt printer, with the given queue bounds."""
    text = f"""
[devices.printer]
driver = "escpos"
port = "{printer_port}"
baudrate = 115200
sim_print_time_s = {print_time}
[devices.printer.queue]
depth = {printer_depth}
"""
    if idcard:
        text += f"""
[devices.idcard]
driver = "samv"
port = "sim://idcard"
baudrate = 115200
[devices.idcard.queue]
depth = {idcard_depth}
"""
    return text


def config_text(state_dir: Path, *, api: str = "", devices: str = "") -> str:
    """A whole config: `api` lines go into the [api] table (write_config has no room for them)."""
    return f"""
[node]
id = "edge-load"
state_dir = "{state_dir}"
auto_init_key = true

[api]
socket = "{state_dir / "api.sock"}"
{api}

[log]
level = "warning"
{devices}
"""


@dataclass
class Gateway:
    """A running in-process daemon and how to reach it."""

    daemon: Daemon
    config: GatewayConfig

    @property
    def socket_path(self) -> Path:
        return self.config.socket_path

    def client(self, **kwargs: object) -> aiohttp.ClientSession:
        return unix_session(self.socket_path, **kwargs)


@contextlib.asynccontextmanager
async def gateway(state_dir: Path, *, api: str = "", devices: str = "") -> AsyncIterator[Gateway]:
    """Run the daemon in this event loop until the block ends; fails if it does not become ready."""
    path = state_dir / "gateway.toml"
    path.write_text(config_text(state_dir, api=api, devices=devices))
    config = parse_config(path.read_text(), source=str(path))
    ready = asyncio.Event()
    daemon = Daemon(config, config_path=str(path), announce=lambda _line: ready.set(), install_signals=False)
    task = asyncio.create_task(daemon.run(), name="gateway-under-test")
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if not ready.is_set():
        waiter.cancel()
        if task.done():
            task.result()  # the startup error, as it happened
        daemon.request_stop()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 20)
        raise AssertionError("the gateway did not become ready within 20 s")
    try:
        yield Gateway(daemon, config)
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 20)
