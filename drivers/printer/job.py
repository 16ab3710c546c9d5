"""A receipt job and its ESC/POS encoding (GB18030 text, Chinese mode, bold/double, QR, cut). Pure."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from drivers.printer.errors import InvalidJob
from drivers.printer.frames import (
    CHINESE_OFF,
    CHINESE_ON,
    FEED_AND_CUT,
    INIT,
    LF,
    QrErrorCorrection,
    qr_code,
)

MAX_LINE_CHARS = 256
MAX_LINES = 200
MAX_QR_BYTES = 1024


class Align(enum.IntEnum):
    LEFT = 0
    CENTER = 1
    RIGHT = 2


@dataclass(frozen=True, slots=True)
class Line:
    """One printed line; receipts can hold personal data, so repr shows only the shape."""

    text: str
    bold: bool = False
    double: bool = False
    align: Align = Align.LEFT

    def __repr__(self) -> str:
        return f"Line({len(self.text)} chars, bold={self.bold}, double={self.double})"


@dataclass(frozen=True, slots=True)
class PrintJob:
    """A receipt: lines, an optional QR code, paper feed and cut."""

    lines: tuple[Line, ...]
    qr: str | None = None
    qr_module_size: int = 6
    qr_ec: QrErrorCorrection = QrErrorCorrection.M
    feed_lines: int = 3
    cut: bool = True

    @classmethod
    def of(cls, lines: Sequence[str | Line], *, qr: str | None = None, cut: bool = True) -> PrintJob:
        """Build a job from plain strings (the API's `{"lines", "qr", "cut"}`) or Lines."""
        return cls(tuple(line if isinstance(line, Line) else Line(line) for line in lines), qr=qr, cut=cut)

    def __repr__(self) -> str:
        return f"PrintJob(lines={len(self.lines)}, qr={self.qr is not None}, cut={self.cut})"


def _check_text(text: str) -> None:
    if len(text) > MAX_LINE_CHARS:
        raise InvalidJob(f"a line is longer than {MAX_LINE_CHARS} characters")
    # A control character in user text could smuggle in printer commands.
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise InvalidJob("a line contains control characters")


def encode_job(job: PrintJob) -> bytes:
    """The job's ESC/POS bytes, starting with ESC @ and ending with feed-and-cut when asked."""
    if len(job.lines) > MAX_LINES:
        raise InvalidJob(f"more than {MAX_LINES} lines")
    out = bytearray(INIT)
    chinese = False
    bold = False
    double = False
    align = Align.LEFT
    for line in job.lines:
        _check_text(line.text)
        if line.align != align:
            out += bytes([0x1B, 0x61, line.align])
            align = line.align
        if line.bold != bold:
            out += bytes([0x1B, 0x45, 1 if line.bold else 0])
            bold = line.bold
        if line.double != double:
            out += bytes([0x1D, 0x21, 0x11 if line.double else 0x00])
            double = line.double
        wide = not line.text.isascii()
        if wide != chinese:
            out += CHINESE_ON if wide else CHINESE_OFF
            chinese = wide
        try:
            out += line.text.encode("gb18030")
        except UnicodeEncodeError as err:
            raise InvalidJob("a line has characters GB18030 cannot encode") from err
        out += LF
    if chinese:
        out += CHINESE_OFF
    if bold:
        out += b"\x1b\x45\x00"
    if double:
        out += b"\x1d\x21\x00"
    if job.qr is not None:
        data = job.qr.encode("utf-8")
        if not data or len(data) > MAX_QR_BYTES:
            raise InvalidJob(f"QR data must be 1..{MAX_QR_BYTES} bytes")
        if align != Align.CENTER:
            out += b"\x1b\x61\x01"
            align = Align.CENTER
        out += qr_code(data, module_size=job.qr_module_size, ec=job.qr_ec) + LF
    if align != Align.LEFT:
        out += b"\x1b\x61\x00"
    if job.feed_lines:
        out += bytes([0x1B, 0x64, min(job.feed_lines, 255)])
    if job.cut:
        out += FEED_AND_CUT
    return bytes(out)
