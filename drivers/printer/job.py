"""A receipt job and its ESC/POS encoding (GB18030 text, Chinese mode, bold/double, QR, cut). Pure.

Each printer has a profile: its cut (full or partial), the character set of its built-in font
and what to do with a line holding characters that font cannot print: draw the line as a GS v 0
raster image, or print a visible placeholder in place of each such character. Bytes the printer
would misprint are never sent.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from drivers.printer.charset import RASTER_FONTS, FontCharset, printable, unprintable
from drivers.printer.errors import InvalidJob
from drivers.printer.frames import (
    CHINESE_OFF,
    CHINESE_ON,
    CUT_FULL,
    CUT_PARTIAL,
    INIT,
    LF,
    QrErrorCorrection,
    qr_code,
)

if TYPE_CHECKING:
    from drivers.printer.raster import LineRenderer

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
    # Lines fed before the cut so the last printed line clears the cutter (python-escpos feeds 6).
    feed_lines: int = 6
    cut: bool = True

    @classmethod
    def of(cls, lines: Sequence[str | Line], *, qr: str | None = None, cut: bool = True) -> PrintJob:
        """Build a job from plain strings (the API's `{"lines", "qr", "cut"}`) or Lines."""
        return cls(tuple(line if isinstance(line, Line) else Line(line) for line in lines), qr=qr, cut=cut)

    def __repr__(self) -> str:
        return f"PrintJob(lines={len(self.lines)}, qr={self.qr is not None}, cut={self.cut})"


CutMode = Literal["full", "partial"]
UnprintablePolicy = Literal["raster", "placeholder"]


@dataclass(frozen=True, slots=True)
class PrinterProfile:
    """What one printer model does: its cut, its font's character set, how to print the rest."""

    cut: CutMode = "full"
    charset: FontCharset = "gbk"
    unprintable: UnprintablePolicy = "raster"
    placeholder: str = "□"
    width_dots: int = 576
    raster_fonts: tuple[str, ...] = RASTER_FONTS

    def __post_init__(self) -> None:
        if self.cut not in ("full", "partial"):
            raise ValueError("cut is 'full' or 'partial'")
        if self.unprintable not in ("raster", "placeholder"):
            raise ValueError("unprintable is 'raster' or 'placeholder'")
        if not self.placeholder or len(self.placeholder) > 4:
            raise ValueError("placeholder is 1 to 4 characters")
        if not all(printable(c, self.charset) for c in self.placeholder):
            raise ValueError(f"placeholder {self.placeholder!r} is not printable in {self.charset}")
        if self.width_dots <= 0 or self.width_dots % 8 or self.width_dots > 4096:
            raise ValueError("width_dots is a multiple of 8 up to 4096")


@dataclass(frozen=True, slots=True)
class EncodedJob:
    """A job's bytes and how its text was printed: counts only, never the text."""

    data: bytes
    raster_lines: int = 0
    replaced_chars: int = 0


def _check_text(text: str) -> None:
    if len(text) > MAX_LINE_CHARS:
        raise InvalidJob(f"a line is longer than {MAX_LINE_CHARS} characters")
    # A control character in user text could smuggle in printer commands.
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise InvalidJob("a line contains control characters")


def encode_job(job: PrintJob, profile: PrinterProfile | None = None) -> bytes:
    """The job's ESC/POS bytes, starting with ESC @ and ending with the printer's cut when asked."""
    return encode(job, profile).data


def encode(
    job: PrintJob, profile: PrinterProfile | None = None, *, renderer: LineRenderer | None = None
) -> EncodedJob:
    """The job's bytes for this printer profile, with counts of raster lines and replaced characters."""
    profile = profile or PrinterProfile()
    if len(job.lines) > MAX_LINES:
        raise InvalidJob(f"more than {MAX_LINES} lines")
    encoder = _Encoder(profile, renderer)
    for line in job.lines:
        _check_text(line.text)
        encoder.line(line)
    encoder.end_text()
    if job.qr is not None:
        encoder.qr(job)
    return encoder.finish(job)


class _Encoder:
    """Builds a job's bytes, sending a mode command (align, bold, size, Chinese) only on a change."""

    def __init__(self, profile: PrinterProfile, renderer: LineRenderer | None) -> None:
        self.profile = profile
        self.renderer = renderer
        self.out = bytearray(INIT)
        self.chinese = False
        self.bold = False
        self.double = False
        self.align = Align.LEFT
        self.raster_lines = 0
        self.replaced = 0

    def line(self, line: Line) -> None:
        text = line.text
        missing = unprintable(text, self.profile.charset)
        if missing and self.profile.unprintable == "raster":
            self._raster(line)
            return
        if missing:
            self.replaced += sum(text.count(c) for c in missing)
            for char in missing:
                text = text.replace(char, self.profile.placeholder)
        self._align(line.align)
        if line.bold != self.bold:
            self.out += bytes([0x1B, 0x45, 1 if line.bold else 0])
            self.bold = line.bold
        if line.double != self.double:
            self.out += bytes([0x1D, 0x21, 0x11 if line.double else 0x00])
            self.double = line.double
        wide = not text.isascii()
        if wide != self.chinese:
            self.out += CHINESE_ON if wide else CHINESE_OFF
            self.chinese = wide
        self.out += text.encode("gb18030") + LF

    def _raster(self, line: Line) -> None:
        if self.renderer is None:
            from drivers.printer.raster import LineRenderer

            self.renderer = LineRenderer(self.profile.raster_fonts, width_dots=self.profile.width_dots)
        # The row carries its own position; ESC a would move a narrow image (Telpar MTP-1500
        # manual: "ESC a is effective on raster bit images").
        self._align(Align.LEFT)
        rows = self.renderer.render(
            line.text,
            double=line.double,
            bold=line.bold,
            align=int(line.align),
            placeholder=self.profile.placeholder,
        )
        for row in rows:
            self.out += row.image.command()
            self.replaced += row.missing
        self.raster_lines += 1

    def _align(self, align: Align) -> None:
        if align != self.align:
            self.out += bytes([0x1B, 0x61, align])
            self.align = align

    def end_text(self) -> None:
        """Text modes back to normal after the last line."""
        if self.chinese:
            self.out += CHINESE_OFF
        if self.bold:
            self.out += b"\x1b\x45\x00"
        if self.double:
            self.out += b"\x1d\x21\x00"

    def qr(self, job: PrintJob) -> None:
        data = (job.qr or "").encode("utf-8")
        if not data or len(data) > MAX_QR_BYTES:
            raise InvalidJob(f"QR data must be 1..{MAX_QR_BYTES} bytes")
        self._align(Align.CENTER)
        self.out += qr_code(data, module_size=job.qr_module_size, ec=job.qr_ec) + LF

    def finish(self, job: PrintJob) -> EncodedJob:
        self._align(Align.LEFT)
        if job.feed_lines:
            self.out += bytes([0x1B, 0x64, min(job.feed_lines, 255)])
        if job.cut:
            # Function A after the feed: the same bytes python-escpos's cut() sends.
            self.out += CUT_FULL if self.profile.cut == "full" else CUT_PARTIAL
        return EncodedJob(bytes(self.out), self.raster_lines, self.replaced)
