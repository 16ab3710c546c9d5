"""Remote peripherals: the real SAM_V driver through Debian's ser2net (a serial device server) in front
of the ID card simulator's pseudo-terminal, in raw TCP (`socket://`) and RFC 2217 (`rfc2217://`)
modes, including the server going away and coming back."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from drivers.base import DeviceState
from drivers.idcard import IdCardSimulator, SamvReader
from tests.support.mosquitto import free_port

SER2NET = shutil.which("ser2net") or "/usr/sbin/ser2net"


class Ser2net:
    """One ser2net process serving one pty on a loopback port, raw or RFC 2217."""

    def __init__(self, tmp: Path, device: str, *, mode: str) -> None:
        if not Path(SER2NET).exists():
            pytest.fail("ser2net is missing: apt-get install ser2net (scripts/system-deps.sh does)")
        self.port = free_port()
        accepter = (
            f"tcp,127.0.0.1,{self.port}" if mode == "raw" else f"telnet(rfc2217),tcp,127.0.0.1,{self.port}"
        )
        self.config = tmp / f"ser2net-{mode}.yaml"
        self.config.write_text(
            f"connection: &{mode}\n  accepter: {accepter}\n  connector: serialdev,{device},115200n81,local\n"
        )
        self.pidfile = tmp / f"ser2net-{mode}.pid"
        self.url = f"{'socket' if mode == 'raw' else 'rfc2217'}://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [SER2NET, "-n", "-c", str(self.config), "-P", str(self.pidfile)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise AssertionError(f"ser2net did not listen on {self.port}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait(5)


@pytest.fixture
async def sim() -> AsyncIterator[IdCardSimulator]:
    sim = IdCardSimulator(pace=False)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture(params=["raw", "rfc2217"])
def server(request: pytest.FixtureRequest, tmp_path: Path, sim: IdCardSimulator) -> Iterator[Ser2net]:
    server = Ser2net(tmp_path, sim.port.path, mode=request.param)
    try:
        yield server
    finally:
        server.stop()


async def wait_state(reader: SamvReader, state: DeviceState, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while reader.status.state is not state:
            await asyncio.sleep(0.05)


async def test_reads_through_the_device_server_and_recovers_after_it_returns(
    server: Ser2net, sim: IdCardSimulator
) -> None:
    await server.start()
    reader = SamvReader("idcard", server.url, baudrate=115200)
    await reader.start()
    try:
        await wait_state(reader, DeviceState.ONLINE)
        sim.insert_card()
        card = await reader.read_card(timeout=3)
        assert card.document_number.startswith("110101")

        server.stop()  # the serial device server is unplugged
        await wait_state(reader, DeviceState.NO_DEVICE)
        await server.start()  # and comes back
        await wait_state(reader, DeviceState.ONLINE, timeout=15)
        # The card read before the outage leaves the field; a new presentation is read.
        sim.remove_card()
        second = asyncio.create_task(reader.read_card(timeout=5))
        await asyncio.sleep(0.5)
        sim.insert_card()
        card = await second
        assert card.document_number.startswith("110101")
    finally:
        await reader.close()
