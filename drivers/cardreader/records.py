"""Card data layouts (social security items, PPSE FCI as BER-TLV) and their typed records; pure.

Social security card (the per-item layout used by the national card spec and by our virtual card):
every READ RECORD `00 B2 <item> 04 00` answers one item as `item(1) length(1) value`, and a card
asked with the wrong Le answers 6Cxx with the right one. Items read here:

EF05, issuer data
  01  card identifier, 16 ASCII chars; its first 6 digits are the issuing region (GB/T 2260)
  03  specification version, 4 ASCII chars (e.g. "3.00")
  05  issue date, 4 bytes BCD YYYYMMDD
  06  expiry date, 4 bytes BCD YYYYMMDD (all 0x00 or 0xFF: no expiry)
  07  card number, 9 ASCII chars
EF06, holder data
  08  social security number = the 18-character resident ID number, ASCII
  09  name, GBK, padded to 30 bytes with 0x00 or spaces

Items 02 (card type), 04 (initialising body), 0A-0D (gender, nation, birth place, birth date)
exist on real cards; the driver does not read them because nothing downstream needs them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from drivers.cardreader.errors import CardDataError, ProtocolViolation

EF05 = b"\xef\x05"
EF06 = b"\xef\x06"

ITEM_CARD_IDENTIFIER = 0x01
ITEM_SPEC_VERSION = 0x03
ITEM_ISSUE_DATE = 0x05
ITEM_EXPIRY_DATE = 0x06
ITEM_CARD_NUMBER = 0x07
ITEM_ID_NUMBER = 0x08
ITEM_NAME = 0x09

EF05_ITEMS = (
    ITEM_CARD_IDENTIFIER,
    ITEM_SPEC_VERSION,
    ITEM_ISSUE_DATE,
    ITEM_EXPIRY_DATE,
    ITEM_CARD_NUMBER,
)
EF06_ITEMS = (ITEM_ID_NUMBER, ITEM_NAME)

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
    """The value of one item record, checking its item number and length."""
    if len(record) < 2:
        raise ProtocolViolation(f"item {item:02X}: record of {len(record)} byte(s)")
    if record[0] != item:
        raise ProtocolViolation(f"item {item:02X}: record is tagged {record[0]:02X}")
    if record[1] != len(record) - 2:
        raise ProtocolViolation(f"item {item:02X}: length byte {record[1]} but {len(record) - 2} value bytes")
    return record[2:]


def _ascii(item: int, value: bytes) -> str:
    text = value.rstrip(b"\x00 ").decode("ascii", errors="replace")
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


@dataclass(frozen=True, slots=True)
class SocialSecurityCard:
    """What the social security card tells without a PIN; repr masks the personal fields."""

    card_number: str
    issuing_region: str
    spec_version: str
    issued_on: dt.date
    expires_on: dt.date | None
    id_number: str
    name: str

    def __repr__(self) -> str:
        return (
            f"SocialSecurityCard(card_number={mask_id(self.card_number)!r}, "
            f"issuing_region={self.issuing_region!r}, spec_version={self.spec_version!r}, "
            f"issued_on={self.issued_on.isoformat()}, "
            f"expires_on={self.expires_on.isoformat() if self.expires_on else None}, "
            f"id_number={mask_id(self.id_number)!r}, name={mask_name(self.name)!r})"
        )

    __str__ = __repr__

    @classmethod
    def from_items(cls, items: dict[int, bytes]) -> SocialSecurityCard:
        """Build the record from item values (EF05 + EF06), validating each."""
        missing = [f"{i:02X}" for i in (*EF05_ITEMS, *EF06_ITEMS) if i not in items]
        if missing:
            raise CardDataError(f"missing items {', '.join(missing)}")
        identifier = _ascii(ITEM_CARD_IDENTIFIER, items[ITEM_CARD_IDENTIFIER])
        region = identifier[:6]
        if len(region) != 6 or not region.isdigit():
            raise CardDataError("card identifier does not start with a 6-digit region code")
        id_number = _ascii(ITEM_ID_NUMBER, items[ITEM_ID_NUMBER]).upper()
        if not id_number_valid(id_number):
            raise CardDataError("ID number fails its check character (bad read)")
        try:
            name = items[ITEM_NAME].rstrip(b"\x00 ").decode("gbk").strip()
        except UnicodeDecodeError as err:
            raise CardDataError("name is not valid GBK") from err
        if not name:
            raise CardDataError("name is empty")
        card_number = _ascii(ITEM_CARD_NUMBER, items[ITEM_CARD_NUMBER])
        if not card_number:
            raise CardDataError("card number is empty")
        issued_on = _bcd_date(ITEM_ISSUE_DATE, items[ITEM_ISSUE_DATE])
        if issued_on is None:
            raise CardDataError("issue date is missing")
        return cls(
            card_number=card_number,
            issuing_region=region,
            spec_version=_ascii(ITEM_SPEC_VERSION, items[ITEM_SPEC_VERSION]),
            issued_on=issued_on,
            expires_on=_bcd_date(ITEM_EXPIRY_DATE, items[ITEM_EXPIRY_DATE], open_ended=True),
            id_number=id_number,
            name=name,
        )


@dataclass(frozen=True, slots=True)
class BankCardInfo:
    """A bank card's chosen payment application: AID (hex) and label; never the PAN."""

    aid: str
    label: str


# --- BER-TLV, as EMV uses it for the PPSE FCI ---

TAG_FCI = 0x6F
TAG_FCI_PROPRIETARY = 0xA5
TAG_FCI_ISSUER_DISCRETIONARY = 0xBF0C
TAG_DIRECTORY_ENTRY = 0x61
TAG_AID = 0x4F
TAG_LABEL = 0x50
TAG_PRIORITY = 0x87


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


def parse_ppse(fci: bytes) -> BankCardInfo:
    """The highest-priority application (AID + label) from a PPSE FCI."""
    template = _find(fci, TAG_FCI)
    proprietary = _find(template, TAG_FCI_PROPRIETARY) if template is not None else None
    directory = _find(proprietary, TAG_FCI_ISSUER_DISCRETIONARY) if proprietary is not None else None
    if directory is None:
        raise ProtocolViolation("PPSE answer is not an FCI with a directory (6F/A5/BF0C)")
    entries: list[tuple[int, str, str]] = []
    for tag, entry in iter_tlv(directory):
        if tag != TAG_DIRECTORY_ENTRY:
            continue
        aid = _find(entry, TAG_AID)
        if aid is None or not 5 <= len(aid) <= 16:
            raise ProtocolViolation("PPSE directory entry without a valid AID")
        raw_label = _find(entry, TAG_LABEL) or b""
        label = raw_label.decode("ascii", errors="replace").strip()
        raw_priority = _find(entry, TAG_PRIORITY)
        # Priority 1 is highest; a missing one ranks after all numbered ones (EMV Book 1 12.4).
        priority = raw_priority[0] & 0x0F if raw_priority else 16
        entries.append((priority or 16, aid.hex().upper(), label))
    if not entries:
        raise ProtocolViolation("PPSE lists no application")
    _, aid_hex, label = min(entries, key=lambda e: e[0])
    return BankCardInfo(aid=aid_hex, label=label)
