"""Raster lines and cut modes through EscPosPrinter and the simulator, over a real pty and TCP."""

from __future__ import annotations

import asyncio
import os

import structlog

from drivers.printer import EscPosPrinter, Line, PrinterSimulator, PrintJob
from drivers.printer.errors import RasterFontMissing
from drivers.printer.frames import CUT_PARTIAL, RasterImage
from drivers.printer.job import PrinterProfile, encode_job

NAME = "刘䶮"


async def test_rare_name_prints_as_raster_and_the_simulator_decodes_it() -> None:
    sim = PrinterSimulator(transport="tcp", print_time=0.01)
    url = await sim.start()
    profile = PrinterProfile(width_dots=384, cut="partial")
    printer = EscPosPrinter("printer", url, job_poll=0.05, profile=profile)
    job = PrintJob((Line("姓名"), Line(NAME, double=True), Line("No. 1")))
    try:
        await printer.start()
        await printer.wait_online(timeout=5)
        with structlog.testing.capture_logs() as logs:
            result = await printer.print_job(job, timeout=10)
    finally:
        await printer.close()
        await sim.stop()
    assert result.confirmed
    assert sim.jobs == [encode_job(job, profile)]
    assert [(r.width_bytes, r.height, len(r.data)) for r in sim.rasters] == [(12, 48, 12 * 48)]
    assert sim.cuts == [CUT_PARTIAL]
    event = next(e for e in logs if e["event"] == "job_unprintable_text")
    assert (event["raster_lines"], event["replaced_chars"]) == (1, 0)
    assert all(NAME not in str(e) and "䶮" not in str(e) for e in logs)


async def test_missing_font_refuses_the_job_before_sending(
    printer_sim: PrinterSimulator,
) -> None:
    profile = PrinterProfile(raster_fonts=("/nonexistent/font.ttc",))
    with structlog.testing.capture_logs() as logs:
        printer = EscPosPrinter("printer", printer_sim.port.path, job_poll=0.05, profile=profile)  # type: ignore[attr-defined]
    assert [e["path"] for e in logs if e["event"] == "raster_font_missing"] == ["/nonexistent/font.ttc"]
    await printer.start()
    try:
        await printer.wait_online(timeout=5)
        try:
            await printer.print_job(PrintJob.of([NAME]), timeout=5)
        except RasterFontMissing as err:
            assert err.device == "printer" and err.code == "raster_font_missing"
        else:
            raise AssertionError("a job needing the missing font was printed")
        assert printer_sim.jobs == [] and printer_sim.rasters == []
        assert printer.status.last_error is not None and "fonts-wqy-microhei" in printer.status.last_error
    finally:
        await printer.close()


async def test_raster_data_that_looks_like_commands_is_taken_as_dots(printer_sim: PrinterSimulator) -> None:
    # Image bytes equal to DLE EOT 1, ESC @ and GS V 0: inside GS v 0 they are dots, nothing else.
    tricky = RasterImage(3, 3, b"\x10\x04\x01\x1b\x40\x1d\x56\x00\x0a")
    fd = os.open(printer_sim.port.path, os.O_RDWR | os.O_NOCTTY)  # type: ignore[attr-defined]
    try:
        wire = b"\x1b\x40" + tricky.command() + b"\n\x1d\x56\x00"
        for i in range(0, len(wire), 5):  # split mid-header and mid-data
            os.write(fd, wire[i : i + 5])
            await asyncio.sleep(0.01)
        async with asyncio.timeout(5):
            while not printer_sim.jobs:
                await asyncio.sleep(0.01)
    finally:
        os.close(fd)
    assert printer_sim.rasters == [tricky]
    assert printer_sim.realtime_queries == 0
    assert printer_sim.jobs == [wire]
    assert printer_sim.cuts == [b"\x1d\x56\x00"]


async def test_oversized_raster_header_is_skipped_not_buffered(printer_sim: PrinterSimulator) -> None:
    fd = os.open(printer_sim.port.path, os.O_RDWR | os.O_NOCTTY)  # type: ignore[attr-defined]
    try:
        # 0xFFFF bytes x 0xFFFF rows: never buffered; the following commands still work.
        os.write(fd, bytes.fromhex("1D 76 30 00 FF FF FF FF") + b"\x10\x04\x01")
        async with asyncio.timeout(5):
            while printer_sim.realtime_queries == 0:
                await asyncio.sleep(0.01)
    finally:
        os.close(fd)
    assert printer_sim.rasters == []


async def test_full_cut_is_the_default(printer: EscPosPrinter, printer_sim: PrinterSimulator) -> None:
    await printer.print_job(PrintJob.of(["a"]), timeout=5)
    assert printer_sim.cuts == [b"\x1d\x56\x00"]
