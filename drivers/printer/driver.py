"""The receipt printer (ESC/POS over serial or TCP 9100): jobs, status, supervision."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from drivers.base import (
    DeviceState,
    DriverError,
)
from drivers.printer.errors import (
    CoverOpen,
    PaperEnd,
    PaperEndDuringJob,
    PrinterFault,
    PrinterNeedsUser,
    PrinterOffline,
    PrinterTimeout,
    RasterFontMissing,
)
from drivers.printer.frames import (
    ASB_MASK,
    PrinterStatus,
    process_id_request,
    realtime_status,
    status_back,
)
from drivers.printer.job import PrinterProfile, PrintJob, encode
from drivers.printer.protocol import EscPosProtocol
from drivers.serialio.device import SerialDevice
from drivers.serialio.exchange import ask, turn

log = structlog.get_logger(__name__)

_STATUS_QUERY = b"".join(realtime_status(n) for n in (1, 2, 3, 4))  # four, then read: the limit
# Job bytes written at a time under XON/XOFF flow control.
_FLOW_CHUNK = 64
# How long after a query gave up its missing answers are still expected (and discarded).
_LATE_GRACE_S = 0.5


@dataclass(frozen=True, slots=True)
class PrintResult:
    """How a job went: when it was confirmed printed, how long it queued, what the printer said."""

    job_id: str
    bytes_sent: int
    queue_wait_s: float
    duration_s: float
    confirmed: bool
    status: PrinterStatus

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.status.warnings


class EscPosPrinter(SerialDevice[EscPosProtocol]):
    """An ESC/POS receipt printer on a serial port or `socket://host:9100`.

    Each job: DLE EOT 1-4 first (refuse when not ready), the job bytes, then (with
    `confirm_print`) a GS ( H process-id request that the printer answers once the job
    has printed, watching status meanwhile; DLE EOT 1-4 again after.
    """

    driver = "escpos"

    def __init__(
        self,
        name: str,
        port: str,
        *,
        baudrate: int = 9600,
        status_back: bool = False,
        status_timeout: float = 0.5,
        confirm_print: bool = True,
        xonxoff: bool = False,
        profile: PrinterProfile | None = None,
        job_timeout: float = 60.0,
        job_poll: float = 0.25,
        poll_interval: float = 5.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 2.0,
    ) -> None:
        super().__init__(
            name,
            port,
            baudrate=baudrate,
            protocol_factory=lambda: EscPosProtocol(name, self._on_push),
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
        self._status_back = status_back
        self._status_timeout = status_timeout
        self._confirm = confirm_print
        self._xonxoff = xonxoff
        self.profile = profile or PrinterProfile()
        if self.profile.unprintable == "raster" and not Path(self.profile.raster_fonts[0]).is_file():
            # Jobs with characters the printer font lacks will be refused: say so at start-up.
            log.warning(
                "raster_font_missing",
                device=name,
                path=self.profile.raster_fonts[0],
                hint="apt-get install -y fonts-wqy-microhei",
            )
        self._job_timeout = job_timeout
        self._job_poll = job_poll
        self._poll_interval = poll_interval
        self._pids = itertools.count(1)
        self._printing = False
        self._wire_free_at = 0.0
        self.last_status: PrinterStatus | None = None

    # --- SerialDevice hooks ----------------------------------------------------------------

    async def _background_loop(self) -> None:
        await self._monitor_loop()

    async def _health_check(self, timeout: float | None) -> None:
        await self.read_status(timeout=timeout)

    # --- API -------------------------------------------------------------------------------

    async def read_status(self, *, timeout: float | None = None) -> PrinterStatus:
        """DLE EOT 1-4 through the command gate; the device state follows the answer."""
        limit = self._status_timeout if timeout is None else timeout
        async with turn(self._gate, within=limit + self._job_timeout, busy=self._busy):
            return await self._query(limit)

    async def print_job(self, job: PrintJob, *, timeout: float | None = None) -> PrintResult:
        """Print one job; returns once the printer confirms it printed (or raises why not)."""
        data = self._encode(job)
        self._link.require()
        limit = self._job_timeout if timeout is None else timeout
        queued_at = time.monotonic()
        try:
            async with asyncio.timeout(limit):
                waited = await self._gate.acquire()
                try:
                    return await self._run_job(data, waited, queued_at)
                finally:
                    self._gate.release()
        except TimeoutError as err:
            if isinstance(err, DriverError):
                raise
            raise PrinterTimeout(
                f"{self.name}: job not confirmed within {limit:g} s", device=self.name
            ) from None

    # --- internals -------------------------------------------------------------------------

    def _encode(self, job: PrintJob) -> bytes:
        """The job's bytes for this printer's profile; lines its font lacks go as raster images."""
        try:
            encoded = encode(job, self.profile)
        except RasterFontMissing as err:
            err.device = self.name
            self._tracker.record_error(str(err))
            raise
        if encoded.raster_lines or encoded.replaced_chars:
            # Counts only: the characters themselves may be part of a name.
            log.info(
                "job_unprintable_text",
                device=self.name,
                raster_lines=encoded.raster_lines,
                replaced_chars=encoded.replaced_chars,
                charset=self.profile.charset,
            )
        return encoded.data

    async def _run_job(self, data: bytes, waited: float, queued_at: float) -> PrintResult:
        before = await self._query(self._status_timeout)
        self._refuse_unless_ready(before, during_job=False)
        proto = self._link.require()
        pid = b"%04d" % (next(self._pids) % 10000)
        started = time.monotonic()
        self._printing = True
        self._tracker.set(DeviceState.BUSY, "printing", warnings=before.warnings)
        fut = proto.process_ids.expect(pid) if self._confirm else None
        try:
            wire = data + (process_id_request(pid) if self._confirm else b"")
            if self._xonxoff:
                await self._send_paced(proto, wire)
            else:
                self._send(proto, wire)
            if fut is not None:
                await self._await_printed(fut)
            after = await self._query(self._status_timeout)
        finally:
            proto.process_ids.forget(pid)
            self._printing = False
            if self.status.state is DeviceState.BUSY and self.last_status is not None:
                self._apply(self.last_status)
        self._refuse_unless_ready(after, during_job=True)
        self._tracker.record_success()
        duration = time.monotonic() - started
        log.info(
            "job_printed",
            device=self.name,
            job=pid.decode(),
            nbytes=len(wire),
            ms=round(duration * 1000),
            wait_ms=round(waited * 1000),
        )
        return PrintResult(
            job_id=pid.decode(),
            bytes_sent=len(wire),
            queue_wait_s=started - queued_at,
            duration_s=duration,
            confirmed=fut is not None,
            status=after,
        )

    async def _await_printed(self, fut: asyncio.Future[None]) -> None:
        """Wait for the process-id answer, checking status meanwhile so a stop is seen at once."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._job_poll + self._wire_backlog()):
                    await asyncio.shield(fut)
            if fut.done():
                fut.result()
                return
            if not self._status_back:
                status = await self._query(self._status_timeout)
                self._refuse_unless_ready(status, during_job=True)

    def _send(self, proto: EscPosProtocol, data: bytes) -> None:
        proto.write(data)
        now = time.monotonic()
        # What is still on the line delays any answer; status timeouts allow for it.
        self._wire_free_at = max(now, self._wire_free_at) + len(data) * 10 / self.baudrate

    async def _send_paced(self, proto: EscPosProtocol, data: bytes) -> None:
        """Job data under software flow control: a chunk at a time, only while the printer has not
        sent XOFF, and no further ahead of the wire than one chunk, so what sits in the port's
        buffers when an XOFF comes is at most a chunk (printers send XOFF with room to spare)."""
        chunk_time = _FLOW_CHUNK * 10 / self.baudrate
        for start in range(0, len(data), _FLOW_CHUNK):
            await proto.xon.wait()
            ahead = self._wire_backlog() - chunk_time
            if ahead > 0:
                await asyncio.sleep(ahead)
                await proto.xon.wait()
            self._send(proto, data[start : start + _FLOW_CHUNK])

    def _wire_backlog(self) -> float:
        if self.port.startswith("socket://"):
            return 0.0
        return max(0.0, self._wire_free_at - time.monotonic())

    async def _query(self, limit: float) -> PrinterStatus:
        """DLE EOT 1-4 with the gate held: four one-byte answers within `limit` plus the backlog."""
        proto = self._link.require()
        # Settled before the window is measured: what is still on the wire delays the answers.
        await proto.answers.settle()
        window = limit + self._wire_backlog()
        values = await ask(
            proto.answers,
            lambda: self._send(proto, _STATUS_QUERY),
            count=4,
            window=window,
            no_reply=lambda: self._no_status(limit),
            # Answers still on their way would be read as the next query's (they name no query).
            owed_until=lambda _sent_at: time.monotonic() + max(window, _LATE_GRACE_S),
        )
        status = PrinterStatus.from_realtime(dict(zip((1, 2, 3, 4), values, strict=True)))
        self._apply(status)
        return status

    def _busy(self) -> PrinterTimeout:
        return PrinterTimeout(f"{self.name}: printer busy", device=self.name)

    def _no_status(self, limit: float) -> PrinterTimeout:
        self._tracker.record_error("no answer to DLE EOT")
        if not self._printing:
            self._tracker.set(DeviceState.OFFLINE, "no answer to real-time status")
        return PrinterTimeout(
            f"{self.name}: no answer to real-time status within {limit:g} s", device=self.name
        )

    def _apply(self, status: PrinterStatus) -> None:
        """Map printer status to device state: paper/cover -> user_error, cutter -> hardware."""
        self.last_status = status
        if fault := status.hardware_fault:
            self._tracker.set(DeviceState.HARDWARE_ERROR, fault)
        elif need := status.user_fault:
            self._tracker.set(DeviceState.USER_ERROR, need)
        elif status.auto_recoverable:
            self._tracker.set(DeviceState.OFFLINE, "recoverable error (e.g. head overheat)")
        elif status.offline or status.error:
            self._tracker.set(DeviceState.OFFLINE, "printer offline")
        elif self._printing:
            self._tracker.set(DeviceState.BUSY, "printing", warnings=status.warnings)
        else:
            self._tracker.set(DeviceState.ONLINE, "ready", warnings=status.warnings)

    def _refuse_unless_ready(self, status: PrinterStatus, *, during_job: bool) -> None:
        if status.ready:
            return
        raise self._error_for(status, during_job=during_job)

    def _error_for(self, status: PrinterStatus, *, during_job: bool) -> DriverError:
        name = self.name
        if fault := status.hardware_fault:
            return PrinterFault(f"{name}: {fault}", device=name, code=fault)
        if status.out_of_paper:
            if during_job:
                return PaperEndDuringJob(
                    f"{name}: paper ran out during the job; the receipt is incomplete",
                    device=name,
                    reason="paper end",
                )
            return PaperEnd(f"{name}: out of paper", device=name, reason="paper end")
        if status.cover_open:
            return CoverOpen(f"{name}: cover open", device=name, reason="cover open")
        if status.auto_recoverable:
            return PrinterOffline(f"{name}: recoverable error (e.g. head overheat)", device=name)
        return PrinterOffline(f"{name}: printer offline", device=name)

    def _on_push(self, status: PrinterStatus) -> None:
        self._apply(status)
        proto = self._link.protocol
        if self._printing and proto is not None and not status.ready:
            error = self._error_for(status, during_job=True)
            if isinstance(error, PrinterNeedsUser | PrinterFault | PrinterOffline):
                proto.process_ids.fail_all(error)

    async def _on_up(self, proto: EscPosProtocol) -> None:
        self._tracker.set(DeviceState.OFFLINE, "port open, checking printer")
        self._wire_free_at = 0.0
        if self._status_back:
            self._send(proto, status_back(ASB_MASK))
        await self.read_status()

    async def _monitor_loop(self) -> None:
        """Refresh status when idle, so paper-out or an open cover shows without a job."""
        while True:
            await asyncio.sleep(self._poll_interval)
            if not self._link.connected or self._gate.busy:
                continue
            with contextlib.suppress(DriverError):
                await self.read_status()
