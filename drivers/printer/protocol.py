"""asyncio protocol for an ESC/POS printer: sorts answers, pushes and process-id replies."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from drivers.base import DriverError
from drivers.printer.frames import (
    FlowControl,
    PrinterStatus,
    ProcessIdAnswer,
    RealtimeAnswer,
    StatusPush,
    StatusSorter,
    Unknown,
)
from drivers.serialio import KeyedReplies, LinkProtocol
from drivers.serialio.exchange import UnnamedReplies

log = structlog.get_logger(__name__)


class EscPosProtocol(LinkProtocol):
    """Real-time answers go to the oldest waiting query; pushes to `on_push`; process ids by id."""

    def __init__(self, device: str, on_push: Callable[[PrinterStatus], None]) -> None:
        super().__init__(device)
        self._on_push = on_push
        self.sorter = StatusSorter()
        # Real-time answers name no query: those owed to a timed-out query are discarded.
        self.answers: UnnamedReplies[int] = UnnamedReplies()
        self.process_ids: KeyedReplies[bytes, None] = KeyedReplies()
        self.xoff = False
        # Set while the printer allows sending (no XOFF outstanding); job data waits on it.
        self.xon = asyncio.Event()
        self.xon.set()

    def bytes_received(self, data: bytes) -> None:
        for item in self.sorter.feed(data):
            match item:
                case RealtimeAnswer(value):
                    if self.answers.take_late():
                        log.info("escpos_late_answer_discarded", device=self.device, value=value)
                    elif not self.answers.resolve(value):
                        log.debug("escpos_late_answer", device=self.device, value=value)
                case StatusPush():
                    self._on_push(item.status)
                case ProcessIdAnswer(pid):
                    if not self.process_ids.resolve(pid, None):
                        log.debug("escpos_stale_process_id", device=self.device)
                case FlowControl(xoff):
                    self.xoff = xoff
                    if xoff:
                        self.xon.clear()
                    else:
                        self.xon.set()
                case Unknown(raw):
                    log.debug("escpos_unknown_bytes", device=self.device, nbytes=len(raw))

    def fail_pending(self, exc: DriverError) -> None:
        self.xon.set()  # nobody may keep waiting for a printer that is gone
        self.answers.fail_all(exc)
        self.process_ids.fail_all(exc)
