"""RFC 6238 TOTP for enrolled staff: one step of drift either way, each time step accepted once."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from enum import StrEnum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from gateway.auth.settings import StaffMember, TotpAlgorithm
from gateway.auth.store import AuthStore

DRIFT_STEPS = 1

_Hash = hashes.SHA1 | hashes.SHA256 | hashes.SHA512

_ALGORITHMS: dict[str, Callable[[], _Hash]] = {
    "SHA1": hashes.SHA1,
    "SHA256": hashes.SHA256,
    "SHA512": hashes.SHA512,
}


def _algorithm(name: TotpAlgorithm) -> _Hash:
    return _ALGORITHMS[name]()


def totp_value(
    key: bytes,
    at: float,
    *,
    digits: int = 6,
    algorithm: TotpAlgorithm = "SHA1",
    step_s: int = 30,
) -> str:
    """The RFC 6238 TOTP value at Unix time `at`."""
    totp = TOTP(key, digits, _algorithm(algorithm), step_s, enforce_key_length=False)
    return totp.generate(at).decode()


def time_step(at: float, step_s: int = 30) -> int:
    """The RFC 6238 time step T = floor((now - T0) / X) with T0 = 0."""
    return int(at // step_s)


def match_step(
    key: bytes,
    code: str,
    at: float,
    *,
    digits: int = 6,
    algorithm: TotpAlgorithm = "SHA1",
    step_s: int = 30,
    drift: int = DRIFT_STEPS,
) -> int | None:
    """The time step within ±drift whose value equals `code`, compared in constant time."""
    supplied = code.encode() if code.isascii() else b""
    current = time_step(at, step_s)
    found: int | None = None
    totp = TOTP(key, digits, _algorithm(algorithm), step_s, enforce_key_length=False)
    # Every candidate is compared (no early exit) so timing does not reveal which step matched.
    for step in range(current - drift, current + drift + 1):
        if step < 0:
            continue
        value = totp.generate(step * step_s)
        if hmac.compare_digest(value, supplied):
            found = step
    return found


class TotpOutcome(StrEnum):
    """Why a TOTP check ended the way it did."""

    ACCEPTED = "accepted"
    MISMATCH = "mismatch"
    REUSED = "code_reused"
    NOT_ENROLLED = "not_enrolled"


class TotpVerifier:
    """Checks staff TOTP codes and records the last used step per staff member in the store."""

    def __init__(self, store: AuthStore, *, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock

    async def verify(self, staff_id: str, member: StaffMember | None, code: str) -> TotpOutcome:
        """Check `code` for `staff_id`; a step at or before the last accepted one is a replay."""
        key = member.totp_key() if member is not None and member.enabled else None
        if key is None or member is None:
            return TotpOutcome.NOT_ENROLLED
        step = match_step(
            key,
            code,
            self._clock(),
            digits=member.totp_digits,
            algorithm=member.totp_algorithm,
            step_s=member.totp_step_s,
        )
        if step is None:
            return TotpOutcome.MISMATCH
        if not await self._store.claim_totp_step(staff_id, step):
            return TotpOutcome.REUSED
        return TotpOutcome.ACCEPTED
