"""Who a factor proves: citizens by a keyed hash of their document number, staff by staff id.

A citizen's document number is the 18-character ID number of the resident ID card or of the
residence permit for Hong Kong, Macao and Taiwan residents (GB 11643, ISO 7064 MOD 11-2; the
permit's address code is 810000/820000/830000), the 15-character number of the 2017 foreigner's
permanent residence card (3 letters + 12 digits, ICAO 9303 7-3-1 check digit), or the 18-digit
number of the 2023 one (starts with 9, ISO 7064 MOD 11-2). Sources in drivers/idcard/hmt.py,
drivers/idcard/foreigner.py and drivers/idcard/foreigner2023.py.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Literal

from drivers.idcard.foreigner import foreigner_number_valid

SubjectKind = Literal["citizen", "staff", "card"]

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_HMT_REGIONS = ("810000", "820000", "830000")
DOCUMENT_TYPES = ("resident", "foreign_permanent", "hmt_residence", "foreign_permanent_2023")


def mask_id(value: str) -> str:
    """Keep the first 3 and last 4 characters of an identifier, star the rest."""
    if len(value) <= 7:
        return "*" * len(value)
    return value[:3] + "*" * (len(value) - 7) + value[-4:]


def id_check_char(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character of the first 17 digits of an ID number."""
    total = sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


def valid_id_number(id_number: str) -> bool:
    """Whether an 18-character resident ID number is well formed with a correct check character."""
    if len(id_number) != 18 or not id_number[:17].isdigit():
        return False
    return id_check_char(id_number[:17]) == id_number[17].upper()


def valid_document_number(document_type: str, number: str) -> bool:
    """Whether `number` is well formed, with its check character, for the document type."""
    if document_type == "resident":
        return valid_id_number(number)
    if document_type == "hmt_residence":
        return number[:6] in _HMT_REGIONS and valid_id_number(number)
    if document_type == "foreign_permanent":
        return foreigner_number_valid(number)
    if document_type == "foreign_permanent_2023":
        return number[:1] == "9" and valid_id_number(number)
    return False


@dataclass(frozen=True, slots=True)
class Subject:
    """The person a factor is bound to; `key` is safe to persist, `masked` is safe to show."""

    kind: SubjectKind
    key: str
    masked: str = field(compare=False)

    def __repr__(self) -> str:
        return f"Subject({self.kind}, {self.masked})"

    @property
    def storage_key(self) -> str:
        """The key for the throttle and replay tables (no raw ID number in it)."""
        return f"{self.kind}:{self.key}"


class SubjectKeys:
    """Turns raw identifiers into subjects with HMAC-SHA256 under the node-local secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the subject secret must be at least 32 bytes")
        self._secret = secret

    def __repr__(self) -> str:
        return "SubjectKeys(<secret>)"

    def digest(self, label: str, value: str) -> str:
        """Keyed hash of `value` in the namespace `label` (hex)."""
        mac = hmac.new(self._secret, f"{label}\x00{value}".encode(), hashlib.sha256)
        return mac.hexdigest()

    def citizen(self, id_number: str) -> Subject:
        """The subject of a citizen identified by their ID number."""
        normalized = id_number.strip().upper()
        return Subject("citizen", self.digest("id_number", normalized), mask_id(normalized))

    def staff(self, staff_id: str) -> Subject:
        """The subject of a staff member (staff ids are not personal data)."""
        return Subject("staff", staff_id, staff_id)

    def unknown_card(self, card_id: str) -> Subject:
        """The subject that unknown-card failures are counted against."""
        return Subject("card", self.digest("card_id", card_id), mask_id(card_id))
