"""EscPosPrinter against the simulator over a pseudo-terminal and over TCP."""

from __future__ import annotations

import asyncio

import pytest

from drivers.base import Device, DeviceState, DeviceUnavailable
from drivers.printer import (
    CoverOpen,
    EscPosPrinter,
    Line,
    Paper,
    PaperEnd,
    PaperEndDuringJob,
    PrinterFault,
    PrinterOffline,
    PrinterSimulator,
    PrinterTimeout,
    PrintJob,
)
from drivers.printer.job import encode_job
from drivers.serialio.simport import PtyEndpoint

RECEIPT = PrintJob(
    (Line("政务服务中心", bold=True, double=True), Line("业务: 社保查询"), Line("No. 0042")),
    qr="https://example.invalid/r/0042",
)
RECEIPT_BYTES = (
    b"\x1b\x40\x1b\x45\x01\x1d\x21\x11\x1c\x26"
    + "政务服务中心".encode("gb18030")
    + b"\n\x1b\x45\x00\x1d\x21\x00"
    + "业务: 社保查询".encode("gb18030")
    + b"\n\x1c\x2eNo. 0042\n"
    + b"\x1b\x61\x01"
    + bytes.fromhex("1D 28 6B 04 00 31 41 32 00 1D 28 6B 03 00 31 43 06 1D 28 6B 03 00 31 45 31")
    + b"\x1d\x28\x6b\x21\x00\x31\x50\x30https://example.invalid/r/0042"
    + bytes.fromhex("1D 28 6B 03 00 31 51 30")
    + b"\n\x1b\x61\x00\x1b\x64\x06\x1d\x56\x00"
)


async def test_printer_is_a_device(printer: EscPosPrinter) -> None:
    assert isinstance(printer, Device)
    assert printer.driver == "escpos"
    assert printer.status.state is DeviceState.ONLINE
    assert (await printer.probe()).state is DeviceState.ONLINE


async def test_chinese_receipt_with_qr_arrives_byte_exact(
    printer: EscPosPrinter, printer_sim: PrinterSimulator
) -> None:
    result = await printer.print_job(RECEIPT, timeout=5)
    assert printer_sim.jobs == [RECEIPT_BYTES]
    assert printer_sim.printed == [RECEIPT_BYTES]
    assert result.confirmed
    assert result.bytes_sent == len(RECEIPT_BYTES) + 11  # + the GS ( H process-id request
    assert printer.status.state is DeviceState.ONLINE


async def test_status_is_asked_before_and_after_each_job(
    printer: EscPosPrinter, printer_sim: PrinterSimulator
) -> None:
    before = printer_sim.realtime_queries
    await printer.print_job(RECEIPT, timeout=5)
    assert printer_sim.realtime_queries - before >= 8


async def test_paper_end_before_a_job_sends_nothing(
    printer: EscPosPrinter, printer_sim: PrinterSimulator
) -> None:
    printer_sim.set_paper(Paper.END)
    with pytest.raises(PaperEnd) as info:
        await printer.print_job(RECEIPT, timeout=5)
    assert not isinstance(info.value, PaperEndDuringJob)
    assert printer_sim.jobs == []
    assert printer.status.state is DeviceState.USER_ERROR
    assert printer.status.reason == "paper end"


async def test_paper_end_mid_job_is_reported_as_such(
    printer: EscPosPrinter, printer_sim: PrinterSimulator
) -> None:
    printer_sim.print_time = 0.4
    printer_sim.paper_runs_out_during_next_job()
    with pytest.raises(PaperEndDuringJob, match="paper ran out during the job"):
        await printer.print_job(RECEIPT, timeout=5)
    assert printer.status.state is DeviceState.USER_ERROR
    assert printer.status.reason == "paper end"
    printer_sim.set_paper(Paper.OK)
    assert (await printer.probe()).state is DeviceState.ONLINE


async def test_paper_near_end_is_a_warning(printer: EscPosPrinter, printer_sim: PrinterSimulator) -> None:
    printer_sim.set_paper(Paper.NEAR_END)
    result = await printer.print_job(RECEIPT, timeout=5)
    assert result.warnings == ("paper_near_end",)
    assert printer.status.state is DeviceState.ONLINE
    assert printer.status.warnings == ("paper_near_end",)


async def test_cover_open_is_a_user_error(printer: EscPosPrinter, printer_sim: PrinterSimulator) -> None:
    printer_sim.set_cover(open_=True)
    with pytest.raises(CoverOpen):
        await printer.print_job(RECEIPT, timeout=5)
    assert (printer.status.state, printer.status.reason) == (DeviceState.USER_ERROR, "cover open")


async def test_cutter_error_is_a_hardware_error(
    printer: EscPosPrinter, printer_sim: PrinterSimulator
) -> None:
    printer_sim.set_fault(cutter=True)
    with pytest.raises(PrinterFault):
        await printer.print_job(RECEIPT, timeout=5)
    assert printer.status.state is DeviceState.HARDWARE_ERROR
    printer_sim.set_fault(overheat=True)
    with pytest.raises(PrinterOffline):
        await printer.print_job(RECEIPT, timeout=5)
    assert (await printer.probe()).state is DeviceState.OFFLINE


async def test_silent_printer_times_out_and_goes_offline(
    printer: EscPosPrinter, printer_sim: PrinterSimulator
) -> None:
    printer_sim.answer_realtime = False
    with pytest.raises(PrinterTimeout):
        await printer.print_job(RECEIPT, timeout=5)
    assert printer.status.state is DeviceState.OFFLINE
    printer_sim.answer_realtime = True
    assert (await printer.probe()).state is DeviceState.ONLINE


async def test_late_status_answers_are_not_read_as_the_next_query(
    printer: EscPosPrinter, printer_sim: PrinterSimulator
) -> None:
    # DLE EOT answers name no query: a slow printer's answers to a query that timed out would
    # otherwise be taken for the next query's and show a state the printer has since left.
    printer_sim.set_cover(open_=True)
    printer_sim.realtime_delay = 0.3
    with pytest.raises(PrinterTimeout):
        await printer.read_status(timeout=0.1)
    printer_sim.set_cover(open_=False)
    status = await printer.read_status(timeout=2)
    assert not status.cover_open
    assert printer.status.state is DeviceState.ONLINE


async def test_jobs_queue_one_at_a_time(printer: EscPosPrinter, printer_sim: PrinterSimulator) -> None:
    printer_sim.print_time = 0.1
    jobs = [PrintJob.of([f"job {i}"]) for i in range(3)]
    results = await asyncio.gather(*(printer.print_job(j, timeout=10) for j in jobs))
    assert len(printer_sim.printed) == 3
    assert sorted(r.queue_wait_s for r in results)[-1] >= 0.1


async def test_pushed_status_mixed_with_answers_fails_the_job_at_once() -> None:
    sim = PrinterSimulator(pace=True, print_time=3.0)
    path = await sim.start()
    printer = EscPosPrinter("printer", path, status_back=True, job_poll=0.05)
    try:
        await printer.start()
        await printer.wait_online(timeout=5)
        assert sim.asb_mask != 0
        sim.set_paper(Paper.NEAR_END)  # a push arrives between answers and is sorted out
        result = await asyncio.wait_for(printer.print_job(PrintJob.of(["x"]), timeout=5), 5)
        assert result.warnings == ("paper_near_end",)
        sim.print_time = 3.0
        job = asyncio.create_task(printer.print_job(RECEIPT, timeout=10))
        async with asyncio.timeout(5):
            while len(sim.jobs) < 2:
                await asyncio.sleep(0.01)
        sim.set_cover(open_=True)
        with pytest.raises(CoverOpen):
            async with asyncio.timeout(1.0):  # well before the 3 s print finishes
                await job
        assert printer.status.state is DeviceState.USER_ERROR
    finally:
        await printer.close()
        await sim.stop()


async def test_tcp_transport() -> None:
    sim = PrinterSimulator(transport="tcp", print_time=0.05)
    url = await sim.start()
    assert url.startswith("socket://127.0.0.1:")
    printer = EscPosPrinter("printer", url, job_poll=0.05)
    try:
        await printer.start()
        await printer.wait_online(timeout=5)
        result = await printer.print_job(RECEIPT, timeout=5)
        assert result.confirmed
        assert sim.jobs == [RECEIPT_BYTES]
    finally:
        await printer.close()
        await sim.stop()


async def test_refused_tcp_port_is_no_device() -> None:
    sim = PrinterSimulator(transport="tcp")
    url = await sim.start()
    await sim.stop()
    printer = EscPosPrinter("printer", url)
    try:
        await printer.start()
        await asyncio.sleep(0.3)
        assert printer.status.state is DeviceState.NO_DEVICE
        with pytest.raises(DeviceUnavailable) as info:
            await printer.print_job(RECEIPT, timeout=1)
        assert info.value.state is DeviceState.NO_DEVICE
    finally:
        await printer.close()


async def test_xonxoff_holds_job_data_while_the_printer_says_xoff(printer_sim: PrinterSimulator) -> None:
    assert isinstance(printer_sim.port, PtyEndpoint)
    path = printer_sim.port.path
    printer = EscPosPrinter("printer", path, baudrate=115200, xonxoff=True, job_poll=0.05)
    await printer.start()
    try:
        await printer.wait_online(timeout=5)
        big = PrintJob.of([f"line {i:03d} " + "x" * 30 for i in range(40)])  # well over one chunk
        await printer_sim.flow_stop()
        before = printer_sim.bytes_received
        job = asyncio.create_task(printer.print_job(big, timeout=10))
        await asyncio.sleep(0.4)
        assert not job.done()
        # Only the real-time status query went out; the job's data waits for XON.
        assert printer_sim.bytes_received - before <= 3 * 4
        assert printer_sim.jobs == []
        await printer_sim.flow_resume()
        result = await job
        assert result.confirmed
        assert printer_sim.jobs and printer_sim.jobs[-1] == encode_job(big)
    finally:
        await printer.close()


async def test_without_flow_control_xoff_is_not_waited_for(
    printer: EscPosPrinter, printer_sim: PrinterSimulator
) -> None:
    await printer_sim.flow_stop()
    result = await printer.print_job(RECEIPT, timeout=5)
    assert result.confirmed and printer_sim.jobs
