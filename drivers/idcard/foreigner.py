"""The foreigner's permanent residence ID card (2017 version, type `I` at byte 248): record and parser.

Text block layout in bytes (UCS-2 LE, space padded), as the machine-readable data item table of the
card gives it and as reader SDKs read it:

    English name 120 | gender 2 | card number 30 | nationality 6 | Chinese name 30 |
    valid from 16 | valid to 16 | birth date 16 | card version 4 | issuing authority code 8 |
    card type 2 (`I`) | reserved 6

Sources (independent): the data item table published by a reader vendor,
https://www.afzhan.com/st170652/news_212938.html (sizes, order, `I`, GB/T 2659 nationality);
the Centerm SDK header yechangpeng/Paperless XXbgService/XXbgService/Centerm/IDCardDef.h (same
sizes); a Miaxis face-terminal app's `analysisGreenCard` (Java, byte arrays 120/2/30/6/30/16/16/
16/4/8/2/6, type read from bytes 248-249); an IDCard.dll C# sample (`GetIDCode` reads 122..152,
sex byte 120, birth date 220, authority 240..248, type 248 for `I`).

The 15-character number is 3 letters (nationality at first issue, GB/T 2659) + 4 digits
(region) + 6 digits (birth YYMMDD) + 1 digit + 1 check digit. The check digit is NOT ISO 7064
MOD 11-2: it is the ICAO 9303 7-3-1 check over the first 14 characters (letters A-Z = 10-35, sum
mod 10): howardli/CredentialKit ForeignerPermanentResidenceIdNumberProcessor (machine-readable
passport check digit over substring(0, 14); test vector KAZ110090123105) and the IDCard.dll C#
sample's GetOldIDCode (weights 7, 3, 1 mod 10); the specimen card number PAK310080010103 that a
Decard reader integration (VB) prints passes it.
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
    decode_fields,
    encode_fields,
    parse_date,
    parse_gender,
    sample_photo,
)

TYPE_CODE = "I"
# Field widths in UCS-2 characters (the sources give bytes: twice these).
FIELDS: tuple[tuple[str, int], ...] = (
    ("english_name", 60),
    ("gender", 1),
    ("number", 15),
    ("nationality", 3),
    ("chinese_name", 15),
    ("valid_from", 8),
    ("valid_to", 8),
    ("birth_date", 8),
    ("version", 2),
    ("issuer_code", 4),
    ("card_type", 1),
    ("reserved", 3),
)
_NUMBER = re.compile(r"[A-Z]{3}[0-9]{12}")
_NATIONALITY = re.compile(r"[A-Z]{3}")
_CODE = re.compile(r"[0-9A-Za-z]*")
_ENGLISH = re.compile(r"[A-Z][A-Z ,.'<-]*")
_ICAO_WEIGHTS = (7, 3, 1)


def icao_check_digit(chars: str) -> str:
    """ICAO 9303 check digit: digits as themselves, A-Z as 10-35, `<` as 0, weights 7-3-1, mod 10."""
    total = 0
    for i, char in enumerate(chars):
        if char.isascii() and char.isdigit():
            value = int(char)
        elif "A" <= char <= "Z":
            value = ord(char) - ord("A") + 10
        elif char == "<":
            value = 0
        else:
            raise CardDataError("check digit over a character that is not 0-9, A-Z or <")
        total += value * _ICAO_WEIGHTS[i % 3]
    return str(total % 10)


def foreigner_number_valid(number: str) -> bool:
    """Whether a 15-character permanent residence card number is well formed with its check digit."""
    if not _NUMBER.fullmatch(number):
        return False
    return icao_check_digit(number[:14]) == number[14]


@dataclass(frozen=True, slots=True, repr=False)
class ForeignPermanentCard(MaskedRecord):
    """One foreigner's permanent residence ID card as read; personal, so `repr` masks it."""

    DOCUMENT_TYPE: ClassVar[str] = "foreign_permanent"
    NUMBER_FIELD: ClassVar[str] = "number"

    english_name: str
    chinese_name: str
    gender: Gender
    number: str
    nationality: str
    birth_date: dt.date
    valid_from: dt.date
    valid_to: dt.date
    version: str
    issuer_code: str
    photo: bytes = field(default=b"")
    fingerprint: bytes | None = None


def parse_foreigner_block(
    text: bytes, *, photo: bytes = b"", fingerprint: bytes | None = None
) -> ForeignPermanentCard:
    """Parse an `I` text block; CardDataError (CheckDigitMismatch for the number) on a bad read."""
    values = decode_fields(text, FIELDS)
    if values["card_type"] != TYPE_CODE:
        raise CardDataError("not a foreigner's permanent residence card block")
    number = values["number"].upper()
    if not _NUMBER.fullmatch(number):
        raise CardDataError("card number is not 3 letters and 12 digits")
    if icao_check_digit(number[:14]) != number[14]:
        raise CheckDigitMismatch("card number fails its ICAO 9303 7-3-1 check digit")
    if not _ENGLISH.fullmatch(values["english_name"]):
        raise CardDataError("English name is empty or not upper-case Latin")
    if not _NATIONALITY.fullmatch(values["nationality"]):
        raise CardDataError("nationality is not a 3-letter GB/T 2659 code")
    for key in ("version", "issuer_code"):
        if not values[key].isascii() or not _CODE.fullmatch(values[key]):
            raise CardDataError(f"{key} is not alphanumeric")
    valid_from = parse_date(values["valid_from"], "valid_from")
    valid_to = parse_date(values["valid_to"], "valid_to")
    if valid_to < valid_from:
        raise CardDataError("valid_to is before valid_from")
    return ForeignPermanentCard(
        english_name=values["english_name"],
        chinese_name=values["chinese_name"],
        gender=parse_gender(values["gender"]),
        number=number,
        nationality=values["nationality"],
        birth_date=parse_date(values["birth_date"], "birth_date"),
        valid_from=valid_from,
        valid_to=valid_to,
        version=values["version"],
        issuer_code=values["issuer_code"],
        photo=photo,
        fingerprint=fingerprint,
    )


def encode_foreigner_block(card: ForeignPermanentCard) -> bytes:
    """The 256-byte text block of a card (simulators only; tests build vectors from the sources)."""
    values = {
        "english_name": card.english_name,
        "gender": card.gender.value,
        "number": card.number,
        "nationality": card.nationality,
        "chinese_name": card.chinese_name,
        "valid_from": card.valid_from.strftime("%Y%m%d"),
        "valid_to": card.valid_to.strftime("%Y%m%d"),
        "birth_date": card.birth_date.strftime("%Y%m%d"),
        "version": card.version,
        "issuer_code": card.issuer_code,
        "card_type": TYPE_CODE,
    }
    return encode_fields(values, FIELDS)


def sample_foreigner_card() -> ForeignPermanentCard:
    """An obviously fake card (specimen names, born 1900-01-01) whose number passes its check digit."""
    first14 = "ZZZ11000001010"  # ZZZ: no such country code; Beijing region; born (19)000101
    return ForeignPermanentCard(
        english_name="SPECIMEN, TEST CARD",
        chinese_name="测试样本",
        gender=Gender.FEMALE,
        number=first14 + icao_check_digit(first14),
        nationality="ZZZ",
        birth_date=dt.date(1900, 1, 1),
        valid_from=dt.date(2020, 1, 1),
        valid_to=dt.date(2040, 1, 1),
        version="20",
        issuer_code="1100",
        photo=sample_photo(1),
    )
