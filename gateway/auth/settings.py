"""The `[auth]` config section: staff, per-operation policy, lockouts, face and OTP settings."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Literal

import msgspec

from gateway.auth.pins import parse_pin_hash

FactorKind = Literal["idcard", "sscard", "staffcard", "face", "otp", "totp", "pin"]
SessionKind = Literal["citizen", "technician"]
TotpAlgorithm = Literal["SHA1", "SHA256", "SHA512"]

_STAFF_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
StaffId = Annotated[str, msgspec.Meta(pattern=_STAFF_ID)]
_CARD_SEPARATORS = re.compile(r"[\s:\-]")


def normalize_card_id(card_id: str) -> str:
    """One spelling per card id so `04:A2:...` in config matches `04a2...` from the reader."""
    return _CARD_SEPARATORS.sub("", card_id).upper()


def decode_base32_secret(secret: str) -> bytes:
    """Decode a base32 TOTP secret as authenticator apps write it (any case, spaces, no padding)."""
    text = secret.replace(" ", "").upper()
    text += "=" * (-len(text) % 8)
    try:
        return base64.b32decode(text, casefold=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError("totp_secret is not valid base32") from err


class LockoutSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Consecutive failures before a wait, how the wait grows, and when the factor is disabled."""

    threshold: Annotated[int, msgspec.Meta(ge=1, le=20)] = 5
    # The issue asks for at least 30 s once the threshold is reached; config cannot go below it.
    base_delay_s: Annotated[float, msgspec.Meta(ge=30)] = 30.0
    max_delay_s: Annotated[float, msgspec.Meta(ge=30)] = 3600.0
    disable_after: Annotated[int, msgspec.Meta(ge=0)] = 100  # 0: never disable

    def __post_init__(self) -> None:
        if self.max_delay_s < self.base_delay_s:
            raise ValueError("max_delay_s must be >= base_delay_s")
        if self.disable_after and self.disable_after <= self.threshold:
            raise ValueError("disable_after must be 0 or greater than threshold")

    def delay_s(self, consecutive: int) -> float:
        """The wait after `consecutive` failures in a row: 0 below the threshold, then doubling."""
        if consecutive < self.threshold:
            return 0.0
        exponent = min(consecutive - self.threshold, 32)
        return float(min(self.base_delay_s * 2**exponent, self.max_delay_s))

    def disables(self, consecutive: int) -> bool:
        """Whether this many failures in a row disable the factor until ops re-enable it."""
        return self.disable_after > 0 and consecutive >= self.disable_after


class StaffMember(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One technician: the staff cards that identify them and their TOTP and PIN enrolment."""

    card_ids: list[str] = []
    totp_secret: str | None = None
    totp_digits: Literal[6, 8] = 6
    totp_algorithm: TotpAlgorithm = "SHA1"
    totp_step_s: Annotated[int, msgspec.Meta(ge=15, le=300)] = 30
    pin_hash: str | None = None
    enabled: bool = True

    def __post_init__(self) -> None:
        if any(not normalize_card_id(c) for c in self.card_ids):
            raise ValueError("card_ids must not be empty strings")
        if self.totp_secret is not None and len(decode_base32_secret(self.totp_secret)) < 16:
            # RFC 4226 R6: shared secrets of at least 128 bits.
            raise ValueError("totp_secret must decode to at least 16 bytes (128 bits)")
        if self.pin_hash is not None:
            parse_pin_hash(self.pin_hash)

    def __repr__(self) -> str:
        return (
            f"StaffMember(cards={len(self.card_ids)}, totp={self.totp_secret is not None}, "
            f"pin={self.pin_hash is not None}, enabled={self.enabled})"
        )

    def totp_key(self) -> bytes | None:
        """The decoded TOTP secret, or None when the member has no TOTP enrolment."""
        return None if self.totp_secret is None else decode_base32_secret(self.totp_secret)


class OperationPolicy(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """What a protected operation needs: how many factors, of what kinds, from whom."""

    session_kinds: list[SessionKind]
    # The floor is two factors; config may ask for more, never fewer.
    min_factors: Annotated[int, msgspec.Meta(ge=2, le=4)] = 2
    distinct_categories: bool = True
    same_subject: bool = True
    require_cryptographic: bool = True
    max_factor_age_s: Annotated[float, msgspec.Meta(gt=0)] = 600.0
    # With the uplink down, only these combinations of factor kinds authorise the operation.
    offline_allowed: list[list[FactorKind]] = []

    def __post_init__(self) -> None:
        if not self.session_kinds:
            raise ValueError("session_kinds must name at least one session kind")
        for combo in self.offline_allowed:
            if len(set(combo)) < self.min_factors:
                raise ValueError("each offline_allowed combination needs min_factors distinct kinds")


def _citizen_policy() -> OperationPolicy:
    return OperationPolicy(
        session_kinds=["citizen"], offline_allowed=[["idcard", "face"], ["sscard", "face"]]
    )


def _technician_policy() -> OperationPolicy:
    return OperationPolicy(
        session_kinds=["technician"],
        offline_allowed=[["staffcard", "totp"], ["staffcard", "pin"]],
    )


class PolicySettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The policy of each protected operation (`[auth.policy.<operation>]`)."""

    transaction: OperationPolicy = msgspec.field(default_factory=_citizen_policy)
    certificate_print: OperationPolicy = msgspec.field(default_factory=_citizen_policy)
    maintenance: OperationPolicy = msgspec.field(default_factory=_technician_policy)

    def get(self, operation: str) -> OperationPolicy | None:
        """The policy of `operation`, or None for an unknown operation."""
        return {
            "transaction": self.transaction,
            "certificate_print": self.certificate_print,
            "maintenance": self.maintenance,
        }.get(operation)


def _face_lockout() -> LockoutSettings:
    return LockoutSettings()


class FaceSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Which face verifier compares the camera capture with the ID card photo, and how strictly."""

    # "sim": the SIMULATED comparison of the embedded default (refused in production configs).
    verifier: Literal["http", "cloud", "sim", "none"] = "none"
    url: str | None = None
    threshold: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.8
    require_liveness: bool = True
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5.0
    lockout: LockoutSettings = msgspec.field(default_factory=_face_lockout)

    def __post_init__(self) -> None:
        if self.verifier == "http" and not (self.url and self.url.startswith(("http://", "https://"))):
            raise ValueError("verifier = 'http' needs url = 'http://...' of the face service")


class OtpSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """SMS one-time codes checked by the cloud."""

    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 10.0
    digits: Annotated[int, msgspec.Meta(ge=6, le=10)] = 6
    # How long a used code is remembered per subject so it is never accepted twice.
    reuse_window_s: Annotated[float, msgspec.Meta(ge=60)] = 86400.0
    # Minimum time between two SMS requests in one session (no SMS flooding from a kiosk).
    resend_interval_s: Annotated[float, msgspec.Meta(ge=0, le=600)] = 30.0


class AuthSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Everything under `[auth]`."""

    staff: dict[StaffId, StaffMember] = {}
    policy: PolicySettings = msgspec.field(default_factory=PolicySettings)
    lockout: LockoutSettings = msgspec.field(default_factory=LockoutSettings)
    face: FaceSettings = msgspec.field(default_factory=FaceSettings)
    otp: OtpSettings = msgspec.field(default_factory=OtpSettings)
    pin_min_length: Annotated[int, msgspec.Meta(ge=4, le=64)] = 6

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for staff_id, member in self.staff.items():
            for card in member.card_ids:
                key = normalize_card_id(card)
                if key in seen and seen[key] != staff_id:
                    raise ValueError(f"staff card listed for both {seen[key]!r} and {staff_id!r}")
                seen[key] = staff_id

    def staff_for_card(self, card_id: str) -> str | None:
        """The staff id a staff card belongs to, or None for an unknown card."""
        key = normalize_card_id(card_id)
        for staff_id, member in self.staff.items():
            if any(normalize_card_id(c) == key for c in member.card_ids):
                return staff_id
        return None
