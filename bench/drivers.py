"""Serial driver benchmark: ID card read latency over a paced pty, receipt print throughput.

Run: .venv/bin/python bench/drivers.py [--reads 40] [--jobs 20] [--print-time 0.5]
Prints figures and ratios against the wire time and a raw pty baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drivers.idcard import IdCardSimulator, NoCard, SamvReader
from drivers.idcard.frames import (
    CardData,
    Command,
    Reply,
    Request,
    encode_card_data,
    encode_reply,
    encode_request,
)
from drivers.printer import EscPosPrinter, PrinterSimulator, PrintJob
from drivers.serialio.simport import PtyEndpoint

BAUD = 115200


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def fmt(ms: list[float]) -> str:
    return f"median {statistics.median(ms):7.1f} ms   p99 {pct(ms, 0.99):7.1f} ms"


async def raw_baseline(reads: int) -> list[float]:
    """The same pty and pacing with no driver: write a request, read the 1295-byte reply raw."""
    reply = encode_reply(Reply(0, 0, 0x90, encode_card_data(CardData(bytes(256), bytes(1024)))))
    request = encode_request(Request.of(Command.READ_TEXT_PHOTO))
    loop = asyncio.get_running_loop()
    got = bytearray()
    done: asyncio.Future[None] | None = None
    endpoint: PtyEndpoint

    sends: set[asyncio.Task[None]] = set()

    def on_request(data: bytes) -> None:
        task = loop.create_task(endpoint.send(reply))
        sends.add(task)
        task.add_done_callback(sends.discard)

    endpoint = PtyEndpoint(on_request, name="raw", baudrate=BAUD, pace=True)
    path = await endpoint.start()
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)

    def readable() -> None:
        got.extend(os.read(fd, 4096))
        if len(got) >= len(reply) and done is not None and not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    samples = []
    try:
        for _ in range(reads):
            got.clear()
            done = loop.create_future()
            started = time.perf_counter()
            os.write(fd, request)
            await asyncio.wait_for(done, 5)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        loop.remove_reader(fd)
        os.close(fd)
        await endpoint.stop()
    return samples


async def card_leaves(reader: SamvReader, sim: IdCardSimulator) -> None:
    """Take the card away and let the reader see the empty field, as between two citizens."""
    sim.remove_card()
    try:
        await reader.find_card()
    except NoCard:
        return
    raise RuntimeError("the reader still sees a card after removal")


async def idcard_latency(reads: int) -> tuple[list[float], list[float]]:
    sim = IdCardSimulator(pace=True, baudrate=BAUD)
    path = await sim.start()
    reader = SamvReader("idcard", path, baudrate=BAUD, poll_interval=0.05)
    read_ms: list[float] = []
    card_ms: list[float] = []
    try:
        await reader.start()
        await reader.wait_online(timeout=5)
        for _ in range(reads):
            sim.insert_card()
            await reader.find_card()
            await reader.select_card()
            started = time.perf_counter()
            await reader.read_text_photo()
            read_ms.append((time.perf_counter() - started) * 1000)
            await card_leaves(reader, sim)
        for _ in range(reads):
            sim.insert_card()
            started = time.perf_counter()
            await reader.read_card(timeout=5)
            card_ms.append((time.perf_counter() - started) * 1000)
            await card_leaves(reader, sim)
    finally:
        await reader.close()
        await sim.stop()
    return read_ms, card_ms


async def print_throughput(jobs: int, print_time: float) -> None:
    sim = PrinterSimulator(pace=True, print_time=print_time)
    path = await sim.start()
    printer = EscPosPrinter("printer", path)
    job = PrintJob.of(
        ["政务服务中心 回执", "业务: 社保查询", "编号 0042"], qr="https://example.invalid/r/0042"
    )
    try:
        await printer.start()
        await printer.wait_online(timeout=5)
        started = time.perf_counter()
        results = await asyncio.gather(
            *(printer.print_job(job, timeout=jobs * (print_time + 2) + 10) for _ in range(jobs))
        )
        elapsed = time.perf_counter() - started
    finally:
        await printer.close()
        await sim.stop()
    nbytes = results[0].bytes_sent
    wire = nbytes * 10 / printer.baudrate
    ideal = 60 / (print_time + wire)
    rate = jobs * 60 / elapsed
    waits = [r.queue_wait_s * 1000 for r in results]
    per_job = [r.duration_s * 1000 for r in results]
    print(
        f"\nreceipt printer (9600 baud, {nbytes} bytes/job = {wire * 1000:.0f} ms on the wire, "
        f"print time {print_time:g} s, {jobs} jobs submitted at once)"
    )
    print(f"  throughput      {rate:7.1f} jobs/min   ideal {ideal:.1f} jobs/min   ratio {rate / ideal:.2f}")
    print(f"  job time        {fmt(per_job)}")
    print(f"  queue wait      median {statistics.median(waits):7.0f} ms   max {max(waits):7.0f} ms")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reads", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--print-time", type=float, default=0.5)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    wire_ms = (10 + 1295) * 10 / BAUD * 1000
    card_wire_ms = (10 + 15 + 10 + 19 + 10 + 1295) * 10 / BAUD * 1000
    baseline = await raw_baseline(args.reads)
    read_ms, card_ms = await idcard_latency(args.reads)
    base = statistics.median(baseline)
    read = statistics.median(read_ms)
    card = statistics.median(card_ms)
    print(f"ID card reader (SAM_V, {BAUD} baud, simulator paced at the baud rate, {args.reads} reads)")
    print(f"  wire time, 30 01 request + reply   {wire_ms:7.1f} ms (10 + 1295 bytes)")
    print(f"  raw pty baseline   {fmt(baseline)}   {base / wire_ms:.3f}x wire")
    print(
        f"  read_text_photo()  {fmt(read_ms)}   {read / wire_ms:.3f}x wire "
        f"(p99 {pct(read_ms, 0.99) / wire_ms:.3f}x), {read / base:.3f}x raw baseline"
    )
    print(f"  wire time, find + select + read    {card_wire_ms:7.1f} ms")
    print(
        f"  read_card()        {fmt(card_ms)}   {card / card_wire_ms:.3f}x wire "
        f"(p99 {pct(card_ms, 0.99) / card_wire_ms:.3f}x)"
    )
    print(f"  target read < 1.2x wire: {'met' if read / wire_ms < 1.2 else 'NOT met'}")
    await print_throughput(args.jobs, args.print_time)


if __name__ == "__main__":
    asyncio.run(main())
    # The PC/SC card reader and the camera (issue 7) are measured by bench/cards_camera.py.
    import cards_camera

    asyncio.run(cards_camera.bench_card(200))
    asyncio.run(cards_camera.bench_camera(400))
    asyncio.run(cards_camera.bench_v4l2(10))
