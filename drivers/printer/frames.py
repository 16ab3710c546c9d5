"""ESC/POS bytes: commands the driver sends and the status bytes the printer sends back. Pure."""

from __future__ import annotations

import enum
from dataclasses import dataclass

ESC = 0x1B
GS = 0x1D
FS = 0x1C
DLE = 0x10
EOT = 0x04
XON = 0x11
XOFF = 0x13

INIT = b"\x1b\x40"
CHINESE_ON = b"\x1c\x26"
CHINESE_OFF = b"\x1c\x2e"
# GS V m: m = 0 full cut, 1 partial cut (Epson function A); 65 / 66 + n feed to the cutter and
# then cut full / partial (function B), so `1D 56 42 n` is a partial cut, not a full one.
# Sources: python-escpos constants.PAPER_FULL_CUT / PAPER_PART_CUT and Escpos.cut(feed=False)
# (`GS V 66 0`); escpos-php Printer::CUT_FULL = 65, CUT_PARTIAL = 66; totalcross escpos Cut enum.
CUT_FULL = b"\x1d\x56\x00"
CUT_PARTIAL = b"\x1d\x56\x01"
FEED_AND_FULL_CUT = b"\x1d\x56\x41\x00"
FEED_AND_PARTIAL_CUT = b"\x1d\x56\x42\x00"
RASTER_IMAGE = b"\x1d\x76\x30"
LF = b"\n"

PROCESS_ID_HEADER = 0x37
PROCESS_ID_IDENT = 0x22
# ASB events to report: online/offline (bit 1), errors (bit 2), paper roll sensors (bit 3).
ASB_MASK = 0x0E


class QrErrorCorrection(enum.IntEnum):
    L = 0
    M = 1
    Q = 2
    H = 3


def realtime_status(n: int) -> bytes:
    """DLE EOT n: answered at once, even mid-job; n = 1 printer, 2 offline, 3 error, 4 paper."""
    if n not in (1, 2, 3, 4):
        raise ValueError("DLE EOT n takes n = 1..4")
    return bytes([DLE, EOT, n])


def status_back(mask: int) -> bytes:
    """GS a n: automatic status back for the events in `mask` (0 turns it off)."""
    return bytes([GS, 0x61, mask & 0xFF])


def process_id_request(pid: bytes) -> bytes:
    """GS ( H fn 48: the printer answers `37 22 pid 00` once everything before it has printed."""
    if len(pid) != 4 or any(not 0x20 <= b <= 0x7E for b in pid):
        raise ValueError("a process id is four printable ASCII bytes")
    return b"\x1d\x28\x48\x06\x00\x30\x30" + pid


def process_id_response(pid: bytes) -> bytes:
    return bytes([PROCESS_ID_HEADER, PROCESS_ID_IDENT]) + pid + b"\x00"


def qr_code(data: bytes, *, module_size: int = 6, ec: QrErrorCorrection = QrErrorCorrection.M) -> bytes:
    """GS ( k: select model 2, module size, error correction, store the data, print it."""
    if not 1 <= module_size <= 16:
        raise ValueError("QR module size is 1..16 dots")
    stored = len(data) + 3
    if stored > 0xFFFF:
        raise ValueError("QR data too long")
    return b"".join(
        (
            b"\x1d\x28\x6b\x04\x00\x31\x41\x32\x00",
            b"\x1d\x28\x6b\x03\x00\x31\x43" + bytes([module_size]),
            b"\x1d\x28\x6b\x03\x00\x31\x45" + bytes([0x30 + ec]),
            b"\x1d\x28\x6b" + stored.to_bytes(2, "little") + b"\x31\x50\x30" + data,
            b"\x1d\x28\x6b\x03\x00\x31\x51\x30",
        )
    )


@dataclass(frozen=True, slots=True)
class RasterImage:
    """GS v 0 m xL xH yL yH d1..dk: `width_bytes` bytes per row, `height` rows, MSB first, 1 = dot.

    Sources: Epson ESC/POS reference "GS v 0" (`1D 76 30 m xL xH yL yH d1...dk`, k = width
    bytes x height); python-escpos `Escpos.image(impl="bitImageRaster")`; react-thermal-printer
    packages/printer/src/commands/image.ts.
    """

    width_bytes: int
    height: int
    data: bytes
    mode: int = 0  # 0 normal, 1 double width, 2 double height, 3 quadruple

    def __post_init__(self) -> None:
        if not 0 < self.width_bytes <= 0xFFFF or not 0 < self.height <= 0xFFFF:
            raise ValueError("raster size out of range")
        if len(self.data) != self.width_bytes * self.height:
            raise ValueError("raster data does not match its size")

    def command(self) -> bytes:
        """The GS v 0 command that prints this image."""
        return (
            RASTER_IMAGE
            + bytes([self.mode])
            + self.width_bytes.to_bytes(2, "little")
            + self.height.to_bytes(2, "little")
            + self.data
        )

    def dot(self, x: int, y: int) -> bool:
        """True where the printer puts a dot."""
        return bool(self.data[y * self.width_bytes + x // 8] & (0x80 >> (x % 8)))


def raster_size(header: bytes) -> int:
    """Total bytes of the GS v 0 command whose first 8 bytes are `header`."""
    if len(header) < 8 or header[:3] != RASTER_IMAGE:
        raise ValueError("not a GS v 0 header")
    return 8 + int.from_bytes(header[4:6], "little") * int.from_bytes(header[6:8], "little")


def decode_raster(command: bytes) -> RasterImage:
    """The image in one whole GS v 0 command."""
    size = raster_size(command)
    if len(command) != size:
        raise ValueError(f"GS v 0 of {len(command)} bytes, header says {size}")
    width, height = int.from_bytes(command[4:6], "little"), int.from_bytes(command[6:8], "little")
    return RasterImage(width, height, bytes(command[8:]), command[3] & 0x03)


def is_realtime_answer(byte: int) -> bool:
    """DLE EOT answers match 0xx1xx10."""
    return byte & 0x93 == 0x12


def is_asb_first(byte: int) -> bool:
    """The first byte of an automatic status push matches 0xx1xx00."""
    return byte & 0x93 == 0x10


def is_asb_rest(byte: int) -> bool:
    """The other three bytes of a push match 0xx0xxxx."""
    return byte & 0x90 == 0x00


@dataclass(frozen=True, slots=True)
class PrinterStatus:
    """What the printer reports, from DLE EOT 1-4 answers or an automatic status push."""

    offline: bool = False
    cover_open: bool = False
    feed_button: bool = False
    paper_end_stop: bool = False
    error: bool = False
    cutter_error: bool = False
    unrecoverable: bool = False
    auto_recoverable: bool = False
    paper_near_end: bool = False
    paper_end: bool = False

    @property
    def out_of_paper(self) -> bool:
        return self.paper_end or self.paper_end_stop

    @property
    def hardware_fault(self) -> str | None:
        if self.cutter_error:
            return "cutter error"
        if self.unrecoverable:
            return "unrecoverable error"
        return None

    @property
    def user_fault(self) -> str | None:
        if self.cover_open:
            return "cover open"
        if self.out_of_paper:
            return "paper end"
        return None

    @property
    def ready(self) -> bool:
        return not (
            self.offline or self.error or self.hardware_fault or self.user_fault or self.auto_recoverable
        )

    @property
    def warnings(self) -> tuple[str, ...]:
        return ("paper_near_end",) if self.paper_near_end and not self.paper_end else ()

    @classmethod
    def from_realtime(cls, answers: dict[int, int]) -> PrinterStatus:
        """Combine the DLE EOT 1..4 answers (by n)."""
        p, o, e, r = (answers.get(n, 0x12) for n in (1, 2, 3, 4))
        return cls(
            offline=bool(p & 0x08),
            cover_open=bool(o & 0x04),
            feed_button=bool(o & 0x08),
            paper_end_stop=bool(o & 0x20),
            error=bool(o & 0x40),
            cutter_error=bool(e & 0x08),
            unrecoverable=bool(e & 0x20),
            auto_recoverable=bool(e & 0x40),
            paper_near_end=bool(r & 0x0C),
            paper_end=bool(r & 0x60),
        )

    def realtime_answer(self, n: int) -> int:
        """The answer byte to DLE EOT n (simulators)."""
        if n == 1:
            return 0x12 | (0x08 if self.offline else 0)
        if n == 2:
            return (
                0x12
                | (0x04 if self.cover_open else 0)
                | (0x08 if self.feed_button else 0)
                | (0x20 if self.paper_end_stop else 0)
                | (0x40 if self.error else 0)
            )
        if n == 3:
            return (
                0x12
                | (0x08 if self.cutter_error else 0)
                | (0x20 if self.unrecoverable else 0)
                | (0x40 if self.auto_recoverable else 0)
            )
        if n == 4:
            return 0x12 | (0x0C if self.paper_near_end else 0) | (0x60 if self.paper_end else 0)
        raise ValueError("DLE EOT n takes n = 1..4")

    @classmethod
    def from_asb(cls, push: bytes) -> PrinterStatus:
        """Decode a 4-byte automatic status push (Epson layout)."""
        b1, b2, b3, _b4 = push
        return cls(
            offline=bool(b1 & 0x08),
            cover_open=bool(b1 & 0x20),
            feed_button=bool(b1 & 0x40),
            paper_end_stop=bool(b3 & 0x0C),
            error=bool(b2 & 0x6C),
            cutter_error=bool(b2 & 0x08),
            unrecoverable=bool(b2 & 0x20),
            auto_recoverable=bool(b2 & 0x40),
            paper_near_end=bool(b3 & 0x03),
            paper_end=bool(b3 & 0x0C),
        )

    def asb(self) -> bytes:
        """This status as a 4-byte push (simulators)."""
        b1 = 0x10 | (0x08 if self.offline else 0) | (0x20 if self.cover_open else 0)
        b1 |= 0x40 if self.feed_button else 0
        b2 = (0x08 if self.cutter_error else 0) | (0x20 if self.unrecoverable else 0)
        b2 |= 0x40 if self.auto_recoverable else 0
        b3 = (0x03 if self.paper_near_end else 0) | (0x0C if self.out_of_paper else 0)
        return bytes([b1, b2, b3, 0x00])


@dataclass(frozen=True, slots=True)
class RealtimeAnswer:
    value: int


@dataclass(frozen=True, slots=True)
class StatusPush:
    data: bytes

    @property
    def status(self) -> PrinterStatus:
        return PrinterStatus.from_asb(self.data)


@dataclass(frozen=True, slots=True)
class ProcessIdAnswer:
    pid: bytes


@dataclass(frozen=True, slots=True)
class FlowControl:
    xoff: bool


@dataclass(frozen=True, slots=True)
class Unknown:
    data: bytes


Incoming = RealtimeAnswer | StatusPush | ProcessIdAnswer | FlowControl | Unknown

_MAX_BLOCK = 16  # a header-to-NUL block longer than this is noise


class StatusSorter:
    """Sorts the printer's byte stream by bit pattern: real-time answers, pushed status,
    process-id answers, XON/XOFF. Never raises; bytes that fit nothing come out as Unknown."""

    def __init__(self) -> None:
        self._asb = bytearray()
        self._block = bytearray()
        self.pushed = 0

    def feed(self, data: bytes) -> list[Incoming]:
        out: list[Incoming] = []
        for byte in data:
            self._one(byte, out)
        return out

    def _one(self, byte: int, out: list[Incoming]) -> None:
        if self._block:
            self._block.append(byte)
            if byte == 0x00:
                block, self._block = bytes(self._block), bytearray()
                if len(block) == 7 and block[1] == PROCESS_ID_IDENT:
                    out.append(ProcessIdAnswer(block[2:6]))
                else:
                    out.append(Unknown(block))
            elif len(self._block) > _MAX_BLOCK:
                out.append(Unknown(bytes(self._block)))
                self._block.clear()
            return
        if self._asb:
            if is_asb_rest(byte):
                self._asb.append(byte)
                if len(self._asb) == 4:
                    out.append(StatusPush(bytes(self._asb)))
                    self.pushed += 1
                    self._asb.clear()
                return
            out.append(Unknown(bytes(self._asb)))
            self._asb.clear()
        if byte in (XON, XOFF):
            out.append(FlowControl(xoff=byte == XOFF))
        elif is_realtime_answer(byte):
            out.append(RealtimeAnswer(byte))
        elif is_asb_first(byte):
            self._asb.append(byte)
        elif byte == PROCESS_ID_HEADER:
            self._block.append(byte)
        else:
            out.append(Unknown(bytes([byte])))
