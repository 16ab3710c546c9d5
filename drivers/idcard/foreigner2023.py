"""The foreigner's permanent residence ID card, 2023 version (type `Y` at byte 248): record and parser.

Text block layout in bytes (UCS-2 LE, space padded):

    Chinese name 30 | gender 2 | renewal count 4 | birth date 16 | English name 70 (characters
    1-35) | card number 36 | reserved 30 | valid from 16 | valid to 16 | English name 22
    (characters 36-46) | nationality 6 | card type 2 (`Y`) | link to the 2017 card's number 6

Sources (independent code): a PC/SC passport and ID reader library's C header, struct
`tagIDCardInfor2023` / `t_idforeigner2023` (cnName 30, Sex 2, chgNum 4, birthday 16, enName 70,
IDSn 36, rfuData1 30, startDate 16, endDate 16, enNameEx 22, nation 6, typeFlag 2 "Y", assID 6),
with its parser `foreignerIDInfoSave_new` joining enName and enNameEx; an IDCard.dll C# sample
reading the same offsets (`GetNumberOfCertificateRenewals` 32..36, `GetEngName` 52..122,
`GetIDCode` 122..158 for "Y", `GetEnglishNameStandBy` 220..242, `GetCountryOrRegionCode`
242..248, `GetNumberFlag` 248..250, `GetNumberAssociation` 250..256). A Decard reader
integration (VB) prints the specimen card's fields in the same order (Chinese name, sex, ...,
birth date, English name, number 931586198001010028, 20230808, 20330807).

The 18-digit number: `9` (foreigner), 2-digit province of acceptance, 3-digit numeric nationality
code, birth date YYYYMMDD, 3-digit sequence, and an ISO 7064 MOD 11-2 check character "the same as
the citizen ID number": the National Immigration Administration's adaptation rules as reposted at
http://www.eastcoms.com/service/pro/840.html (and http://gzwubang.com/service/pro/840.html), and
howardli/CredentialKit ForeignerPermanentResidenceIdNumberProcessor (`9\\d{16}[0-9X]` checked with the
ID card check digit; test vector 911398199012310021). The rules' own examples 932682198501010017
and 911124198108030024 pass it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import ClassVar

from drivers.idcard.identity import (
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

TYPE_CODE = "Y"
# Field widths in UCS-2 characters (the sources give bytes: twice these).
FIELDS: tuple[tuple[str, int], ...] = (
    ("chinese_name", 15),
    ("gender", 1),
    ("renewals", 2),
    ("birth_date", 8),
    ("english_name", 35),
    ("number", 18),
    ("reserved", 15),
    ("valid_from", 8),
    ("valid_to", 8),
    ("english_name_more", 11),
    ("nationality", 3),
    ("card_type", 1),
    ("previous_link", 3),
)
_NUMBER = re.compile(r"9[0-9]{16}[0-9X]")
_NATIONALITY = re.compile(r"[A-Z]{3}")
_ENGLISH = re.compile(r"[A-Z][A-Z ,.'<-]*")
_DIGITS = re.compile(r"[0-9]*")


@dataclass(frozen=True, slots=True, repr=False)
class ForeignPermanentCard2023(MaskedRecord):
    """One 2023 foreigner's permanent residence ID card as read; `repr` masks everything personal."""

    DOCUMENT_TYPE: ClassVar[str] = "foreign_permanent_2023"
    NUMBER_FIELD: ClassVar[str] = "number"

    chinese_name: str
    english_name: str
    gender: Gender
    number: str
    nationality: str
    birth_date: dt.date
    valid_from: dt.date
    valid_to: dt.date
    renewals: int
    previous_link: str  # digits that, with this card's data, rebuild the 2017 card's number
    photo: bytes = field(default=b"")
    fingerprint: bytes | None = None


def parse_foreigner2023_block(
    text: bytes, *, photo: bytes = b"", fingerprint: bytes | None = None
) -> ForeignPermanentCard2023:
    """Parse a `Y` text block; CardDataError (CheckDigitMismatch for the number) on a bad read."""
    values = decode_fields(text, FIELDS)
    if values["card_type"] != TYPE_CODE:
        raise CardDataError("not a 2023 foreigner's permanent residence card block")
    number = values["number"].upper()
    if not _NUMBER.fullmatch(number):
        raise CardDataError("card number is not 9 and 17 more digits")
    if not id_number_valid(number):
        raise CheckDigitMismatch("card number fails its ISO 7064 MOD 11-2 check")
    english = values["english_name"]
    if values["english_name_more"]:
        english = (english.ljust(35) + values["english_name_more"]).rstrip()
    if not _ENGLISH.fullmatch(english):
        raise CardDataError("English name is empty or not upper-case Latin")
    if not _NATIONALITY.fullmatch(values["nationality"]):
        raise CardDataError("nationality is not a 3-letter code")
    for key in ("renewals", "previous_link"):
        if not values[key].isascii() or not _DIGITS.fullmatch(values[key]):
            raise CardDataError(f"{key} is not digits")
    valid_from = parse_date(values["valid_from"], "valid_from")
    valid_to = parse_date(values["valid_to"], "valid_to")
    if valid_to < valid_from:
        raise CardDataError("valid_to is before valid_from")
    return ForeignPermanentCard2023(
        chinese_name=values["chinese_name"],
        english_name=english,
        gender=parse_gender(values["gender"]),
        number=number,
        nationality=values["nationality"],
        birth_date=parse_date(values["birth_date"], "birth_date"),
        valid_from=valid_from,
        valid_to=valid_to,
        renewals=int(values["renewals"] or "0"),
        previous_link=values["previous_link"],
        photo=photo,
        fingerprint=fingerprint,
    )


def encode_foreigner2023_block(card: ForeignPermanentCard2023) -> bytes:
    """The 256-byte text block of a card (simulators only; tests build vectors from the sources)."""
    values = {
        "chinese_name": card.chinese_name,
        "gender": card.gender.value,
        "renewals": f"{card.renewals:02d}",
        "birth_date": card.birth_date.strftime("%Y%m%d"),
        "english_name": card.english_name[:35],
        "number": card.number,
        "valid_from": card.valid_from.strftime("%Y%m%d"),
        "valid_to": card.valid_to.strftime("%Y%m%d"),
        "english_name_more": card.english_name[35:],
        "nationality": card.nationality,
        "card_type": TYPE_CODE,
        "previous_link": card.previous_link,
    }
    return encode_fields(values, FIELDS)


def sample_foreigner2023_card() -> ForeignPermanentCard2023:
    """An obviously fake 2023 card (specimen names, born 1900-01-01) whose number passes MOD 11-2."""
    first17 = "91100019000101002"  # 9, Beijing (11), nationality 000 (none), 1900-01-01, 002
    return ForeignPermanentCard2023(
        chinese_name="测试样本",
        english_name="SPECIMEN, TEST CARD WITH A LONG ENGLISH NAME",
        gender=Gender.FEMALE,
        number=first17 + check_digit(first17),
        nationality="ZZZ",
        birth_date=dt.date(1900, 1, 1),
        valid_from=dt.date(2024, 1, 1),
        valid_to=dt.date(2040, 1, 1),
        renewals=0,
        previous_link="",
        photo=sample_photo(3),
    )
