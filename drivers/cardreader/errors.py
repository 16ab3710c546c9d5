"""Card reader errors: one root, typed status-word errors, card and reader conditions."""

from __future__ import annotations

from drivers.base import (
    DeviceRejected,
    DeviceTimeout,
    DeviceUnavailable,
    DriverError,
    FrameError,
    UserActionNeeded,
)


class CardReaderError(DriverError):
    """Root of every error the PC/SC card reader driver raises."""


class ApduError(CardReaderError, DeviceRejected):
    """The card answered a command with an error status word; `sw` is that word."""

    meaning = "card rejected the command"

    def __init__(self, sw: int, *, device: str | None = None, command: str = "") -> None:
        where = f" to {command}" if command else ""
        super().__init__(f"{self.meaning}{where} (SW {sw:04X})", device=device, code=f"{sw:04X}")
        self.sw = sw
        self.command = command


class WrongLength(ApduError):
    """6700: Lc or Le wrong for this command."""

    meaning = "wrong length"


class SecurityStatusNotSatisfied(ApduError):
    """6982: the file needs a PIN or secure messaging first."""

    meaning = "security status not satisfied"


class AuthenticationBlocked(ApduError):
    """6983: the key or PIN is blocked."""

    meaning = "authentication method blocked"


class ConditionsNotSatisfied(ApduError):
    """6985: the card's state does not allow this command now."""

    meaning = "conditions of use not satisfied"


class CommandNotAllowed(ApduError):
    """6986: no current EF, or the command is not allowed on it."""

    meaning = "command not allowed"


class FileNotFound(ApduError):
    """6A82: the application or file does not exist on this card."""

    meaning = "file or application not found"


class RecordNotFound(ApduError):
    """6A83: the record (item) does not exist in the selected file."""

    meaning = "record not found"


class WrongParameters(ApduError):
    """6A86 / 6B00: P1-P2 wrong."""

    meaning = "wrong parameters P1-P2"


class InsNotSupported(ApduError):
    """6D00: instruction not supported by the card."""

    meaning = "instruction not supported"


class ClaNotSupported(ApduError):
    """6E00: class byte not supported by the card."""

    meaning = "class not supported"


class CardFailure(ApduError):
    """6F00 / 6581: the card reports an internal failure."""

    meaning = "card failure"


class ProtocolViolation(CardReaderError, FrameError):
    """Bytes from the card that break ISO 7816-4 or the card's data layout."""


class RecordTagMismatch(ProtocolViolation):
    """A READ RECORD answer carries another item than the one asked for (a different layout)."""

    def __init__(self, message: str, *, wanted: int, found: int, device: str | None = None) -> None:
        super().__init__(message, device=device)
        self.wanted = wanted
        self.found = found


class CardDataError(ProtocolViolation):
    """The card's records parse but their content is invalid (e.g. ID number check digit)."""


class WrongCard(CardReaderError, UserActionNeeded):
    """The presented card is not of the kind asked for (e.g. a bank card for a social security read)."""

    def __init__(self, message: str, *, device: str | None = None, expected: str = "") -> None:
        super().__init__(message, device=device)
        self.expected = expected


class NoCardPresented(CardReaderError, UserActionNeeded, TimeoutError):
    """No card was presented before the deadline."""


class CardRemoved(CardReaderError, UserActionNeeded):
    """The card left the reader during the read; the user must present it again."""


class CardUnresponsive(CardReaderError, UserActionNeeded):
    """The card is in the reader but does not power up or answer (mute, inserted wrongly)."""


class CardTimeout(CardReaderError, DeviceTimeout):
    """The card (or pcscd) did not answer a command within the APDU timeout."""


class ReaderUnavailable(CardReaderError, DeviceUnavailable):
    """No usable reader: pyscard or pcscd missing, reader unplugged, driver closed."""


class PcscdUnavailable(ReaderUnavailable):
    """pcscd is not running (or went away); the driver re-establishes its context when it returns."""


class ReaderFailure(CardReaderError):
    """pcscd reported an unexpected error; `code` is the PC/SC return code."""

    def __init__(self, message: str, *, device: str | None = None, code: int = 0) -> None:
        super().__init__(message, device=device)
        self.code = code


class TransactionFailed(ReaderFailure):
    """pcscd reported "transaction failed" while the card stayed in the reader: not a removal."""


_BY_SW: dict[int, type[ApduError]] = {
    0x6700: WrongLength,
    0x6982: SecurityStatusNotSatisfied,
    0x6983: AuthenticationBlocked,
    0x6985: ConditionsNotSatisfied,
    0x6986: CommandNotAllowed,
    0x6A82: FileNotFound,
    0x6A83: RecordNotFound,
    0x6A86: WrongParameters,
    0x6B00: WrongParameters,
    0x6D00: InsNotSupported,
    0x6E00: ClaNotSupported,
    0x6F00: CardFailure,
    0x6581: CardFailure,
}


def error_for_sw(sw: int, *, device: str | None = None, command: str = "") -> ApduError:
    """The typed error for a non-success status word (generic `ApduError` when unlisted)."""
    return _BY_SW.get(sw, ApduError)(sw, device=device, command=command)


__all__ = [
    "ApduError",
    "AuthenticationBlocked",
    "CardDataError",
    "CardFailure",
    "CardReaderError",
    "CardRemoved",
    "CardTimeout",
    "CardUnresponsive",
    "ClaNotSupported",
    "CommandNotAllowed",
    "ConditionsNotSatisfied",
    "FileNotFound",
    "InsNotSupported",
    "NoCardPresented",
    "PcscdUnavailable",
    "ProtocolViolation",
    "ReaderFailure",
    "ReaderUnavailable",
    "RecordNotFound",
    "RecordTagMismatch",
    "SecurityStatusNotSatisfied",
    "TransactionFailed",
    "WrongCard",
    "WrongLength",
    "WrongParameters",
    "error_for_sw",
]
