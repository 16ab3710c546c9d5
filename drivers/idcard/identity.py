"""The resident ID card record: text-block parsing, nation and gender codes, the ID check digit.

The 256-byte text block (GA/T 467 reply to 30 01, UCS-2 LE, space padded) and its fields are in
../shared/protocols.md. Other holders' cards (foreigner's permanent residence card `I` and its 2023
version `Y`, residence permit for Hong Kong, Macao and Taiwan residents `J`) share the block size
and carry their type at byte 248; they are parsed in foreigner.py, foreigner2023.py and hmt.py,
dispatched by card_types.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar

from drivers.idcard.frames import PHOTO_LEN, TEXT_LEN

# Field widths in UCS-2 characters (protocols.md gives bytes: twice these).
_FIELDS: tuple[tuple[str, int], ...] = (
    ("name", 15),
    ("gender", 1),
    ("nation", 2),
    ("birth_date", 8),
    ("address", 35),
    ("id_number", 18),
    ("issuer", 15),
    ("valid_from", 8),
    ("valid_to", 8),
    ("reserved", 18),
)
NO_EXPIRY = "长期"
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"

# GB 3304 nation codes.
NATIONS: dict[str, str] = {
    f"{i:02d}": name
    for i, name in enumerate(
        [
            "汉",
            "蒙古",
            "回",
            "藏",
            "维吾尔",
            "苗",
            "彝",
            "壮",
            "布依",
            "朝鲜",
            "满",
            "侗",
            "瑶",
            "白",
            "土家",
            "哈尼",
            "哈萨克",
            "傣",
            "黎",
            "傈僳",
            "佤",
            "畲",
            "高山",
            "拉祜",
            "水",
            "东乡",
            "纳西",
            "景颇",
            "柯尔克孜",
            "土",
            "达斡尔",
            "仫佬",
            "羌",
            "布朗",
            "撒拉",
            "毛南",
            "仡佬",
            "锡伯",
            "阿昌",
            "普米",
            "塔吉克",
            "怒",
            "乌孜别克",
            "俄罗斯",
            "鄂温克",
            "德昂",
            "保安",
            "裕固",
            "京",
            "塔塔尔",
            "独龙",
            "鄂伦春",
            "赫哲",
            "门巴",
            "珞巴",
            "基诺",
        ],
        start=1,
    )
}
NATIONS["97"] = "其他"
NATIONS["98"] = "外国血统中国籍人士"


class Gender(enum.StrEnum):
    """GB/T 2261.1 sex codes as stored on the card."""

    UNKNOWN = "0"
    MALE = "1"
    FEMALE = "2"
    UNSPECIFIED = "9"


class CardDataError(ValueError):
    """Text from the card that is not a valid identity (a bad read, not an identity)."""


class CheckDigitMismatch(CardDataError):
    """The ID number's last character is not its ISO 7064 MOD 11-2 check character."""


def check_digit(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character for the first 17 digits of an ID number."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise CardDataError("an ID number starts with 17 digits")
    total = sum(int(c) * w for c, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def id_number_valid(number: str) -> bool:
    """Whether an 18-character ID number carries the right check character."""
    if len(number) != 18:
        return False
    try:
        return check_digit(number[:17]) == number[17].upper()
    except CardDataError:
        return False


def mask_id(number: str) -> str:
    """First 3 and last 4 characters kept, the rest `*` (the project's masking rule)."""
    if len(number) <= 7:
        return "*" * len(number)
    return number[:3] + "*" * (len(number) - 7) + number[-4:]


class MaskedRecord:
    """What every card record shares: its number is the holder's subject, and its `repr` (also
    `str`) shows no personal data: the number masked, photo and fingerprint by size, every other
    field (including any added later) as `***`. Records are dataclasses with `repr=False`."""

    __slots__ = ()
    DOCUMENT_TYPE: ClassVar[str]
    NUMBER_FIELD: ClassVar[str]

    @property
    def document_type(self) -> str:
        """Which document this is (the type byte pair at text offset 248 says)."""
        return self.DOCUMENT_TYPE

    @property
    def document_number(self) -> str:
        """The number the holder is known by (the auth subject, masked wherever it is shown)."""
        number: str = getattr(self, self.NUMBER_FIELD)
        return number

    @property
    def masked_number(self) -> str:
        return mask_id(self.document_number)

    def __repr__(self) -> str:
        shown = [f"{f.name}={self._shown(f.name, getattr(self, f.name))}" for f in dataclasses.fields(self)]  # type: ignore[arg-type]
        return f"{type(self).__name__}({', '.join(shown)})"

    def _shown(self, name: str, value: Any) -> str:
        if name == self.NUMBER_FIELD:
            return self.masked_number
        if name in ("photo", "fingerprint"):
            return "none" if value is None else f"{len(value)} bytes"
        return "***"

    __str__ = __repr__


@dataclass(frozen=True, slots=True, repr=False)
class IdCard(MaskedRecord):
    """One resident ID card as read; personal throughout, so `repr` masks every field."""

    DOCUMENT_TYPE: ClassVar[str] = "resident"
    NUMBER_FIELD: ClassVar[str] = "id_number"

    name: str
    gender: Gender
    nation: str
    birth_date: dt.date
    address: str
    id_number: str
    issuer: str
    valid_from: dt.date
    valid_to: dt.date | None
    photo: bytes = field(default=b"")
    fingerprint: bytes | None = None

    @property
    def masked_id(self) -> str:
        return self.masked_number

    @property
    def nation_code(self) -> str:
        for code, name in NATIONS.items():
            if name == self.nation:
                return code
        raise CardDataError("nation not in GB 3304")


def parse_date(text: str, what: str) -> dt.date:
    """A YYYYMMDD field as a date; CardDataError for anything else."""
    if len(text) != 8 or not text.isascii() or not text.isdigit():
        raise CardDataError(f"{what} is not a YYYYMMDD date")
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError as err:
        raise CardDataError(f"{what} is not a calendar date") from err


def decode_fields(text: bytes, fields: tuple[tuple[str, int], ...]) -> dict[str, str]:
    """Split a 256-byte UCS-2 LE block into named fields (widths in characters), padding stripped."""
    if len(text) != TEXT_LEN:
        raise CardDataError(f"text block is {len(text)} bytes, expected {TEXT_LEN}")
    try:
        chars = text.decode("utf-16-le")
    except UnicodeDecodeError as err:
        raise CardDataError("text block is not UCS-2") from err
    values: dict[str, str] = {}
    offset = 0
    for name, width in fields:
        values[name] = chars[offset : offset + width].rstrip(" \x00")
        offset += width
    return values


def encode_fields(values: dict[str, str], fields: tuple[tuple[str, int], ...]) -> bytes:
    """The 256-byte UCS-2 LE block for named field values, each space padded to its width."""
    chars = ""
    for name, width in fields:
        value = values.get(name, "")
        if len(value) > width:
            raise CardDataError(f"{name} longer than {width} characters")
        chars += value.ljust(width)
    return chars.encode("utf-16-le")


def parse_gender(code: str) -> Gender:
    """A GB/T 2261.1 sex code; CardDataError for anything else."""
    try:
        return Gender(code)
    except ValueError as err:
        raise CardDataError("gender code is not 0, 1, 2 or 9") from err


def parse_text_block(text: bytes, *, photo: bytes = b"", fingerprint: bytes | None = None) -> IdCard:
    """Parse the 256-byte UCS-2 LE text block; CardDataError on anything that is not an identity."""
    values = decode_fields(text, _FIELDS)
    gender = parse_gender(values["gender"])
    nation = NATIONS.get(values["nation"])
    if nation is None:
        raise CardDataError("nation code is not in GB 3304")
    number = values["id_number"].upper()
    if not id_number_valid(number):
        raise CheckDigitMismatch("ID number fails its ISO 7064 MOD 11-2 check")
    if not values["name"]:
        raise CardDataError("name is empty")
    valid_to = None if values["valid_to"] == NO_EXPIRY else parse_date(values["valid_to"], "valid_to")
    return IdCard(
        name=values["name"],
        gender=gender,
        nation=nation,
        birth_date=parse_date(values["birth_date"], "birth_date"),
        address=values["address"],
        id_number=number,
        issuer=values["issuer"],
        valid_from=parse_date(values["valid_from"], "valid_from"),
        valid_to=valid_to,
        photo=photo,
        fingerprint=fingerprint,
    )


def encode_text_block(card: IdCard, *, nation_code: str | None = None) -> bytes:
    """The 256-byte text block for a card (simulators and test fixtures)."""
    values = {
        "name": card.name,
        "gender": card.gender.value,
        "nation": nation_code if nation_code is not None else card.nation_code,
        "birth_date": card.birth_date.strftime("%Y%m%d"),
        "address": card.address,
        "id_number": card.id_number,
        "issuer": card.issuer,
        "valid_from": card.valid_from.strftime("%Y%m%d"),
        "valid_to": NO_EXPIRY if card.valid_to is None else card.valid_to.strftime("%Y%m%d"),
        "reserved": "",
    }
    return encode_fields(values, _FIELDS)


def sample_photo(seed: int = 0) -> bytes:
    """Deterministic stand-in for a WLT photo (the real format is a vendor secret; kept opaque)."""
    return bytes((i * 31 + seed) & 0xFF for i in range(PHOTO_LEN))


def sample_card(*, valid_to: dt.date | None = dt.date(2040, 1, 1)) -> IdCard:
    """An obviously fake identity with a valid check digit (born 1900-01-01, test names)."""
    first17 = "11010119000101001"
    return IdCard(
        name="测试用户",
        gender=Gender.FEMALE,
        nation="汉",
        birth_date=dt.date(1900, 1, 1),
        address="北京市示例区测试路1号",
        id_number=first17 + check_digit(first17),
        issuer="示例市公安局测试分局",
        valid_from=dt.date(2020, 1, 1),
        valid_to=valid_to,
        photo=sample_photo(),
        fingerprint=None,
    )
