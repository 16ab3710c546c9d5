"""Card data layouts (social security items, EMV directories as BER-TLV) and their typed records; pure.

Social security card (社会保障卡). The application (AID "sx1.sh." + 社会保障 in GBK) holds linear
record files; every record is one item, `tag(1) length(1) value`. EF05 (issuer data) has items
01-07 at positions 1-7; EF06 (holder data) has 08 at position 1 and 09 at position 2. READ RECORD
addresses a record by position (P2 = 04) or by its tag (P2 = 00, ISO 7816-4): `00 B2 08 04` asks
EF06 for an eighth record, which a real card does not have (6A 83).

Items read here, with their encoding and where each fact is published:

  EF05 01 card identification code: 16 BINARY bytes, shown as hex; the first three bytes are the
          issuing region (GB/T 2260 digits). leithergit/Z390Kylin Evolis_Z390_printer/
          evolis_z390_printer.cpp reads `00 B2 01 04 00` -> `01 10 33 03 00 D1 56 00 00 05 99 11 01
          45 FF FF FF FF 90 00` and takes the first 6 hex digits as the region; yxsylyh/
          hiquotion_cpp Hardware/card/SIDCard/DeCard/SIDCardOperation.cpp reads `00 B2 01 00 12`
          (16 + 2 bytes) into a hex string; liutao2019/IBORN_HIS_ALL lib/ssse_reader.h keeps it in
          `card_id[33]` (32 hex digits).
  EF05 03 specification version, 4 ASCII bytes: Z390Kylin `03 04 33 2E 30 30` ("3.00").
  EF05 05 issue date, 06 expiry date: 4 bytes BCD YYYYMMDD (both read as hex digits by
          SIDCardOperation.cpp `00 B2 05 00 06`/`00 B2 06 00 06`; Z390Kylin writes them as hex).
          An expiry of all 00 or all FF means none.
  EF05 07 card number, 9 ASCII bytes: SIDCardOperation.cpp `00 B2 07 00 0B` as text;
          a7082633/HDOS_VC6 新疆焦阳/HD_XJDLL/HD_XJDLL.cpp `00 B2 07 2C 0B` (short EF 5) as text.
  EF06 08 social security number = resident ID number, 18 ASCII bytes: HD_XJDLL.cpp
          `00 B2 08 00 14`; Z390Kylin `00 B2 01 04 00` after selecting EF06 (position 1).
  EF06 09 name, 30 bytes GBK padded with 00: HD_XJDLL.cpp `00 B2 09 00 20`; Z390Kylin
          `00 B2 02 04 00` (position 2) and pads the name with 00 bytes when writing.

Items 02 (card type), 04 (initialising body) and EF06's 0A-0D (gender ASCII, nation binary,
birthplace BCD, birth date BCD; SIDCardOperation.cpp reads 0B-0D as hex) are not read: nothing
downstream needs them. Z390Kylin's writer puts 0A, 0B, 0D at EF06 positions 4, 5, 7 (protocols.md
guessed 3, 4, ...); the driver never depends on those positions, and the tag check plus the
identifier fallback would absorb either layout.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from drivers.cardreader.errors import CardDataError, ProtocolViolation, RecordTagMismatch

EF05 = b"\xef\x05"
EF06 = b"\xef\x06"

ITEM_CARD_IDENTIFIER = 0x01
ITEM_SPEC_VERSION = 0x03
ITEM_ISSUE_DATE = 0x05
ITEM_EXPIRY_DATE = 0x06
ITEM_CARD_NUMBER = 0x07
ITEM_ID_NUMBER = 0x08
ITEM_NAME = 0x09

CARD_IDENTIFIER_BYTES = 16

# Item -> position in its file, for the items the driver reads.
EF05_POSITIONS: dict[int, int] = {
    ITEM_CARD_IDENTIFIER: 1,
    ITEM_SPEC_VERSION: 3,
    ITEM_ISSUE_DATE: 5,
    ITEM_EXPIRY_DATE: 6,
    ITEM_CARD_NUMBER: 7,
}
EF06_POSITIONS: dict[int, int] = {ITEM_ID_NUMBER: 1, ITEM_NAME: 2}
EF05_ITEMS = tuple(EF05_POSITIONS)
EF06_ITEMS = tuple(EF06_POSITIONS)

_ID_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))


def id_check_char(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character of a resident ID number's first 17 digits."""
    if len(first17) != 17 or not first17.isdigit() or not first17.isascii():
        raise ValueError("need the 17 leading digits of an ID number")
    total = sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS, strict=True))
    value = (12 - total % 11) % 11
    return "X" if value == 10 else str(value)


def id_number_valid(number: str) -> bool:
    """Whether an 18-character ID number is well formed and its check character matches."""
    if len(number) != 18 or not number[:17].isdigit() or not number.isascii():
        return False
    return id_check_char(number[:17]) == number[17].upper()


def mask_id(value: str) -> str:
    """An ID-like number for logs and reprs: first 3 and last 4 characters, the rest `*`."""
    if len(value) <= 7:
        return "*" * len(value)
    return value[:3] + "*" * (len(value) - 7) + value[-4:]


def mask_name(value: str) -> str:
    """A name for reprs: first character, the rest `*`."""
    return value[:1] + "*" * (len(value) - 1) if value else ""


def encode_item(item: int, value: bytes) -> bytes:
    """One social security item record: item, length, value."""
    if len(value) > 255:
        raise ValueError("an item value is at most 255 bytes")
    return bytes((item, len(value))) + value


def decode_item(item: int, record: bytes) -> bytes:
    """The value of one item record, checking its tag (the item asked for) and its length."""
    if len(record) < 2:
        raise ProtocolViolation(f"item {item:02X}: record of {len(record)} byte(s)")
    if record[0] != item:
        raise RecordTagMismatch(
            f"item {item:02X}: record is tagged {record[0]:02X}", wanted=item, found=record[0]
        )
    if record[1] != len(record) - 2:
        raise ProtocolViolation(f"item {item:02X}: length byte {record[1]} but {len(record) - 2} value bytes")
    return record[2:]


def _ascii(item: int, value: bytes) -> str:
    text = value.rstrip(b"\x00 \xff").decode("ascii", errors="replace")
    if "\ufffd" in text or not text.isprintable():
        raise CardDataError(f"item {item:02X}: not printable ASCII")
    return text


def _bcd_date(item: int, value: bytes, *, open_ended: bool = False) -> dt.date | None:
    if len(value) != 4:
        raise CardDataError(f"item {item:02X}: a date is 4 BCD bytes, got {len(value)}")
    if open_ended and value in (b"\x00" * 4, b"\xff" * 4):
        return None
    digits = value.hex()
    if not digits.isdigit():
        raise CardDataError(f"item {item:02X}: date is not BCD")
    try:
        return dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError as err:
        raise CardDataError(f"item {item:02X}: not a calendar date") from err


def bcd_date(value: dt.date) -> bytes:
    """A date as 4 bytes of BCD YYYYMMDD (the card's format)."""
    return bytes.fromhex(value.strftime("%Y%m%d"))


def _card_identifier(value: bytes) -> tuple[str, str]:
    """(identifier as hex, issuing region) from item 01's 16 binary bytes."""
    if len(value) != CARD_IDENTIFIER_BYTES:
        raise CardDataError(
            f"item 01: card identification code is {CARD_IDENTIFIER_BYTES} bytes, got {len(value)}"
        )
    identifier = value.hex().upper()
    region = identifier[:6]
    if not region.isdigit():
        raise CardDataError("card identification code does not start with a BCD region code")
    return identifier, region


def _name(value: bytes) -> str:
    try:
        name = value.rstrip(b"\x00 \xff").decode("gbk").strip()
    except UnicodeDecodeError as err:
        raise CardDataError("name is not valid GBK") from err
    if not name:
        raise CardDataError("name is empty")
    if not name.isprintable():
        raise CardDataError("name holds control characters")
    return name


@dataclass(frozen=True, slots=True)
class SocialSecurityCard:
    """What the social security card tells without a PIN; repr masks the personal fields."""

    card_identifier: str  # 32 hex digits
    card_number: str
    issuing_region: str
    spec_version: str
    issued_on: dt.date
    expires_on: dt.date | None
    id_number: str
    name: str

    def __repr__(self) -> str:
        return (
            f"SocialSecurityCard(card_identifier={mask_id(self.card_identifier)!r}, "
            f"card_number={mask_id(self.card_number)!r}, "
            f"issuing_region={self.issuing_region!r}, spec_version={self.spec_version!r}, "
            f"issued_on={self.issued_on.isoformat()}, "
            f"expires_on={self.expires_on.isoformat() if self.expires_on else None}, "
            f"id_number={mask_id(self.id_number)!r}, name={mask_name(self.name)!r})"
        )

    __str__ = __repr__

    @classmethod
    def from_items(cls, items: dict[int, bytes]) -> SocialSecurityCard:
        """Build the record from item values (EF05 + EF06), validating each item's encoding."""
        missing = [f"{i:02X}" for i in (*EF05_ITEMS, *EF06_ITEMS) if i not in items]
        if missing:
            raise CardDataError(f"missing items {', '.join(missing)}")
        identifier, region = _card_identifier(items[ITEM_CARD_IDENTIFIER])
        id_number = _ascii(ITEM_ID_NUMBER, items[ITEM_ID_NUMBER]).upper()
        if not id_number_valid(id_number):
            raise CardDataError("ID number fails its check character (bad read)")
        card_number = _ascii(ITEM_CARD_NUMBER, items[ITEM_CARD_NUMBER])
        if not card_number:
            raise CardDataError("card number is empty")
        issued_on = _bcd_date(ITEM_ISSUE_DATE, items[ITEM_ISSUE_DATE])
        if issued_on is None:
            raise CardDataError("issue date is missing")
        return cls(
            card_identifier=identifier,
            card_number=card_number,
            issuing_region=region,
            spec_version=_ascii(ITEM_SPEC_VERSION, items[ITEM_SPEC_VERSION]),
            issued_on=issued_on,
            expires_on=_bcd_date(ITEM_EXPIRY_DATE, items[ITEM_EXPIRY_DATE], open_ended=True),
            id_number=id_number,
            name=_name(items[ITEM_NAME]),
        )


BankSource = Literal["ppse", "pse", "aid"]


@dataclass(frozen=True, slots=True)
class BankCardInfo:
    """A bank card's chosen payment application: AID (hex), label and how it was found; never the PAN.

    `source`: "ppse" (contactless directory 2PAY.SYS.DDF01), "pse" (contact directory
    1PAY.SYS.DDF01 and its records) or "aid" (no directory: a known AID answered SELECT).
    """

    aid: str
    label: str
    source: BankSource


# --- BER-TLV, as EMV uses it for the PPSE FCI ---

TAG_FCI = 0x6F
TAG_FCI_PROPRIETARY = 0xA5
TAG_FCI_ISSUER_DISCRETIONARY = 0xBF0C
TAG_DIRECTORY_ENTRY = 0x61
TAG_AID = 0x4F
TAG_LABEL = 0x50
TAG_PRIORITY = 0x87
TAG_SFI = 0x88
TAG_DF_NAME = 0x84
TAG_RECORD_TEMPLATE = 0x70


def iter_tlv(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(tag, value) pairs at one level of BER-TLV; skips 00/FF padding between objects."""
    i = 0
    n = len(data)
    while i < n:
        if data[i] in (0x00, 0xFF):
            i += 1
            continue
        tag = data[i]
        i += 1
        if tag & 0x1F == 0x1F:
            while True:
                if i >= n:
                    raise ProtocolViolation("TLV tag runs past the data")
                tag = (tag << 8) | data[i]
                i += 1
                if not data[i - 1] & 0x80:
                    break
                if tag > 0xFFFFFF:
                    raise ProtocolViolation("TLV tag longer than 3 bytes")
        if i >= n:
            raise ProtocolViolation(f"TLV {tag:X} has no length")
        length = data[i]
        i += 1
        if length & 0x80:
            count = length & 0x7F
            if count == 0 or count > 3 or i + count > n:
                raise ProtocolViolation(f"TLV {tag:X} has a bad length field")
            length = int.from_bytes(data[i : i + count], "big")
            i += count
        if i + length > n:
            raise ProtocolViolation(f"TLV {tag:X} runs past the data")
        yield tag, data[i : i + length]
        i += length


def encode_tlv(tag: int, value: bytes) -> bytes:
    """One BER-TLV object (tag up to 3 bytes, definite length)."""
    tag_bytes = tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")
    n = len(value)
    if n < 0x80:
        length = bytes((n,))
    elif n <= 0xFF:
        length = b"\x81" + bytes((n,))
    else:
        length = b"\x82" + n.to_bytes(2, "big")
    return tag_bytes + length + value


def _find(data: bytes, tag: int) -> bytes | None:
    for t, v in iter_tlv(data):
        if t == tag:
            return v
    return None


def _entry(entry: bytes, where: str) -> tuple[int, str, str]:
    """(priority, AID hex, label) of one directory entry (the value of an `61` template)."""
    aid = _find(entry, TAG_AID)
    if aid is None or not 5 <= len(aid) <= 16:
        raise ProtocolViolation(f"{where} directory entry without a valid AID")
    raw_label = _find(entry, TAG_LABEL) or b""
    label = raw_label.decode("ascii", errors="replace").strip()
    raw_priority = _find(entry, TAG_PRIORITY)
    # Priority 1 is highest; a missing one ranks after all numbered ones (EMV Book 1 12.4).
    priority = (raw_priority[0] & 0x0F if raw_priority else 0) or 16
    return priority, aid.hex().upper(), label


def _directory_entries(data: bytes, where: str) -> list[tuple[int, str, str]]:
    return [_entry(value, where) for tag, value in iter_tlv(data) if tag == TAG_DIRECTORY_ENTRY]


def choose_application(entries: list[tuple[int, str, str]], source: BankSource) -> BankCardInfo:
    """The highest-priority (lowest number) entry; the first listed wins a tie."""
    if not entries:
        raise ProtocolViolation(f"{source.upper()} lists no application")
    _, aid_hex, label = min(entries, key=lambda e: e[0])
    return BankCardInfo(aid=aid_hex, label=label, source=source)


def parse_ppse(fci: bytes) -> BankCardInfo:
    """The highest-priority application (AID + label) from a PPSE FCI (6F/A5/BF0C/61...)."""
    template = _find(fci, TAG_FCI)
    proprietary = _find(template, TAG_FCI_PROPRIETARY) if template is not None else None
    directory = _find(proprietary, TAG_FCI_ISSUER_DISCRETIONARY) if proprietary is not None else None
    if directory is None:
        raise ProtocolViolation("PPSE answer is not an FCI with a directory (6F/A5/BF0C)")
    return choose_application(_directory_entries(directory, "PPSE"), "ppse")


def parse_pse_sfi(fci: bytes) -> int:
    """The short EF of the PSE directory (tag 88 in 6F/A5), 1-30 (EMV Book 1 11.3.4)."""
    template = _find(fci, TAG_FCI)
    proprietary = _find(template, TAG_FCI_PROPRIETARY) if template is not None else None
    sfi = _find(proprietary, TAG_SFI) if proprietary is not None else None
    if sfi is None or len(sfi) != 1 or not 1 <= sfi[0] <= 30:
        raise ProtocolViolation("PSE answer has no valid directory SFI (6F/A5/88)")
    return sfi[0]


def parse_pse_record(record: bytes) -> list[tuple[int, str, str]]:
    """The directory entries of one PSE record (a `70` template of `61` entries)."""
    template = _find(record, TAG_RECORD_TEMPLATE)
    if template is None:
        raise ProtocolViolation("PSE record is not a 70 template")
    return _directory_entries(template, "PSE")


def parse_application_fci(fci: bytes, aid: bytes) -> BankCardInfo:
    """A selected payment application's AID (from 84, else the one asked for) and label (50)."""
    template = _find(fci, TAG_FCI)
    if template is None:
        raise ProtocolViolation("application answer is not an FCI (6F)")
    name = _find(template, TAG_DF_NAME) or aid
    proprietary = _find(template, TAG_FCI_PROPRIETARY)
    raw_label = (_find(proprietary, TAG_LABEL) if proprietary is not None else None) or b""
    label = raw_label.decode("ascii", errors="replace").strip()
    return BankCardInfo(aid=name.hex().upper(), label=label, source="aid")
