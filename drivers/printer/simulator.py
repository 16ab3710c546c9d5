"""An ESC/POS receipt printer simulator over a pseudo-terminal or TCP (127.0.0.1).

It answers DLE EOT at once (even mid-job), pushes status when GS a is on, prints jobs one
after another taking `print_time` each, and answers GS ( H process ids once everything
before them has printed. `jobs` keeps every job's bytes as received, for byte-exact tests.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Coroutine
from typing import Any, Literal

import structlog

from drivers.printer.frames import (
    DLE,
    EOT,
    ESC,
    GS,
    RASTER_IMAGE,
    XOFF,
    XON,
    PrinterStatus,
    RasterImage,
    decode_raster,
    process_id_response,
    raster_size,
)
from drivers.serialio.simport import PtyEndpoint, SimEndpoint, TcpEndpoint

log = structlog.get_logger(__name__)

_MAX_INPUT = 64 * 1024


class Paper(enum.Enum):
    OK = "ok"
    NEAR_END = "near_end"
    END = "end"


class PrinterSimulator:
    """A receipt printer with paper/cover/cutter conditions and a print queue."""

    def __init__(
        self,
        *,
        name: str = "printer",
        transport: Literal["pty", "tcp"] = "pty",
        baudrate: int = 9600,
        pace: bool | None = None,
        print_time: float = 0.0,
        tcp_port: int = 0,
    ) -> None:
        paced = (transport == "pty") if pace is None else pace
        self.port: SimEndpoint
        if transport == "tcp":
            self.port = TcpEndpoint(self._on_bytes, baudrate=baudrate, pace=paced, port=tcp_port)
        else:
            self.port = PtyEndpoint(self._on_bytes, name=name, baudrate=baudrate, pace=paced)
        self.print_time = print_time
        self.paper = Paper.OK
        self.cover_open = False
        self.cutter_error = False
        self.unrecoverable = False
        self.overheat = False
        self.asb_mask = 0
        self.answer_realtime = True
        # Seconds before each DLE EOT answer goes out (a printer slow to answer, not silent);
        # the answer reflects the state when the query arrived.
        self.realtime_delay = 0.0
        self.bytes_received = 0
        self.jobs: list[bytes] = []
        self.printed: list[bytes] = []
        self.realtime_queries = 0
        # Every GS v 0 image received, decoded, and the cuts (GS V m) in order.
        self.rasters: list[RasterImage] = []
        self.cuts: list[bytes] = []
        self._inbuf = bytearray()
        self._job = bytearray()
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._run_out_next = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._worker: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> str:
        """Returns the driver-side port: a stable pty path, or `socket://127.0.0.1:PORT`."""
        where = await self.port.start()
        self._worker = asyncio.create_task(self._print_loop(), name="printer-sim")
        return where

    async def stop(self) -> None:
        tasks = [t for t in (self._worker, *self._tasks) if t is not None]
        self._worker = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.port.stop()

    async def unplug(self) -> None:
        self._inbuf.clear()
        await self.port.unplug()

    async def replug(self) -> None:
        await self.port.replug()

    # --- conditions ------------------------------------------------------------------------

    @property
    def status(self) -> PrinterStatus:
        paper_end = self.paper is Paper.END
        error = self.cutter_error or self.unrecoverable or self.overheat
        return PrinterStatus(
            offline=self.cover_open or paper_end or error,
            cover_open=self.cover_open,
            paper_end_stop=paper_end,
            error=error,
            cutter_error=self.cutter_error,
            unrecoverable=self.unrecoverable,
            auto_recoverable=self.overheat,
            paper_near_end=self.paper is not Paper.OK,
            paper_end=paper_end,
        )

    @property
    def printable(self) -> bool:
        return self.status.ready

    def set_paper(self, paper: Paper | str) -> None:
        self.paper = Paper(paper)
        self._condition_changed()

    def set_cover(self, *, open_: bool) -> None:
        self.cover_open = open_
        self._condition_changed()

    def set_fault(self, *, cutter: bool = False, unrecoverable: bool = False, overheat: bool = False) -> None:
        self.cutter_error, self.unrecoverable, self.overheat = cutter, unrecoverable, overheat
        self._condition_changed()

    async def flow_stop(self) -> None:
        """Send XOFF, as a printer whose receive buffer is nearly full does."""
        await self.port.send(bytes([XOFF]))

    async def flow_resume(self) -> None:
        """Send XON: the printer takes data again."""
        await self.port.send(bytes([XON]))

    def paper_runs_out_during_next_job(self) -> None:
        """Halfway through the next job the paper ends; printing stops until paper is back."""
        self._run_out_next = True

    def _condition_changed(self) -> None:
        self._changed.set()
        if self.asb_mask:
            self._spawn(self.port.send(self.status.asb()))

    # --- receiving -------------------------------------------------------------------------

    def _on_bytes(self, data: bytes) -> None:
        self.bytes_received += len(data)
        self._inbuf += data
        if len(self._inbuf) > _MAX_INPUT:
            log.warning("printer_sim_input_overflow", nbytes=len(self._inbuf))
            self._inbuf.clear()
            return
        consumed = self._parse(self._inbuf)
        del self._inbuf[:consumed]

    def _parse(self, buf: bytearray) -> int:
        """Consume whole commands; returns how many bytes were used (the rest waits for more)."""
        i = 0
        n = len(buf)
        while i < n:
            b = buf[i]
            if b == DLE:
                if n - i < 3:
                    break
                if buf[i + 1] == EOT:
                    self._realtime(buf[i + 2])
                    i += 3
                    continue
            elif b == GS:
                used = self._gs(buf, i)
                if used == 0:
                    break
                if used is not None:
                    i += used
                    continue
            elif b == ESC:
                if n - i < 2:
                    break
                if buf[i + 1] == 0x40:
                    self._end_job()
            self._job.append(b)
            i += 1
        return i

    def _gs(self, buf: bytearray, i: int) -> int | None:
        """A GS command at `i`: the bytes it took, 0 to wait for more, None for an ordinary byte."""
        left = len(buf) - i
        if left < 3:
            return 0
        op = buf[i + 1]
        if op == 0x61:  # GS a n
            self._enable_asb(buf[i + 2])
            return 3
        if op == 0x28:  # GS ( x pL pH payload
            if left < 5:
                return 0
            size = 5 + buf[i + 3] + 256 * buf[i + 4]
            if left < size:
                return 0
            command = bytes(buf[i : i + size])
            if command[2] == 0x48 and command[5:7] == b"00" and size == 11:
                self._end_job()
                self._queue.put_nowait(("pid", command[7:11]))
            else:
                self._job += command
            return size
        if op == 0x76 and buf[i + 2] == RASTER_IMAGE[2]:  # GS v 0 m xL xH yL yH data
            return self._raster(buf, i)
        if op == 0x56:  # GS V m [n]: cut ends a job
            size = 4 if buf[i + 2] in (0x41, 0x42) else 3
            if left < size:
                return 0
            self.cuts.append(bytes(buf[i : i + size]))
            self._job += buf[i : i + size]
            self._end_job()
            return size
        return None

    def _raster(self, buf: bytearray, i: int) -> int:
        left = len(buf) - i
        if left < 8:
            return 0
        size = raster_size(bytes(buf[i : i + 8]))
        if size > _MAX_INPUT:
            log.warning("printer_sim_raster_too_large", nbytes=size)
            return 8
        if left < size:
            return 0
        # The image data is dots, not commands: take it whole, never parse inside.
        command = bytes(buf[i : i + size])
        self.rasters.append(decode_raster(command))
        self._job += command
        return size

    def _end_job(self) -> None:
        if self._job:
            job, self._job = bytes(self._job), bytearray()
            self.jobs.append(job)
            self._queue.put_nowait(("job", job))

    def _realtime(self, n: int) -> None:
        self.realtime_queries += 1
        if self.answer_realtime and n in (1, 2, 3, 4):
            answer = bytes([self.status.realtime_answer(n)])
            self._spawn(self._send_later(answer, self.realtime_delay))

    async def _send_later(self, data: bytes, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        await self.port.send(data)

    def _enable_asb(self, mask: int) -> None:
        self.asb_mask = mask
        if mask:
            self._spawn(self.port.send(self.status.asb()))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- printing --------------------------------------------------------------------------

    async def _print_loop(self) -> None:
        while True:
            kind, payload = await self._queue.get()
            if kind == "pid":
                await self.port.send(process_id_response(payload))
                continue
            await self._wait_printable()
            duration = self.print_time
            if self.port.pace:
                duration += self.port.wire_time(len(payload))
            if self._run_out_next:
                self._run_out_next = False
                await asyncio.sleep(duration / 2)
                self.set_paper(Paper.END)
                await self._wait_printable()
                await asyncio.sleep(duration / 2)
            else:
                await asyncio.sleep(duration)
            self.printed.append(payload)

    async def _wait_printable(self) -> None:
        while not self.printable:
            self._changed.clear()
            await self._changed.wait()
