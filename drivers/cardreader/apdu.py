"""ISO 7816-4 command APDUs and the status-word dance (61xx, 6Cxx); pure, no I/O."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from drivers.cardreader.errors import ProtocolViolation, error_for_sw

SW_OK = 0x9000

# "sx1.sh." + 社会保障 in GBK: the social security application (protocols.md).
SSC_AID = b"sx1.sh." + "社会保障".encode("gbk")
PPSE_AID = b"2PAY.SYS.DDF01"

# Enough for every file we read; a card that keeps answering 61xx past this is broken.
MAX_RESPONSE_BYTES = 65_536
MAX_CHAINED_RESPONSES = 256

Transmit = Callable[[bytes], bytes]


@dataclass(frozen=True, slots=True)
class Response:
    """A response APDU split into data and status word."""

    data: bytes
    sw: int

    @property
    def sw1(self) -> int:
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        return self.sw & 0xFF

    @property
    def ok(self) -> bool:
        return self.sw == SW_OK

    def __repr__(self) -> str:
        # Data may be personal (names, ID numbers): show only its size.
        return f"Response(sw={self.sw:04X}, data_len={len(self.data)})"

    @classmethod
    def parse(cls, raw: bytes) -> Response:
        """Split a raw response APDU; fewer than two bytes is a protocol violation."""
        if len(raw) < 2:
            raise ProtocolViolation(f"response APDU of {len(raw)} byte(s), need at least SW1 SW2")
        return cls(bytes(raw[:-2]), (raw[-2] << 8) | raw[-1])


def command(cla: int, ins: int, p1: int, p2: int, data: bytes = b"", le: int | None = None) -> bytes:
    """A short command APDU (cases 1-4); `le` 0..256, where 256 is sent as 00."""
    for name, value in (("cla", cla), ("ins", ins), ("p1", p1), ("p2", p2)):
        if not 0 <= value <= 0xFF:
            raise ValueError(f"{name} out of range: {value}")
    if len(data) > 255:
        raise ValueError("short APDU data is at most 255 bytes")
    out = bytes((cla, ins, p1, p2))
    if data:
        out += bytes((len(data),)) + data
    if le is not None:
        if not 0 <= le <= 256:
            raise ValueError(f"le out of range: {le}")
        out += bytes((le & 0xFF,))
    return out


def select_aid(aid: bytes) -> bytes:
    """SELECT by DF name (AID), asking for the FCI: `00 A4 04 00 Lc AID 00`."""
    return command(0x00, 0xA4, 0x04, 0x00, aid, le=256)


def select_ef(fid: bytes) -> bytes:
    """SELECT an EF by its 2-byte identifier under the current DF: `00 A4 02 00 02 FID`."""
    if len(fid) != 2:
        raise ValueError("a file identifier is two bytes")
    return command(0x00, 0xA4, 0x02, 0x00, fid)


def read_binary(offset: int, le: int = 256) -> bytes:
    """READ BINARY from the current EF at a 15-bit offset: `00 B0 P1 P2 Le`."""
    if not 0 <= offset <= 0x7FFF:
        raise ValueError(f"offset out of range: {offset}")
    return command(0x00, 0xB0, offset >> 8, offset & 0xFF, le=le)


def read_record(record: int, p2: int = 0x04, le: int = 256) -> bytes:
    """READ RECORD `00 B2 rec P2 Le`; P2 04 = record number in P1, current EF."""
    if not 1 <= record <= 0xFE:
        raise ValueError(f"record number out of range: {record}")
    return command(0x00, 0xB2, record, p2, le=le)


def get_response(le: int) -> bytes:
    """GET RESPONSE `00 C0 00 00 Le`, fetching what a 61xx announced."""
    return command(0x00, 0xC0, 0x00, 0x00, le=le)


def get_uid() -> bytes:
    """PC/SC part 3 GET DATA for a contactless card's UID: `FF CA 00 00 00`."""
    return command(0xFF, 0xCA, 0x00, 0x00, le=256)


def with_le(apdu: bytes, le: int) -> bytes:
    """The same short APDU with its Le replaced (or added, for cases 1 and 3)."""
    if len(apdu) < 4:
        raise ValueError("an APDU has at least 4 header bytes")
    le_byte = bytes((le & 0xFF,))
    if len(apdu) == 4:
        return apdu + le_byte
    if len(apdu) == 5:
        return apdu[:4] + le_byte
    lc = apdu[4]
    if len(apdu) == 5 + lc:
        return apdu + le_byte
    if len(apdu) == 6 + lc:
        return apdu[:-1] + le_byte
    raise ValueError("not a short APDU: Lc does not match the length")


def describe(apdu: bytes) -> str:
    """A log-safe name for a command: CLA INS P1 P2 only, never the data."""
    return apdu[:4].hex(" ").upper()


def exchange(send: Transmit, apdu: bytes) -> Response:
    """Send one command and follow 61xx with GET RESPONSE and 6Cxx with a resend at Le=xx."""
    response = Response.parse(send(apdu))
    if response.sw1 == 0x6C:
        response = Response.parse(send(with_le(apdu, response.sw2)))
        if response.sw1 == 0x6C:
            raise ProtocolViolation(f"card asked twice for a different Le ({describe(apdu)})")
    data = bytearray(response.data)
    chained = 0
    while response.sw1 == 0x61:
        chained += 1
        if chained > MAX_CHAINED_RESPONSES or len(data) > MAX_RESPONSE_BYTES:
            raise ProtocolViolation(f"card kept announcing more data ({describe(apdu)})")
        le = response.sw2 or 256
        response = Response.parse(send(get_response(le)))
        if response.sw1 == 0x6C:
            # Some cards correct GET RESPONSE's Le too.
            response = Response.parse(send(get_response(response.sw2)))
        data += response.data
    return Response(bytes(data), response.sw)


def transmit(send: Transmit, apdu: bytes, *, device: str | None = None) -> bytes:
    """`exchange`, then the data on 9000 or the typed error for any other status word."""
    response = exchange(send, apdu)
    if not response.ok:
        raise error_for_sw(response.sw, device=device, command=describe(apdu))
    return response.data
