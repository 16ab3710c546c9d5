"""Unplug and replug through the simulators: fail fast, no_device, back online by itself."""

from __future__ import annotations

import asyncio
import time

import pytest

from drivers.base import DeviceState, DeviceUnavailable
from drivers.idcard import IdCardSimulator, SamvReader, sample_card
from drivers.printer import EscPosPrinter, PrinterSimulator, PrintJob


async def test_pending_read_fails_at_once_and_reader_comes_back(
    reader: SamvReader, idcard_sim: IdCardSimulator
) -> None:
    idcard_sim.read_delay = 2.0  # the read command is in flight when the cable goes
    idcard_sim.insert_card()
    task = asyncio.create_task(reader.read_card(timeout=10))
    async with asyncio.timeout(5):
        while not idcard_sim.requests or idcard_sim.requests[-1].cmd != 0x30:
            await asyncio.sleep(0.01)
    unplugged = time.monotonic()
    await idcard_sim.unplug()
    with pytest.raises(DeviceUnavailable) as info:
        await task
    assert time.monotonic() - unplugged < 1.0
    assert info.value.state is DeviceState.NO_DEVICE
    assert reader.status.state is DeviceState.NO_DEVICE

    with pytest.raises(DeviceUnavailable) as again:
        await reader.read_card(timeout=5)
    assert again.value.state is DeviceState.NO_DEVICE

    await asyncio.sleep(0.5)
    idcard_sim.read_delay = 0.0
    await idcard_sim.replug()
    replugged = time.monotonic()
    await reader.wait_online(timeout=5)
    assert time.monotonic() - replugged < 5
    idcard_sim.remove_card()
    idcard_sim.insert_card()
    assert await reader.read_card(timeout=5) == sample_card()


async def test_reader_started_while_unplugged_finds_the_device_later() -> None:
    sim = IdCardSimulator(pace=False)
    path = await sim.start()
    await sim.unplug()
    reader = SamvReader("idcard", path, poll_interval=0.05)
    try:
        await reader.start()
        await asyncio.sleep(0.3)
        assert reader.status.state is DeviceState.NO_DEVICE
        await sim.replug()
        await reader.wait_online(timeout=5)
    finally:
        await reader.close()
        await sim.stop()


@pytest.mark.parametrize("transport", ["pty", "tcp"])
async def test_printer_unplug_and_replug(transport: str) -> None:
    sim = PrinterSimulator(transport="tcp" if transport == "tcp" else "pty", pace=False)
    port = await sim.start()
    printer = EscPosPrinter("printer", port, job_poll=0.05, status_timeout=0.3)
    try:
        await printer.start()
        await printer.wait_online(timeout=5)
        sim.print_time = 2.0
        job = asyncio.create_task(printer.print_job(PrintJob.of(["a"]), timeout=10))
        async with asyncio.timeout(5):
            while not sim.jobs:
                await asyncio.sleep(0.01)
        unplugged = time.monotonic()
        await sim.unplug()
        with pytest.raises(DeviceUnavailable) as info:
            await job
        assert time.monotonic() - unplugged < 1.0
        assert info.value.state is DeviceState.NO_DEVICE
        assert printer.status.state is DeviceState.NO_DEVICE
        sim.print_time = 0.0
        await sim.replug()
        await printer.wait_online(timeout=5)
        result = await printer.print_job(PrintJob.of(["b"]), timeout=5)
        assert result.confirmed
    finally:
        await printer.close()
        await sim.stop()
