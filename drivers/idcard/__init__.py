"""ID card reader, SAM_V protocol (driver `samv`): resident, foreigner's permanent residence, HMT permits."""

from drivers.idcard.card_types import IdDocument, UnsupportedCardType, parse_card
from drivers.idcard.driver import SamvReader
from drivers.idcard.errors import (
    BadRead,
    CardLost,
    CardNotPresented,
    CheckDigitError,
    CorruptReply,
    NoCard,
    SamFault,
    SamvRejected,
    SamvTimeout,
    UnsupportedCard,
)
from drivers.idcard.foreigner import ForeignPermanentCard, sample_foreigner_card
from drivers.idcard.foreigner2023 import ForeignPermanentCard2023, sample_foreigner2023_card
from drivers.idcard.hmt import HmtResidencePermit, sample_hmt_permit
from drivers.idcard.identity import Gender, IdCard, sample_card
from drivers.idcard.simulator import IdCardSimulator, RawCard

__all__ = [
    "BadRead",
    "CardLost",
    "CardNotPresented",
    "CheckDigitError",
    "CorruptReply",
    "ForeignPermanentCard",
    "ForeignPermanentCard2023",
    "Gender",
    "HmtResidencePermit",
    "IdCard",
    "IdCardSimulator",
    "IdDocument",
    "NoCard",
    "RawCard",
    "SamFault",
    "SamvReader",
    "SamvRejected",
    "SamvTimeout",
    "UnsupportedCard",
    "UnsupportedCardType",
    "parse_card",
    "sample_card",
    "sample_foreigner2023_card",
    "sample_foreigner_card",
    "sample_hmt_permit",
]
