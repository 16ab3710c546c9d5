"""Fixtures for driver tests: simulators on real pseudo-terminals / TCP, and drivers pointed at them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from drivers.base import DeviceEvent
from drivers.idcard import IdCardSimulator, SamvReader
from drivers.printer import EscPosPrinter, PrinterSimulator


@pytest.fixture
async def idcard_sim() -> AsyncIterator[IdCardSimulator]:
    sim = IdCardSimulator(pace=False)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def reader(idcard_sim: IdCardSimulator) -> AsyncIterator[SamvReader]:
    reader = SamvReader(
        "idcard", idcard_sim.port.path, poll_interval=0.05, find_timeout=0.2, read_timeout=1.0
    )
    await reader.start()
    await reader.wait_online(timeout=5)
    yield reader
    await reader.close()


@pytest.fixture
def events(reader: SamvReader) -> list[DeviceEvent]:
    seen: list[DeviceEvent] = []
    reader.subscribe(seen.append)
    return seen


@pytest.fixture
async def printer_sim() -> AsyncIterator[PrinterSimulator]:
    sim = PrinterSimulator(pace=False, print_time=0.05)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def printer(printer_sim: PrinterSimulator) -> AsyncIterator[EscPosPrinter]:
    printer = EscPosPrinter("printer", await _where(printer_sim), job_poll=0.05)
    await printer.start()
    await printer.wait_online(timeout=5)
    yield printer
    await printer.close()


async def _where(sim: PrinterSimulator) -> str:
    port = sim.port
    return getattr(port, "path", "") or getattr(port, "url", "")
