"""Resident ID card reader, SAM_V protocol (driver `samv`)."""

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
from drivers.idcard.identity import Gender, IdCard, sample_card
from drivers.idcard.simulator import IdCardSimulator

__all__ = [
    "BadRead",
    "CardLost",
    "CardNotPresented",
    "CheckDigitError",
    "CorruptReply",
    "Gender",
    "IdCard",
    "IdCardSimulator",
    "NoCard",
    "SamFault",
    "SamvReader",
    "SamvRejected",
    "SamvTimeout",
    "UnsupportedCard",
    "sample_card",
]
