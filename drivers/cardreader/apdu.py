"""ISO 7816-4 command APDUs and the status-word dance (61xx, 6Cxx, T=0 case 4); pure, no I/O.

Byte facts, each from two independent public sources (test vectors in tests/cardreader/test_apdu.py):

- The social security application's AID `73 78 31 2E 73 68 2E C9 E7 BB E1 B1 A3 D5 CF`: a7082633/
  HDOS_VC6 新疆焦阳/HD_XJDLL/HD_XJDLL.cpp and yxsylyh/hiquotion_cpp Hardware/card/SIDCard/DeCard/
  SIDCardOperation.cpp (`00A404000F7378312E73682EC9E7BBE1B1A3D5CF`).
- PPSE "2PAY.SYS.DDF01" (contactless) and PSE "1PAY.SYS.DDF01" (contact): openemv/emv-utils
  src/emv_fields.h and tests/emv_build_candidate_list_test.c; javisHuang/Learn
  emv/Initiate_Application.md (PPSE SELECT and answer); CardContact/scsh-scripts emv/reademv.js.

- READ RECORD `00 B2 P1 P2 Le`: P2 = `04` reads the record at position P1, P2 = `00` the first
  record whose identifier is P1, and P2's top five bits may name a short EF (`SFI << 3 | 04`).
  OpenSC/OpenSC src/libopensc/iso7816.c (iso7816_read_record: `p2 = (flags & 0x1F) << 3`,
  `p2 |= 0x04` for SC_RECORD_BY_REC_NR; SC_RECORD_BY_REC_ID is 0) and openemv/emv-utils
  src/emv_ttl.c (emv_ttl_read_record: `P2 = (sfi << 3) | 0x04`).
- `6A 83` is "record not found": OpenSC iso7816.c's status table and emv-utils src/emv_tal.c
  (the PSE directory read ends on 6A83).
- T=0 sends a case 4 command without Le; the card answers `61 xx` and the data comes with GET
  RESPONSE `00 C0 00 00 xx`: OpenSC src/libopensc/apdu.c (sc_apdu2bytes: "in case of T0 no Le
  byte is added"; sc_get_response on 61xx) and emv-utils tests/emv_ttl_tpdu_test.c (SELECT
  `00 A4 04 00 0E` + 1PAY.SYS.DDF01, card `61 26`, then `00 C0 00 00 26`). Vendor samples send
  the social security SELECT without Le and accept `61 xx` (a7082633/HDOS_VC6
  新疆焦阳/HD_XJDLL/HD_XJDLL.cpp).
- `62 82` after READ RECORD / READ BINARY is a warning, "end of record/file reached before Le
  bytes", with the data: OpenSC iso7816.c (SC_ERROR_FILE_END_REACHED, which its read paths take
  as data) and mitshell/card card/ICC.py ("end of file/record reached"). The item framing check
  (records.decode_item) still catches a record cut short.
- `6C xx` means "resend with Le = xx": OpenSC apdu.c (sc_transmit: "the card returned 0x6Cxx:
  APDU will be re-transmitted with Le set to SW2") and emv-utils tests/emv_ttl_tpdu_test.c
  (READ RECORD `00 B2 01 0C 00` -> `6C 1C` -> `00 B2 01 0C 1C`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from drivers.cardreader.errors import ProtocolViolation, TransactionFailed, error_for_sw

SW_OK = 0x9000
SW_END_REACHED = 0x6282
_READS = (0xB0, 0xB2)

# "sx1.sh." + 社会保障 in GBK: the social security application (protocols.md).
SSC_AID = b"sx1.sh." + "社会保障".encode("gbk")
PPSE_AID = b"2PAY.SYS.DDF01"
# The contact interface's directory (EMV Book 1 12.2.2; emv-utils src/emv_tal.c).
PSE_AID = b"1PAY.SYS.DDF01"
# UnionPay debit, credit, quasi-credit: RID A000000333 + PIX 010101/010102/010103
# (openemv/emv-utils src/emv_fields.c; the RID also in mitshell/card card/EMV.py).
UNIONPAY_AIDS = (
    bytes.fromhex("A000000333010101"),
    bytes.fromhex("A000000333010102"),
    bytes.fromhex("A000000333010103"),
)

# READ RECORD P2 (ISO 7816-4): how P1 addresses the record in the current EF.
P2_BY_IDENTIFIER = 0x00  # first record whose identifier (tag) is P1
P2_BY_POSITION = 0x04  # the record at position P1

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
    """SELECT by DF name (AID), asking for the FCI: `00 A4 04 00 Lc AID 00` (T=0 drops the 00)."""
    return command(0x00, 0xA4, 0x04, 0x00, aid, le=256)


def select_ef(fid: bytes, p1: int = 0x02) -> bytes:
    """SELECT an EF by its 2-byte identifier: `00 A4 02 00 02 FID` (P1 02: an EF under the
    current DF) or with P1 00 ("MF, DF or EF"), which some cards want instead."""
    if len(fid) != 2:
        raise ValueError("a file identifier is two bytes")
    if p1 not in (0x00, 0x02):
        raise ValueError(f"SELECT by file identifier takes P1 00 or 02, not {p1:02X}")
    return command(0x00, 0xA4, p1, 0x00, fid)


def read_binary(offset: int, le: int = 256) -> bytes:
    """READ BINARY from the current EF at a 15-bit offset: `00 B0 P1 P2 Le`."""
    if not 0 <= offset <= 0x7FFF:
        raise ValueError(f"offset out of range: {offset}")
    return command(0x00, 0xB0, offset >> 8, offset & 0xFF, le=le)


def read_record(record: int, p2: int = P2_BY_POSITION, le: int = 256) -> bytes:
    """READ RECORD `00 B2 P1 P2 Le` in the current EF; P2 04: P1 is a position, 00: an identifier."""
    if not 1 <= record <= 0xFE:
        raise ValueError(f"record number out of range: {record}")
    if p2 & 0x07 not in (P2_BY_IDENTIFIER, P2_BY_POSITION):
        raise ValueError(f"unsupported READ RECORD P2: {p2:02X}")
    return command(0x00, 0xB2, record, p2, le=le)


def read_record_sfi(sfi: int, position: int, le: int = 256) -> bytes:
    """READ RECORD at `position` of the short EF `sfi`: `00 B2 pos (sfi << 3 | 04) Le`."""
    if not 1 <= sfi <= 30:
        raise ValueError(f"short EF identifier out of range: {sfi}")
    return read_record(position, (sfi << 3) | P2_BY_POSITION, le)


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


def case_of(apdu: bytes) -> int:
    """The ISO 7816-4 case (1-4) of a short command APDU."""
    if len(apdu) < 4:
        raise ValueError("an APDU has at least 4 header bytes")
    if len(apdu) == 4:
        return 1
    if len(apdu) == 5:
        return 2
    lc = apdu[4]
    if lc and len(apdu) == 5 + lc:
        return 3
    if lc and len(apdu) == 6 + lc:
        return 4
    raise ValueError("not a short APDU: Lc does not match the length")


def without_le(apdu: bytes) -> bytes:
    """A case 4 command as T=0 sends it: the same bytes without the trailing Le."""
    if case_of(apdu) != 4:
        raise ValueError("only a case 4 command carries both data and Le")
    return apdu[:-1]


def for_protocol(apdu: bytes, *, t0: bool) -> bytes:
    """The command as the negotiated protocol wants it: under T=0 a case 4 goes without Le."""
    if t0 and len(apdu) > 5 and case_of(apdu) == 4:
        return without_le(apdu)
    return apdu


def describe(apdu: bytes) -> str:
    """A log-safe name for a command: CLA INS P1 P2 only, never the data."""
    return apdu[:4].hex(" ").upper()


def _first_answer(send: Transmit, apdu: bytes) -> Response:
    try:
        return Response.parse(send(apdu))
    except TransactionFailed:
        # A reader that cannot carry a case 4 command with Le (a T=0 path reported as T=1, or a
        # reader firmware quirk) fails the whole exchange; the form without Le, answered with
        # 61xx + GET RESPONSE, works on every card. Anything else is not ours to retry.
        if len(apdu) > 5 and case_of(apdu) == 4:
            return Response.parse(send(without_le(apdu)))
        raise


def exchange(send: Transmit, apdu: bytes, *, t0: bool = False) -> Response:
    """Send one command (shaped for T=0 or T=1), follow 61xx with GET RESPONSE, 6Cxx with a resend."""
    apdu = for_protocol(apdu, t0=t0)
    response = _first_answer(send, apdu)
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


def transmit(send: Transmit, apdu: bytes, *, device: str | None = None, t0: bool = False) -> bytes:
    """`exchange`, then the data on 9000 or the typed error for any other status word."""
    response = exchange(send, apdu, t0=t0)
    if response.sw == SW_END_REACHED and apdu[1] in _READS and response.data:
        return response.data
    if not response.ok:
        raise error_for_sw(response.sw, device=device, command=describe(apdu))
    return response.data
