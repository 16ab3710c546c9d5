"""Errors of the ESC/POS receipt printer, one per cause the status bytes can tell apart."""

from __future__ import annotations

from drivers.base import (
    DeviceRejected,
    DeviceState,
    DeviceTimeout,
    DeviceUnavailable,
    DriverError,
    UserActionNeeded,
)


class InvalidJob(DriverError, ValueError):
    """A job that cannot be printed as given (control characters, too long, not encodable)."""


class PrinterNeedsUser(UserActionNeeded):
    """Paper out or cover open: someone has to attend to the printer; `reason` says what."""

    def __init__(self, message: str, *, device: str | None = None, reason: str = "") -> None:
        super().__init__(message, device=device)
        self.reason = reason


class PaperEnd(PrinterNeedsUser):
    """No paper: nothing was sent."""


class PaperEndDuringJob(PaperEnd):
    """Paper ran out while the job printed: the receipt is incomplete."""


class CoverOpen(PrinterNeedsUser):
    """The cover is open."""


class PrinterFault(DeviceRejected):
    """Cutter error or unrecoverable error: the printer needs service (hardware_error)."""


class PrinterOffline(DeviceUnavailable):
    """The printer reports offline (e.g. head overheat, recovering by itself)."""

    def __init__(self, message: str, *, device: str | None = None) -> None:
        super().__init__(message, device=device, state=DeviceState.OFFLINE)


class PrinterTimeout(DeviceTimeout):
    """No answer to real-time status, or the job did not finish within its timeout."""


class RasterFontMissing(DeviceRejected):
    """The CJK font for lines the printer font cannot print is not installed (nothing was sent)."""

    def __init__(self, message: str, *, device: str | None = None) -> None:
        super().__init__(message, device=device, code="raster_font_missing")
