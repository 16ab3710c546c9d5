"""Errors of the SAM_V ID card reader, each mapped from a reader status or a failed check."""

from __future__ import annotations

from drivers.base import DeviceRejected, DeviceTimeout, DriverError, FrameError, UserActionNeeded


class NoCard(UserActionNeeded):
    """No card in the field (status 80): the user has to present one."""

    def __init__(self, message: str, *, device: str | None = None, status: int = 0x80) -> None:
        super().__init__(message, device=device)
        self.status = status


class CardNotPresented(NoCard, TimeoutError):
    """read_card's deadline passed without a card being presented."""


class CardLost(UserActionNeeded):
    """The card left the field or moved between find and read (select failed, 81)."""

    def __init__(self, message: str, *, device: str | None = None, status: int = 0x81) -> None:
        super().__init__(message, device=device)
        self.status = status


class UnsupportedCard(UserActionNeeded):
    """A card of a type this driver does not read: the reader said so (status 40), or its text
    block names a type (`card_type`, byte 248) that is not parsed. The API's `unsupported_card_type`."""

    code = "unsupported_card_type"

    def __init__(
        self,
        message: str,
        *,
        device: str | None = None,
        status: int = 0x40,
        card_type: str | None = None,
    ) -> None:
        super().__init__(message, device=device)
        self.status = status
        self.card_type = card_type


class BadRead(DriverError):
    """The card was there but its data did not read back cleanly; present it again."""

    def __init__(self, message: str, *, device: str | None = None, status: int | None = None) -> None:
        super().__init__(message, device=device)
        self.status = status


class CheckDigitError(BadRead):
    """The ID number read fails its ISO 7064 MOD 11-2 check: a bad read, never an identity."""


class SamFault(DeviceRejected):
    """The SAM module itself is faulty or not authorised (60, 66): a hardware error."""


class SamvRejected(DeviceRejected):
    """The reader refused a command (bad frame, not allowed, unknown error, no content)."""


class CorruptReply(FrameError):
    """A reply arrived with a wrong checksum; it was dropped and the stream resynced."""


class SamvTimeout(DeviceTimeout):
    """The reader did not answer a command within its timeout (or stalled mid-frame)."""
