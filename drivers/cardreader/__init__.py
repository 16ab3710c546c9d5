"""PC/SC card reader driver (`pcsc`): social security, bank and staff cards over pcscd."""

from drivers.cardreader.driver import PcscCardReader
from drivers.cardreader.errors import (
    ApduError,
    CardDataError,
    CardReaderError,
    CardRemoved,
    CardTimeout,
    CardUnresponsive,
    NoCardPresented,
    PcscdUnavailable,
    ReaderUnavailable,
    WrongCard,
)
from drivers.cardreader.records import BankCardInfo, SocialSecurityCard

__all__ = [
    "ApduError",
    "BankCardInfo",
    "CardDataError",
    "CardReaderError",
    "CardRemoved",
    "CardTimeout",
    "CardUnresponsive",
    "NoCardPresented",
    "PcscCardReader",
    "PcscdUnavailable",
    "ReaderUnavailable",
    "SocialSecurityCard",
    "WrongCard",
]
