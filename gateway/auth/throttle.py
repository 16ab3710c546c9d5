"""Lockouts: a wait after repeated failures, disabling after very many, per (subject, authenticator)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from gateway.auth.errors import FactorDisabled, Throttled
from gateway.auth.settings import LockoutSettings
from gateway.auth.store import AuthStore, FailureRecord
from gateway.auth.subjects import Subject


class Throttle:
    """Checks and counts failures in the store; the clock is injected so tests can move time."""

    def __init__(
        self,
        store: AuthStore,
        lockout: LockoutSettings,
        *,
        overrides: Mapping[str, LockoutSettings] | None = None,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._default = lockout
        self._overrides = dict(overrides or {})
        self._clock = clock

    def lockout_for(self, authenticator: str) -> LockoutSettings:
        """The lockout parameters of one authenticator (face has its own)."""
        return self._overrides.get(authenticator, self._default)

    async def check(self, subject: Subject, authenticator: str) -> None:
        """Raise FactorDisabled or Throttled if the subject may not try this authenticator now."""
        record = await self._store.get_failures(subject.storage_key, authenticator)
        if record is None:
            return
        if record.disabled:
            raise FactorDisabled("disabled_after_failures", factor=authenticator)
        remaining = self.retry_after(record)
        if remaining > 0:
            raise Throttled(remaining, factor=authenticator)

    def retry_after(self, record: FailureRecord) -> int:
        """Whole seconds still to wait (0 if none); a clock set back never extends past the cap."""
        remaining = record.locked_until - self._clock()
        if remaining <= 0:
            return 0
        cap = self.lockout_for(record.authenticator).max_delay_s
        return math.ceil(min(remaining, cap))

    async def failure(self, subject: Subject, authenticator: str) -> FailureRecord:
        """Count a failure; the returned record says whether it started a wait or disabled."""
        return await self._store.add_failure(
            subject.storage_key,
            authenticator,
            now=self._clock(),
            lockout=self.lockout_for(authenticator),
        )

    async def success(self, subject: Subject, authenticator: str) -> None:
        """A success resets the consecutive count."""
        await self._store.reset_failures(subject.storage_key, authenticator)

    async def reenable(self, subject: Subject, authenticator: str) -> bool:
        """Ops: lift a disable (and any wait); True if there was something to lift."""
        return await self._store.reenable(subject.storage_key, authenticator)
