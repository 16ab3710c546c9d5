"""SMS one-time codes: the cloud sends and checks them over the signed uplink; we refuse replays."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.auth.errors import FactorUnavailable, Offline
from gateway.auth.face import CloudRequest
from gateway.auth.settings import OtpSettings
from gateway.auth.store import AuthStore
from gateway.auth.subjects import Subject, SubjectKeys

MAX_CHALLENGE_ID = 128
DEFAULT_CHALLENGE_TTL_S = 300.0


@dataclass(frozen=True, slots=True)
class OtpChallenge:
    """An SMS code the cloud sent for a subject: its opaque id and when it stops being valid."""

    challenge_id: str
    subject: Subject
    expires_at: float

    def __repr__(self) -> str:
        return f"OtpChallenge({self.subject!r}, expires_at={self.expires_at})"


class OtpOutcome(StrEnum):
    """Why an OTP check ended the way it did."""

    ACCEPTED = "accepted"
    MISMATCH = "mismatch"
    REUSED = "code_reused"
    BAD_FORMAT = "bad_code_format"
    EXPIRED = "challenge_expired"


class OtpService:
    """Requests and checks SMS codes through the injected `cloud_request`."""

    def __init__(
        self,
        settings: OtpSettings,
        store: AuthStore,
        keys: SubjectKeys,
        *,
        cloud_request: CloudRequest | None,
        is_online: Callable[[], bool],
        clock: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._store = store
        self._keys = keys
        self._cloud_request = cloud_request
        self._is_online = is_online
        self._clock = clock

    def ensure_online(self) -> None:
        """Fail at once, before any wait, when the cloud cannot be reached."""
        if self._cloud_request is None:
            raise FactorUnavailable("no_uplink", factor="otp")
        if not self._is_online():
            raise FactorUnavailable("offline", factor="otp")

    async def _ask(self, type_: str, body: dict[str, Any]) -> dict[str, Any]:
        self.ensure_online()
        assert self._cloud_request is not None
        limit = self._settings.timeout_s
        try:
            async with asyncio.timeout(limit):
                answer = await self._cloud_request(type_, body, timeout=limit)
        except Offline as err:
            raise FactorUnavailable("offline", factor="otp") from err
        except TimeoutError as err:
            raise FactorUnavailable("cloud_timeout", factor="otp") from err
        if not isinstance(answer, dict):
            raise FactorUnavailable("cloud_answer_invalid", factor="otp")
        return answer

    async def challenge(self, id_number: str, subject: Subject) -> OtpChallenge:
        """Ask the cloud to text a code to the phone registered for this ID number."""
        # The raw ID number travels only inside this request body, never in our state or audit.
        answer = await self._ask("otp.challenge", {"id_number": id_number, "digits": self._settings.digits})
        challenge_id = answer.get("challenge")
        ttl = answer.get("expires_in_s", DEFAULT_CHALLENGE_TTL_S)
        if not isinstance(challenge_id, str) or not 0 < len(challenge_id) <= MAX_CHALLENGE_ID:
            raise FactorUnavailable("cloud_answer_invalid", factor="otp")
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= 3600:
            raise FactorUnavailable("cloud_answer_invalid", factor="otp")
        return OtpChallenge(challenge_id, subject, self._clock() + float(ttl))

    def well_formed(self, code: str) -> bool:
        """Exactly `digits` ASCII digits."""
        return len(code) == self._settings.digits and code.isascii() and code.isdigit()

    def _digest(self, subject: Subject, code: str) -> str:
        return self._keys.digest("otp", f"{subject.storage_key}\x00{code}")

    async def verify(self, challenge: OtpChallenge, code: str) -> OtpOutcome:
        """Check `code` against the challenge: format, expiry, local replay, then the cloud."""
        if not self.well_formed(code):
            return OtpOutcome.BAD_FORMAT
        now = self._clock()
        if now > challenge.expires_at:
            return OtpOutcome.EXPIRED
        digest = self._digest(challenge.subject, code)
        since = now - self._settings.reuse_window_s
        if await self._store.code_used(challenge.subject.storage_key, digest, since=since):
            return OtpOutcome.REUSED
        answer = await self._ask("otp.verify", {"challenge": challenge.challenge_id, "code": code})
        ok = answer.get("ok")
        if not isinstance(ok, bool):
            raise FactorUnavailable("cloud_answer_invalid", factor="otp")
        if not ok:
            return OtpOutcome.MISMATCH
        claimed = await self._store.claim_code(
            challenge.subject.storage_key, digest, now=self._clock(), since=since
        )
        return OtpOutcome.ACCEPTED if claimed else OtpOutcome.REUSED
