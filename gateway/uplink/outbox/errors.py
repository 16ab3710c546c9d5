"""The errors the outbox raises to its callers (the API maps OutboxFull to HTTP 507)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from gateway.errors import GatewayError
from gateway.uplink.outbox.config import STREAMS


class OutboxError(GatewayError):
    """Root of the outbox errors."""


class UnknownStream(OutboxError, ValueError):
    """The stream is not one of tx, audit, alert, telemetry, event."""

    def __init__(self, stream: str) -> None:
        super().__init__(f"unknown stream {stream!r}; expected one of {', '.join(STREAMS)}")
        self.stream = stream


class InvalidMessage(OutboxError, ValueError):
    """The body could not be sealed (not JSON-serialisable, too large, ...)."""

    def __init__(self, stream: str, detail: str) -> None:
        super().__init__(f"cannot seal a {stream} message: {detail}")
        self.stream = stream
        self.detail = detail


class OutboxFull(OutboxError):
    """The message was refused: its class quota, the outbox quota or the disk is full (HTTP 507)."""

    def __init__(self, stream: str, *, reason: Literal["quota", "disk"], used: int, limit: int) -> None:
        what = "the disk is full" if reason == "disk" else f"quota reached ({used}/{limit} bytes)"
        super().__init__(f"outbox refused a {stream} message: {what}")
        self.stream = stream
        self.reason = reason
        self.used = used
        self.limit = limit


class StorageError(OutboxError):
    """SQLite failed (I/O error, corruption being recovered); the message was not stored."""

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class StorageTimeout(StorageError, TimeoutError):
    """The commit did not finish in time; the message may still be committed later."""


class OutboxClosed(OutboxError):
    """The outbox is closed (or not started)."""
