"""Factor kinds and categories, proven factors, and the per-session state the engine works on."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from gateway.auth.otp import OtpChallenge
from gateway.auth.settings import FactorKind, SessionKind
from gateway.auth.subjects import Subject, mask_id

Category = Literal["card", "inherence", "device", "knowledge"]

# Proven factors kept per session; older ones drop off (bounds the policy's subset search).
MAX_FACTORS = 8


class FactorInfo(NamedTuple):
    """What a factor kind is: its category, whether its proof is cryptographic, who may use it."""

    category: Category
    cryptographic: bool
    session_kind: SessionKind


FACTORS: dict[FactorKind, FactorInfo] = {
    # Chip cards: the reader's SAM / the card's keys authenticate the chip (possession).
    "idcard": FactorInfo("card", True, "citizen"),
    "sscard": FactorInfo("card", True, "citizen"),
    "staffcard": FactorInfo("card", True, "technician"),
    # The capture compared with the ID card photo read in this session.
    "face": FactorInfo("inherence", False, "citizen"),
    # SMS code to the registered phone, checked by the cloud.
    "otp": FactorInfo("device", False, "citizen"),
    # HMAC-based code from the staff member's enrolled authenticator.
    "totp": FactorInfo("device", True, "technician"),
    "pin": FactorInfo("knowledge", False, "technician"),
}


@dataclass(frozen=True, slots=True)
class ProvenFactor:
    """One factor proven in one session for one subject at one time."""

    kind: FactorKind
    category: Category
    subject: Subject
    cryptographic: bool
    at: float
    session_id: str
    # The ID card factor's document (resident, foreign_permanent, hmt_residence); None otherwise.
    document_type: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, subject masked (for GET /v1/sessions/{id} and audit)."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "category": self.category,
            "subject": self.subject.masked,
            "subject_kind": self.subject.kind,
            "cryptographic": self.cryptographic,
            "at": self.at,
        }
        if self.document_type is not None:
            out["document_type"] = self.document_type
        return out


@dataclass(frozen=True, slots=True)
class CardHolder:
    """The citizen a card read in this session identifies, with the ID card photo if read."""

    id_number: str
    subject: Subject
    photo: bytes = b""

    def __repr__(self) -> str:
        return f"CardHolder({mask_id(self.id_number)}, photo={len(self.photo)} bytes)"


@dataclass(eq=False)
class AuthState:
    """What the engine knows about one session; the session registry holds one per session."""

    session_id: str
    kind: SessionKind = "citizen"
    factors: list[ProvenFactor] = field(default_factory=list)
    idcard: CardHolder | None = None
    sscard: CardHolder | None = None
    otp_challenge: OtpChallenge | None = None
    otp_challenged_at: float | None = None
    # Proofs of one session run one at a time so two requests cannot race on its state.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __repr__(self) -> str:
        kinds = ",".join(f.kind for f in self.factors)
        return f"AuthState({self.session_id!r}, {self.kind}, factors=[{kinds}])"

    def add(self, factor: ProvenFactor) -> None:
        """Hold a new factor; a newer proof of the same kind for the same subject replaces it."""
        self.factors = [
            f for f in self.factors if not (f.kind == factor.kind and f.subject == factor.subject)
        ]
        self.factors.append(factor)
        del self.factors[:-MAX_FACTORS]

    def staff_subject(self) -> Subject | None:
        """The staff member identified by the latest staff card proven in this session."""
        for factor in reversed(self.factors):
            if factor.kind == "staffcard" and factor.session_id == self.session_id:
                return factor.subject
        return None

    def otp_holder(self) -> CardHolder | None:
        """Whose phone gets the SMS: the ID card read in this session, else the SS card."""
        return self.idcard or self.sscard

    def clear(self) -> None:
        """Forget every factor and all personal data (session end)."""
        self.factors.clear()
        self.idcard = None
        self.sscard = None
        self.otp_challenge = None
        self.otp_challenged_at = None
