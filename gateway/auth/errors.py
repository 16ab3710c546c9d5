"""The auth package's error root and its precise subclasses, each carrying what problem+json needs."""

from __future__ import annotations

from typing import Any, ClassVar

from gateway.errors import GatewayError


class AuthError(GatewayError):
    """Root of every error the two-factor engine raises; `status` and `code` map it to problem+json."""

    status: ClassVar[int] = 401
    code: ClassVar[str] = "auth_error"

    def __init__(self, reason: str, *, factor: str | None = None) -> None:
        super().__init__(f"{self.code}: {reason}" + (f" (factor {factor})" if factor else ""))
        self.reason = reason
        self.factor = factor

    def fields(self) -> dict[str, Any]:
        """Structured fields for the problem body (never personal data)."""
        out: dict[str, Any] = {"code": self.code, "reason": self.reason}
        if self.factor is not None:
            out["factor"] = self.factor
        return out


class FactorFailed(AuthError):
    """The evidence did not prove the factor (wrong code, unknown card, face mismatch, ...)."""

    status = 401
    code = "factor_failed"

    def __init__(self, reason: str, *, factor: str | None = None) -> None:
        super().__init__(reason, factor=factor)
        # Set when this failure started a wait: the next try would be Throttled.
        self.retry_after_s: int | None = None

    def fields(self) -> dict[str, Any]:
        """Adds `retry_after_s` when this failure started a wait."""
        out = super().fields()
        if self.retry_after_s is not None:
            out["retry_after_s"] = self.retry_after_s
        return out


class Throttled(AuthError):
    """Too many consecutive failures: the subject must wait `retry_after_s` before trying again."""

    status = 429
    code = "throttled"

    def __init__(self, retry_after_s: int, *, factor: str | None = None) -> None:
        super().__init__(f"retry after {retry_after_s} s", factor=factor)
        self.retry_after_s = retry_after_s

    def fields(self) -> dict[str, Any]:
        """Adds `retry_after_s` (the API also sends it as Retry-After)."""
        return {**super().fields(), "retry_after_s": self.retry_after_s}


class FactorDisabled(AuthError):
    """The factor is disabled for this subject after too many failures until ops re-enable it."""

    status = 403
    code = "factor_disabled"


class FactorUnavailable(AuthError):
    """The factor cannot be checked right now (uplink down, verifier switched off)."""

    status = 503
    code = "factor_unavailable"


class PolicyDenied(AuthError):
    """The operation or step is not allowed with the factors this session holds."""

    status = 403
    code = "policy_denied"


class VerifierError(AuthError):
    """The face verifier gave no usable answer (unreachable, garbage); no factor is granted."""

    status = 503
    code = "verifier_error"


class VerifierTimeout(VerifierError, TimeoutError):
    """The face verifier did not answer within its timeout."""

    code = "verifier_timeout"


class Offline(Exception):
    """Raised by the injected `cloud_request` when the uplink is down or the cloud did not answer."""
