"""Which document a SAM_V text block holds (the type at byte 248) and its parser.

The byte pair at 248-249 of the 256-byte text block names the card type: blank on the resident
ID card (it lies in the resident card's reserved bytes), `I` on the foreigner's permanent
residence ID card (2017), `J` on the residence permit for Hong Kong, Macao and Taiwan residents,
`Y` on the 2023 foreigner's permanent residence ID card. Sources: a Miaxis face-terminal app
(`isGreenCard` reads bytes 248-249: "" resident, "I", "J"), an IDCard.dll C# sample
(`GetString(pucCHMsg, 248, 2)` compared with "I" and "Y"), a PC/SC reader library's
`t_idforeigner2023` (typeFlag "Y" at 248), and the data item tables in foreigner.py, hmt.py and
foreigner2023.py. Any other type is answered with UnsupportedCardType, never a guessed read.
"""

from __future__ import annotations

from drivers.idcard.foreigner import (
    ForeignPermanentCard,
    encode_foreigner_block,
    parse_foreigner_block,
)
from drivers.idcard.foreigner2023 import (
    ForeignPermanentCard2023,
    encode_foreigner2023_block,
    parse_foreigner2023_block,
)
from drivers.idcard.frames import TEXT_LEN
from drivers.idcard.hmt import HmtResidencePermit, encode_hmt_block, parse_hmt_block
from drivers.idcard.identity import CardDataError, IdCard, encode_text_block, parse_text_block

TYPE_OFFSET = 248
IdDocument = IdCard | ForeignPermanentCard | HmtResidencePermit | ForeignPermanentCard2023


class UnsupportedCardType(CardDataError):
    """The text block names a card type this driver does not parse (its code is not personal)."""

    def __init__(self, code: str) -> None:
        super().__init__(f"card type {code} is not supported")
        self.code = code


def type_code(text: bytes) -> str:
    """The card type named at byte 248: a letter, " " for blank (resident), or `0x....` for other bytes."""
    if len(text) != TEXT_LEN:
        raise CardDataError(f"text block is {len(text)} bytes, expected {TEXT_LEN}")
    pair = text[TYPE_OFFSET : TYPE_OFFSET + 2]
    if pair in (b" \x00", b"\x00\x00"):
        return " "
    if pair[1] == 0 and (0x41 <= pair[0] <= 0x5A):
        return chr(pair[0])
    return "0x" + pair.hex()


def parse_card(text: bytes, *, photo: bytes = b"", fingerprint: bytes | None = None) -> IdDocument:
    """Parse a text block by its type; UnsupportedCardType for a type not parsed here."""
    code = type_code(text)
    if code == " ":
        return parse_text_block(text, photo=photo, fingerprint=fingerprint)
    if code == "I":
        return parse_foreigner_block(text, photo=photo, fingerprint=fingerprint)
    if code == "J":
        return parse_hmt_block(text, photo=photo, fingerprint=fingerprint)
    if code == "Y":
        return parse_foreigner2023_block(text, photo=photo, fingerprint=fingerprint)
    raise UnsupportedCardType(code)


def encode_card(card: IdDocument) -> bytes:
    """The text block of any supported document (simulators)."""
    if isinstance(card, ForeignPermanentCard):
        return encode_foreigner_block(card)
    if isinstance(card, HmtResidencePermit):
        return encode_hmt_block(card)
    if isinstance(card, ForeignPermanentCard2023):
        return encode_foreigner2023_block(card)
    return encode_text_block(card)
