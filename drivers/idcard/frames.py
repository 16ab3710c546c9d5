"""SAM_V (GA/T 467) frames: bytes <-> frozen dataclasses. Pure: no I/O, no asyncio."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from functools import reduce
from operator import xor

from drivers.base import FrameError

PREAMBLE = b"\xaa\xaa\xaa\x96\x69"
HEADER_LEN = 7  # preamble + two length bytes
# 30 10 reply (text + photo + two fingerprints) is about 2.3 kB; anything longer is noise.
MAX_FRAME = 4096
TEXT_LEN = 256
PHOTO_LEN = 1024


class Command(enum.Enum):
    """Host commands as (CMD, PARA)."""

    RESET_SAM = (0x10, 0xFF)
    STATUS = (0x11, 0xFF)
    SAM_ID = (0x12, 0xFF)
    FIND_CARD = (0x20, 0x01)
    SELECT_CARD = (0x20, 0x02)
    READ_TEXT_PHOTO = (0x30, 0x01)
    READ_NEW_ADDRESS = (0x30, 0x03)
    READ_WITH_FINGERPRINT = (0x30, 0x10)


class Status(enum.IntEnum):
    """SW3 values the reader answers with."""

    OK = 0x90
    FIND_OK = 0x9F
    BAD_CHECKSUM = 0x10
    BAD_LENGTH = 0x11
    BAD_COMMAND = 0x21
    NOT_ALLOWED = 0x23
    UNKNOWN_ERROR = 0x24
    CARD_AUTH_SAM_FAILED = 0x31
    SAM_AUTH_CARD_FAILED = 0x32
    VERIFY_FAILED = 0x33
    UNKNOWN_CARD_TYPE = 0x40
    READ_FAILED = 0x41
    RANDOM_FAILED = 0x47
    SAM_SELFTEST_FAILED = 0x60
    SAM_NOT_AUTHORISED = 0x66
    NO_CARD = 0x80
    SELECT_FAILED = 0x81
    NO_CONTENT = 0x91


def status_name(value: int) -> str:
    """Readable name of an SW3 value, also for values the protocol does not define."""
    try:
        return Status(value).name.lower()
    except ValueError:
        return f"status_0x{value:02x}"


@dataclass(frozen=True, slots=True)
class Request:
    """Host to reader: CMD PARA [data]."""

    cmd: int
    para: int
    data: bytes = b""

    @classmethod
    def of(cls, command: Command, data: bytes = b"") -> Request:
        return cls(command.value[0], command.value[1], data)

    @property
    def command(self) -> Command | None:
        try:
            return Command((self.cmd, self.para))
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class Reply:
    """Reader to host: SW1 SW2 SW3 [data]; `data` may hold personal data, so repr shows its size."""

    sw1: int
    sw2: int
    sw3: int
    data: bytes = b""

    @property
    def status(self) -> int:
        return self.sw3

    @property
    def ok(self) -> bool:
        return self.sw1 == 0 and self.sw2 == 0 and self.sw3 in (Status.OK, Status.FIND_OK)

    def __repr__(self) -> str:
        return (
            f"Reply(sw={self.sw1:02x}{self.sw2:02x}{self.sw3:02x}, "
            f"status={status_name(self.sw3)}, data={len(self.data)} bytes)"
        )


def checksum(body: bytes) -> int:
    """XOR of the bytes from LEN_HI to the last data byte."""
    return reduce(xor, body, 0)


def frame_len(header: bytes) -> int:
    """Total frame size from its first seven bytes: LEN counts everything after itself."""
    return HEADER_LEN + int.from_bytes(header[5:7], "big")


def check_frame(frame: bytes) -> bool:
    """Whether a complete frame's checksum matches (the framer's resync test)."""
    return len(frame) > HEADER_LEN and checksum(frame[5:-1]) == frame[-1]


def _wrap(payload: bytes) -> bytes:
    body = (len(payload) + 1).to_bytes(2, "big") + payload
    return PREAMBLE + body + bytes([checksum(body)])


def _unwrap(frame: bytes, *, min_payload: int) -> bytes:
    if len(frame) < HEADER_LEN + min_payload + 1:
        raise FrameError(f"frame too short ({len(frame)} bytes)")
    if not frame.startswith(PREAMBLE):
        raise FrameError("frame does not start with the SAM_V preamble")
    if len(frame) > MAX_FRAME:
        raise FrameError(f"frame longer than {MAX_FRAME} bytes")
    if frame_len(frame) != len(frame):
        raise FrameError(f"length field says {frame_len(frame)} bytes, frame has {len(frame)}")
    if not check_frame(frame):
        raise FrameError("checksum mismatch")
    return frame[HEADER_LEN:-1]


def encode_request(request: Request) -> bytes:
    return _wrap(bytes([request.cmd, request.para]) + request.data)


def decode_request(frame: bytes) -> Request:
    payload = _unwrap(frame, min_payload=2)
    return Request(payload[0], payload[1], payload[2:])


def encode_reply(reply: Reply) -> bytes:
    return _wrap(bytes([reply.sw1, reply.sw2, reply.sw3]) + reply.data)


def decode_reply(frame: bytes) -> Reply:
    payload = _unwrap(frame, min_payload=3)
    return Reply(payload[0], payload[1], payload[2], payload[3:])


@dataclass(frozen=True, slots=True)
class CardData:
    """The raw blocks of a 30 01 / 30 10 reply: UCS-2 text, WLT photo, optional fingerprint."""

    text: bytes
    photo: bytes
    fingerprint: bytes | None = None

    def __repr__(self) -> str:
        fp = "none" if self.fingerprint is None else f"{len(self.fingerprint)} bytes"
        return f"CardData(text={len(self.text)} bytes, photo={len(self.photo)} bytes, fp={fp})"


def encode_card_data(card: CardData) -> bytes:
    """Reply data: big-endian block lengths, then the blocks in order."""
    head = struct.pack(">HH", len(card.text), len(card.photo))
    if card.fingerprint is not None:
        head += struct.pack(">H", len(card.fingerprint))
    return head + card.text + card.photo + (card.fingerprint or b"")


def decode_card_data(data: bytes, *, fingerprint: bool) -> CardData:
    """Split a read reply's data into its blocks; FrameError when the lengths do not add up."""
    count = 3 if fingerprint else 2
    if len(data) < 2 * count:
        raise FrameError("card data shorter than its length fields")
    lengths = struct.unpack(f">{count}H", data[: 2 * count])
    if sum(lengths) != len(data) - 2 * count:
        raise FrameError(f"card data lengths {lengths} do not match {len(data) - 2 * count} bytes of data")
    offset = 2 * count
    text = data[offset : offset + lengths[0]]
    offset += lengths[0]
    photo = data[offset : offset + lengths[1]]
    offset += lengths[1]
    fp = data[offset : offset + lengths[2]] if fingerprint else None
    return CardData(text, photo, fp)


def encode_sam_id(parts: tuple[int, int, int, int, int]) -> bytes:
    """SAM id reply data: two 16-bit and three 32-bit little-endian numbers (16 bytes)."""
    return struct.pack("<HHIII", *parts)


def decode_sam_id(data: bytes) -> str:
    """SAM id as printed on the module label, e.g. `05.01-20230101-0000012345-0987654321`."""
    if len(data) < 16:
        raise FrameError(f"SAM id needs 16 bytes, got {len(data)}")
    a, b, c, d, e = struct.unpack("<HHIII", data[:16])
    return f"{a:02d}.{b:02d}-{c:08d}-{d:010d}-{e:010d}"
