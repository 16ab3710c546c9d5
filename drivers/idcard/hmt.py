"""The residence permit for Hong Kong, Macao and Taiwan residents (type `J` at byte 248).

It is made to the resident ID card's technical standard: the text block keeps the resident layout
with the nation field blank and uses the former reserved bytes (UCS-2 LE, space padded):

    name 30 | gender 2 | blank 4 | birth date 16 | address 70 | ID number 36 | issuing authority 30 |
    valid from 16 | valid to 16 | pass number 18 | issue count 4 | reserved 6 | card type 2 (`J`) |
    reserved 6

Sources (independent): a Miaxis face-terminal app's `analysiGATCardInfo` (Java: 30/2/4/16/70/36/
30/16/16 then pass number 18, issue count 4, 14 reserved; type read from bytes 248-249); an
IDCard.dll C# sample (`GetPassNum` reads bytes 220..238, `GetIssueNum` 238..242); a reader
vendor's C header of parsed fields (name, sex, birth, address, ID number, authority, dates, pass
number, issue count, type flag, in that order); the reader maker's note on the machine-readable
specification, http://consesp.com/n2/465.html.

The ID number is a citizen ID number (GB 11643, ISO 7064 MOD 11-2 check character) with the
address code 810000 (Hong Kong), 820000 (Macao) or 830000 (Taiwan): consesp.com (above) and
howardli/CredentialKit HkMoResidencePermitNumberProcessor (`^8[12]0000\\d{11}[0-9X]$` plus the
ID card check digit; test vectors 810000199408230021, 820000199408230023).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import ClassVar

from drivers.idcard.identity import (
    NO_EXPIRY,
    CardDataError,
    CheckDigitMismatch,
    Gender,
    MaskedRecord,
    check_digit,
    decode_fields,
    encode_fields,
    id_number_valid,
    parse_date,
    parse_gender,
    sample_photo,
)

TYPE_CODE = "J"
# Field widths in UCS-2 characters (the sources give bytes: twice these).
FIELDS: tuple[tuple[str, int], ...] = (
    ("name", 15),
    ("gender", 1),
    ("blank", 2),
    ("birth_date", 8),
    ("address", 35),
    ("id_number", 18),
    ("issuer", 15),
    ("valid_from", 8),
    ("valid_to", 8),
    ("pass_number", 9),
    ("issue_count", 2),
    ("reserved", 3),
    ("card_type", 1),
    ("reserved2", 3),
)
REGIONS = {"810000": "hong_kong", "820000": "macao", "830000": "taiwan"}
_PASS = re.compile(r"[0-9A-Z]{8,9}")
_COUNT = re.compile(r"\d{1,2}")


@dataclass(frozen=True, slots=True, repr=False)
class HmtResidencePermit(MaskedRecord):
    """One residence permit for Hong Kong, Macao or Taiwan residents; `repr` masks everything."""

    DOCUMENT_TYPE: ClassVar[str] = "hmt_residence"
    NUMBER_FIELD: ClassVar[str] = "id_number"

    name: str
    gender: Gender
    birth_date: dt.date
    address: str
    id_number: str
    issuer: str
    valid_from: dt.date
    valid_to: dt.date | None
    travel_permit_number: str
    issue_count: int
    photo: bytes = field(default=b"")
    fingerprint: bytes | None = None

    @property
    def region(self) -> str:
        """hong_kong, macao or taiwan, from the number's address code."""
        return REGIONS[self.id_number[:6]]


def parse_hmt_block(
    text: bytes, *, photo: bytes = b"", fingerprint: bytes | None = None
) -> HmtResidencePermit:
    """Parse a `J` text block; CardDataError (CheckDigitMismatch for the number) on a bad read."""
    values = decode_fields(text, FIELDS)
    if values["card_type"] != TYPE_CODE:
        raise CardDataError("not a residence permit block for Hong Kong, Macao, Taiwan residents")
    number = values["id_number"].upper()
    if len(number) != 18 or number[:6] not in REGIONS:
        raise CardDataError("ID number does not start with 810000, 820000 or 830000")
    if not id_number_valid(number):
        raise CheckDigitMismatch("ID number fails its ISO 7064 MOD 11-2 check")
    if not values["name"]:
        raise CardDataError("name is empty")
    if not values["pass_number"].isascii() or not _PASS.fullmatch(values["pass_number"]):
        raise CardDataError("pass number is not 8 or 9 letters and digits")
    if not values["issue_count"].isascii() or not _COUNT.fullmatch(values["issue_count"]):
        raise CardDataError("issue count is not a number")
    valid_to = None if values["valid_to"] == NO_EXPIRY else parse_date(values["valid_to"], "valid_to")
    return HmtResidencePermit(
        name=values["name"],
        gender=parse_gender(values["gender"]),
        birth_date=parse_date(values["birth_date"], "birth_date"),
        address=values["address"],
        id_number=number,
        issuer=values["issuer"],
        valid_from=parse_date(values["valid_from"], "valid_from"),
        valid_to=valid_to,
        travel_permit_number=values["pass_number"],
        issue_count=int(values["issue_count"]),
        photo=photo,
        fingerprint=fingerprint,
    )


def encode_hmt_block(card: HmtResidencePermit) -> bytes:
    """The 256-byte text block of a permit (simulators only; tests build vectors from the sources)."""
    values = {
        "name": card.name,
        "gender": card.gender.value,
        "birth_date": card.birth_date.strftime("%Y%m%d"),
        "address": card.address,
        "id_number": card.id_number,
        "issuer": card.issuer,
        "valid_from": card.valid_from.strftime("%Y%m%d"),
        "valid_to": NO_EXPIRY if card.valid_to is None else card.valid_to.strftime("%Y%m%d"),
        "pass_number": card.travel_permit_number,
        "issue_count": f"{card.issue_count:02d}",
        "card_type": TYPE_CODE,
    }
    return encode_fields(values, FIELDS)


def sample_hmt_permit() -> HmtResidencePermit:
    """An obviously fake Hong Kong resident's permit (born 1900-01-01) with a valid check character."""
    first17 = "81000019000101002"
    return HmtResidencePermit(
        name="测试港人",
        gender=Gender.FEMALE,
        birth_date=dt.date(1900, 1, 1),
        address="广东省示例市测试路2号",
        id_number=first17 + check_digit(first17),
        issuer="示例市公安局",
        valid_from=dt.date(2020, 1, 1),
        valid_to=dt.date(2040, 1, 1),
        travel_permit_number="H00000000",
        issue_count=1,
        photo=sample_photo(2),
    )
