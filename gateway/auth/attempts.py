"""The common path of every factor proof: throttle, the factor's own check, counting, audit.

`FactorAttempts.prove` is what each `Authenticator.prove_*` method ends in: the throttle decides
whether the subject may try this factor now, the factor's check runs, a failure is counted (and
may lock or disable the factor), a success resets the count and adds the proven factor to the
session, and every step is an `auth.*` audit event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import structlog

from gateway.auth.errors import FactorDisabled, FactorFailed, FactorUnavailable, Throttled, VerifierError
from gateway.auth.factors import FACTORS, AuthState, ProvenFactor
from gateway.auth.settings import FactorKind
from gateway.auth.subjects import Subject
from gateway.auth.throttle import Throttle

# These events are the engine's: they keep its logger name.
log = structlog.get_logger("gateway.auth.engine")

AuditSink = Callable[[str, dict[str, Any]], Awaitable[None]]
"""`async audit(type, body)`: the lead routes it to the signed `audit` stream."""

Check = Callable[[], Awaitable[str | None]]


def audit_body(state: AuthState, kind: str, subject: Subject | None, **extra: Any) -> dict[str, Any]:
    """The common fields of an `auth.*` audit event about one factor (`extra` added last)."""
    body: dict[str, Any] = {"session": state.session_id, "factor": kind}
    if subject is not None:
        body["subject"] = subject.masked
        body["subject_kind"] = subject.kind
    body.update(extra)
    return body


class FactorAttempts:
    """Runs each factor proof of the Authenticator through the throttle, counts its outcome and
    audits every step."""

    def __init__(self, throttle: Throttle, audit: AuditSink, *, clock: Callable[[], float]) -> None:
        self.throttle = throttle
        self._audit = audit
        self._clock = clock

    async def prove(
        self,
        state: AuthState,
        kind: FactorKind,
        subject: Subject,
        check: Check,
        *,
        extra: dict[str, Any] | None = None,
        document_type: str | None = None,
    ) -> ProvenFactor:
        """Throttle check, the factor's own check, counting, state update and audit, in order.

        `check` returns None when the evidence proves the factor, else the failure reason."""
        await self._audit("auth.attempt", audit_body(state, kind, subject))
        try:
            await self.throttle.check(subject, kind)
        except (Throttled, FactorDisabled) as err:
            await self._audit("auth.refused", audit_body(state, kind, subject, **err.fields()))
            raise
        try:
            reason = await check()
        except (FactorUnavailable, VerifierError) as err:
            await self._audit("auth.unavailable", audit_body(state, kind, subject, **err.fields()))
            log.warning("factor_unavailable", factor=kind, reason=err.reason)
            raise
        if reason is not None:
            await self._fail(state, kind, subject, reason)
        await self.throttle.success(subject, kind)
        info = FACTORS[kind]
        factor = ProvenFactor(
            kind=kind,
            category=info.category,
            subject=subject,
            cryptographic=info.cryptographic,
            at=self._clock(),
            session_id=state.session_id,
            document_type=document_type,
        )
        state.add(factor)
        await self._audit(
            "auth.success",
            audit_body(
                state,
                kind,
                factor.subject,
                category=info.category,
                cryptographic=info.cryptographic,
                **(extra or {}),
            ),
        )
        log.info("factor_proven", factor=kind, session=state.session_id, subject=subject.masked)
        return factor

    async def _fail(self, state: AuthState, kind: FactorKind, subject: Subject, reason: str) -> NoReturn:
        """Count the failure, audit it (and a lockout or disable it causes), raise FactorFailed."""
        record = await self.throttle.failure(subject, kind)
        body = audit_body(state, kind, subject, reason=reason, consecutive=record.consecutive)
        await self._audit("auth.failure", body)
        log.info("factor_failed", factor=kind, reason=reason, consecutive=record.consecutive)
        err = FactorFailed(reason, factor=kind)
        if record.disabled:
            await self._audit("auth.disabled", audit_body(state, kind, subject))
            log.warning("factor_disabled", factor=kind, subject=subject.masked)
        else:
            retry = self.throttle.retry_after(record)
            if retry > 0:
                err.retry_after_s = retry
                await self._audit(
                    "auth.lockout",
                    audit_body(state, kind, subject, retry_after_s=retry, consecutive=record.consecutive),
                )
        raise err
