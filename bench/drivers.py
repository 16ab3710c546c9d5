"""Serial driver benchmark: ID card read latency over a paced pty, receipt print throughput.

Run: .venv/bin/python bench/drivers.py [--reads 40] [--jobs 20] [--print-time 0.5]
                                       [--captures 10] [--lines 5]
Prints figures and ratios against the wire time and a raw pty baseline measured in the same run;
also the YUYV capture path against the MJPEG path (ffmpeg), and a raster receipt line against a
text line at 9600 baud.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drivers.camera import V4l2Camera
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
from drivers.printer import Align, EscPosPrinter, Line, PrinterSimulator, PrintJob
from drivers.printer.job import encode
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


async def capture_paths(captures: int) -> None:
    """V4l2Camera.capture from raw yuyv422 frames (encoded to JPEG) against MJPEG frames."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        print("\ncamera paths: ffmpeg not installed (apt-get install -y ffmpeg)")
        return
    size, frames = "640x480", 12
    source = f"testsrc=size={size}:rate=30"
    with tempfile.TemporaryDirectory() as tmp:
        raw, mjpeg = Path(tmp) / "f.yuyv", Path(tmp) / "f.mjpeg"
        lavfi = [ffmpeg, "-v", "error", "-f", "lavfi", "-i", source, "-frames:v", str(frames)]
        subprocess.run([*lavfi, "-f", "rawvideo", "-pix_fmt", "yuyv422", str(raw)], check=True)
        subprocess.run([*lavfi, "-c:v", "mjpeg", "-f", "mjpeg", str(mjpeg)], check=True)
        inputs = {
            "yuyv422 (raw, encoded)": [
                "-f",
                "rawvideo",
                "-pix_fmt",
                "yuyv422",
                "-video_size",
                size,
                "-i",
                str(raw),
            ],
            "mjpeg (decoded, re-encoded)": ["-f", "mjpeg", "-i", str(mjpeg)],
        }
        results: dict[str, dict[int, list[float]]] = {}
        for label, args in inputs.items():
            for skip in (0, 5):
                camera = V4l2Camera("camera", ffmpeg_input=args, skip_frames=skip, timeout=30)
                samples = []
                for _ in range(captures):
                    started = time.perf_counter()
                    await camera.capture()
                    samples.append((time.perf_counter() - started) * 1000)
                await camera.close()
                results.setdefault(label, {})[skip] = samples
    print(f"\nUSB camera capture through ffmpeg ({size}, {captures} captures each, frames from files)")
    base = statistics.median(results["mjpeg (decoded, re-encoded)"][0])
    for label, by_skip in results.items():
        for skip, samples in by_skip.items():
            med = statistics.median(samples)
            print(f"  {label:<28} skip {skip}   {fmt(samples)}   {med / base:.2f}x mjpeg skip 0")
    print("  (a real camera adds its frame interval per skipped frame: 5 x 33 ms at 30 fps)")


async def raster_line_time(lines: int) -> None:
    """Print time of one text line against the same line as a raster image, at 9600 baud."""
    jobs = {
        "text line (GBK)": PrintJob((Line("姓名: 张三"),), feed_lines=0, cut=False),
        "raster line, left (刘䶮)": PrintJob((Line("姓名: 刘䶮"),), feed_lines=0, cut=False),
        "raster line, centred": PrintJob((Line("姓名: 刘䶮", align=Align.CENTER),), feed_lines=0, cut=False),
        "raster line, double": PrintJob((Line("姓名: 刘䶮", double=True),), feed_lines=0, cut=False),
    }
    sim = PrinterSimulator(pace=True, baudrate=9600, print_time=0.0)
    path = await sim.start()
    printer = EscPosPrinter("printer", path, baudrate=9600)
    results: dict[str, tuple[int, list[float]]] = {}
    try:
        await printer.start()
        await printer.wait_online(timeout=5)
        for label, job in jobs.items():
            nbytes = len(encode(job, printer.profile).data)
            samples = []
            for _ in range(lines):
                started = time.perf_counter()
                await printer.print_job(job, timeout=60)
                samples.append((time.perf_counter() - started) * 1000)
            results[label] = (nbytes, samples)
    finally:
        await printer.close()
        await sim.stop()
    print(f"\nreceipt line at 9600 baud (80 mm, 576 dots; simulator paced, no print time; {lines} jobs each)")
    base = statistics.median(results["text line (GBK)"][1])
    for label, (nbytes, samples) in results.items():
        wire = nbytes * 10 / 9600 * 1000
        med = statistics.median(samples)
        print(f"  {label:<26} {nbytes:5d} B  wire {wire:6.0f} ms   {fmt(samples)}   {med / base:5.2f}x text")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reads", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--print-time", type=float, default=0.5)
    parser.add_argument("--captures", type=int, default=10)
    parser.add_argument("--lines", type=int, default=5)
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
    await capture_paths(args.captures)
    await raster_line_time(args.lines)


if __name__ == "__main__":
    asyncio.run(main())
    # The PC/SC card reader and the camera (issue 7) are measured by bench/cards_camera.py.
    import cards_camera

    asyncio.run(cards_camera.bench_card(200))
    asyncio.run(cards_camera.bench_camera(400))
    asyncio.run(cards_camera.bench_v4l2(10))
