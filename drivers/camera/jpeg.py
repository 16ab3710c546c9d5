"""JPEG checks (whole image, frame size) and a tiny baseline encoder for simulated frames; pure.

The encoder writes only flat 8x8 tiles (each block's DC coefficient, no AC terms), which is a
valid baseline JPEG that any decoder reads, produced without numpy, PIL or ffmpeg. Tables are
our own minimal ones: every DC category 0-11 has a 4-bit code, the AC table holds only EOB.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from drivers.camera.errors import InvalidFrame

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
# Start-of-frame markers that carry the image size: every SOFn except DHT (C4), JPG (C8), DAC (CC).
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_SOS = 0xDA


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured JPEG image; repr leaves the bytes out (they may show a face)."""

    jpeg: bytes
    width: int
    height: int
    captured_at: float

    def __repr__(self) -> str:
        return (
            f"Frame(width={self.width}, height={self.height}, bytes={len(self.jpeg)}, "
            f"captured_at={self.captured_at:.3f})"
        )


def inspect(data: bytes) -> tuple[int, int]:
    """(width, height) of a whole JPEG; raises InvalidFrame when it is not one."""
    if len(data) < 4 or not data.startswith(SOI):
        raise InvalidFrame("not a JPEG: no SOI marker")
    # Some cameras pad after EOI; anything else after the image means a broken frame.
    if not data.rstrip(b"\x00\r\n").endswith(EOI):
        raise InvalidFrame("incomplete JPEG: no EOI marker at the end (truncated?)")
    i, n = 2, len(data)
    size: tuple[int, int] | None = None
    while i + 1 < n:
        if data[i] != 0xFF:
            raise InvalidFrame(f"corrupt JPEG: expected a marker at byte {i}")
        while i + 1 < n and data[i + 1] == 0xFF:  # fill bytes
            i += 1
        marker = data[i + 1]
        if marker in _STANDALONE:
            i += 2
            continue
        if marker == 0xD9:
            break
        if i + 4 > n:
            raise InvalidFrame("corrupt JPEG: segment header runs past the end")
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if length < 2 or i + 2 + length > n:
            raise InvalidFrame(f"corrupt JPEG: segment {marker:02X} length {length}")
        if marker in _SOF:
            if length < 8:
                raise InvalidFrame("corrupt JPEG: short frame header")
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            if not width or not height:
                raise InvalidFrame(f"JPEG frame header with zero size ({width}x{height})")
            size = (width, height)
        if marker == _SOS:
            if size is None:
                raise InvalidFrame("corrupt JPEG: scan before any frame header")
            return size
        i += 2 + length
    raise InvalidFrame("JPEG without a frame header and scan")


def with_comment(jpeg: bytes, comment: bytes) -> bytes:
    """The same JPEG with a COM segment right after SOI (cameras stamp frames this way)."""
    if not jpeg.startswith(SOI):
        raise ValueError("not a JPEG")
    if len(comment) > 0xFFFF - 2:
        raise ValueError("comment too long for one segment")
    return SOI + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


# --- encoder ---

_DC_QUANT = 8  # with DC-only blocks, the quantised DC is then (mean level - 128)
_DC_CODE_BITS = 4  # categories 0..11 get codes 0000..1011
_EOB_CODE = (0b0, 1)  # the only AC symbol we ever write


class _BitWriter:
    def __init__(self) -> None:
        self.out = bytearray()
        self._acc = 0
        self._n = 0

    def write(self, value: int, bits: int) -> None:
        self._acc = (self._acc << bits) | (value & ((1 << bits) - 1))
        self._n += bits
        while self._n >= 8:
            self._n -= 8
            byte = (self._acc >> self._n) & 0xFF
            self.out.append(byte)
            if byte == 0xFF:
                self.out.append(0x00)  # byte stuffing inside entropy-coded data
        self._acc &= (1 << self._n) - 1

    def flush(self) -> bytes:
        if self._n:
            self.write((1 << (8 - self._n)) - 1, 8 - self._n)  # pad with 1 bits
        return bytes(self.out)


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + (len(payload) + 2).to_bytes(2, "big") + payload


Colour = tuple[int, int, int]  # Y, Cb, Cr, 0..255 each


def encode_tiles(width: int, height: int, tile: Callable[[int, int], Colour]) -> bytes:
    """A baseline 4:4:4 JPEG whose 8x8 block (bx, by) has the flat colour `tile(bx, by)`."""
    if width <= 0 or height <= 0 or width % 8 or height % 8 or width > 65535 or height > 65535:
        raise ValueError("width and height must be positive multiples of 8")
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    dqt = b"\x00" + bytes([_DC_QUANT] + [1] * 63)
    sof = (
        b"\x08"
        + height.to_bytes(2, "big")
        + width.to_bytes(2, "big")
        + b"\x03"
        + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    )
    dc_table = b"\x00" + bytes([0, 0, 0, 12] + [0] * 12) + bytes(range(12))
    ac_table = b"\x10" + bytes([1] + [0] * 15) + b"\x00"
    sos = b"\x03\x01\x00\x02\x00\x03\x00\x00\x3f\x00"
    bits = _BitWriter()
    previous = [0, 0, 0]
    for by in range(height // 8):
        for bx in range(width // 8):
            colour = tile(bx, by)
            for c in range(3):
                dc = max(0, min(255, colour[c])) - 128
                diff = dc - previous[c]
                previous[c] = dc
                category = abs(diff).bit_length()
                bits.write(category, _DC_CODE_BITS)
                if category:
                    bits.write(diff if diff > 0 else diff + (1 << category) - 1, category)
                bits.write(*_EOB_CODE)
    return (
        SOI
        + _segment(0xE0, app0)
        + _segment(0xDB, dqt)
        + _segment(0xC0, sof)
        + _segment(0xC4, dc_table)
        + _segment(0xC4, ac_table)
        + _segment(0xDA, sos)
        + bits.flush()
        + EOI
    )


def rgb_to_ycbcr(r: int, g: int, b: int) -> Colour:
    """JFIF's full-range RGB to YCbCr."""
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return round(y), round(cb), round(cr)
