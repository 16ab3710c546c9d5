"""The two-factor engine: one method per factor, throttled, audited, bound to subject and session."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from typing import Any

import structlog

from gateway.auth.attempts import AuditSink as AuditSink
from gateway.auth.attempts import FactorAttempts, audit_body
from gateway.auth.errors import (
    FactorDisabled,
    FactorUnavailable,
    PolicyDenied,
    Throttled,
)
from gateway.auth.face import (
    CloudFaceVerifier,
    CloudRequest,
    FaceVerifier,
    HttpFaceVerifier,
    NoFaceVerifier,
)
from gateway.auth.factors import FACTORS, AuthState, CardHolder, ProvenFactor
from gateway.auth.otp import OtpOutcome, OtpService
from gateway.auth.pins import PinError, check_pin_format, hash_pin, verify_pin
from gateway.auth.policy import Assurance, Decision, Policy
from gateway.auth.settings import AuthSettings, FaceSettings, FactorKind, SessionKind
from gateway.auth.store import AuthStore, FailureRecord
from gateway.auth.subjects import (
    DOCUMENT_TYPES,
    Subject,
    SubjectKeys,
    mask_id,
    valid_document_number,
    valid_id_number,
)
from gateway.auth.throttle import Throttle
from gateway.auth.totp import TotpOutcome, TotpVerifier

log = structlog.get_logger(__name__)


def _always_online() -> bool:
    return True


def build_face_verifier(
    settings: FaceSettings,
    *,
    cloud_request: CloudRequest | None,
    is_online: Callable[[], bool] = _always_online,
) -> FaceVerifier:
    """The verifier `[auth.face]` asks for."""
    if settings.verifier == "http":
        assert settings.url is not None  # FaceSettings validates this
        return HttpFaceVerifier(settings.url, timeout=settings.timeout_s)
    if settings.verifier == "cloud":
        if cloud_request is None:
            raise ValueError("[auth.face] verifier = 'cloud' needs the uplink's cloud_request")
        return CloudFaceVerifier(cloud_request, timeout=settings.timeout_s, is_online=is_online)
    if settings.verifier == "sim":
        from gateway.auth.simface import SIMULATION_LABEL, SimFaceVerifier

        log.warning("face_verifier_simulated", note=SIMULATION_LABEL)
        return SimFaceVerifier()
    return NoFaceVerifier()


class Authenticator:
    """Proves factors from device evidence and authorises operations; one per gateway."""

    def __init__(
        self,
        settings: AuthSettings,
        store: AuthStore,
        *,
        audit: AuditSink,
        cloud_request: CloudRequest | None = None,
        is_online: Callable[[], bool] = _always_online,
        face_verifier: FaceVerifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self._audit = audit
        self._clock = clock
        self.keys = SubjectKeys(store.secret)
        self.policy = Policy(settings.policy, clock=clock)
        self.throttle = Throttle(
            store, settings.lockout, overrides={"face": settings.face.lockout}, clock=clock
        )
        self._attempts = FactorAttempts(self.throttle, audit, clock=clock)
        self._totp = TotpVerifier(store, clock=clock)
        self.otp = OtpService(
            settings.otp,
            store,
            self.keys,
            cloud_request=cloud_request,
            is_online=is_online,
            clock=clock,
        )
        self._owns_face = face_verifier is None
        self.face: FaceVerifier = face_verifier or build_face_verifier(
            settings.face, cloud_request=cloud_request, is_online=is_online
        )
        self._dummy_pin_hash: str | None = None

    def __repr__(self) -> str:
        return f"Authenticator(face={self.face!r})"

    async def close(self) -> None:
        """Release the face verifier if the engine built it (the store belongs to the caller)."""
        if self._owns_face:
            await self.face.close()

    def new_state(self, session_id: str, kind: SessionKind = "citizen") -> AuthState:
        """A fresh AuthState for a new session."""
        return AuthState(session_id=session_id, kind=kind)

    # --- audit and the session kind (the common proof path is FactorAttempts) -----

    async def _emit(self, type_: str, body: dict[str, Any]) -> None:
        await self._audit(type_, body)

    def _require_session_kind(self, state: AuthState, kind: FactorKind) -> None:
        if FACTORS[kind].session_kind != state.kind:
            raise PolicyDenied("factor_not_for_session_kind", factor=kind)

    # --- card factors -------------------------------------------------------------

    async def prove_idcard(
        self,
        state: AuthState,
        id_number: str,
        *,
        photo: bytes = b"",
        valid_until: dt.date | None = None,
        document_type: str = "resident",
    ) -> ProvenFactor:
        """An ID card the SAM authenticated (a resident ID card, a foreigner's permanent residence
        card or an HMT residence permit): its document number is the subject, its photo is kept for
        the face factor."""
        self._require_session_kind(state, "idcard")
        if document_type not in DOCUMENT_TYPES:
            raise ValueError(f"unknown document type {document_type!r}")
        id_number = id_number.strip().upper()
        subject = self.keys.citizen(id_number)

        async def check() -> str | None:
            if not valid_document_number(document_type, id_number):
                return "bad_id_number"
            if valid_until is not None and valid_until < self._today():
                return "card_expired"
            return None

        async with state.lock:
            factor = await self._attempts.prove(state, "idcard", subject, check, document_type=document_type)
            state.idcard = CardHolder(id_number, subject, bytes(photo))
            return factor

    async def prove_sscard(self, state: AuthState, id_number: str) -> ProvenFactor:
        """A social security card whose chip named this citizen's ID number."""
        self._require_session_kind(state, "sscard")
        id_number = id_number.strip().upper()
        subject = self.keys.citizen(id_number)

        async def check() -> str | None:
            return None if valid_id_number(id_number) else "bad_id_number"

        async with state.lock:
            factor = await self._attempts.prove(state, "sscard", subject, check)
            state.sscard = CardHolder(id_number, subject)
            return factor

    async def prove_staffcard(self, state: AuthState, card_id: str) -> ProvenFactor:
        """A staff IC card; its id maps to a staff member in config, an unknown card fails."""
        self._require_session_kind(state, "staffcard")
        staff_id = self.settings.staff_for_card(card_id)
        member = self.settings.staff.get(staff_id) if staff_id else None
        subject = self.keys.staff(staff_id) if staff_id else self.keys.unknown_card(card_id.strip())

        async def check() -> str | None:
            if member is None:
                return "unknown_card"
            return None if member.enabled else "staff_disabled"

        async with state.lock:
            return await self._attempts.prove(state, "staffcard", subject, check)

    # --- face ---------------------------------------------------------------------

    async def prove_face(
        self,
        state: AuthState,
        probe_jpeg: bytes,
        *,
        timeout: float | None = None,
    ) -> ProvenFactor:
        """A capture compared with the photo of the ID card read in this session."""
        self._require_session_kind(state, "face")
        holder = state.idcard
        if holder is None or not holder.photo:
            raise PolicyDenied("idcard_required", factor="face")
        face = self.settings.face
        limit = face.timeout_s if timeout is None else timeout
        seen: dict[str, Any] = {}

        async def check() -> str | None:
            result = await self.face.compare(probe_jpeg, holder.photo, timeout=limit)
            seen["score"] = round(result.score, 3)
            seen["liveness"] = result.liveness
            if face.require_liveness and not result.liveness:
                return "no_liveness"
            if result.score < face.threshold:
                return "face_mismatch"
            return None

        async with state.lock:
            return await self._attempts.prove(state, "face", holder.subject, check, extra=seen)

    # --- SMS OTP ------------------------------------------------------------------

    async def otp_challenge(self, state: AuthState) -> dict[str, Any]:
        """Have the cloud text a code to the phone registered for the ID number read here."""
        self._require_session_kind(state, "otp")
        async with state.lock:
            holder = state.otp_holder()
            if holder is None:
                raise PolicyDenied("id_card_required", factor="otp")
            subject = holder.subject
            await self._ensure_otp_online(state, subject)
            now = self._clock()
            last = state.otp_challenged_at
            since = math.inf if last is None else now - last
            resend = self.settings.otp.resend_interval_s
            if since < resend:
                raise Throttled(max(1, math.ceil(resend - since)), factor="otp")
            try:
                await self.throttle.check(subject, "otp")
            except (Throttled, FactorDisabled) as err:
                await self._emit("auth.refused", audit_body(state, "otp", subject, **err.fields()))
                raise
            try:
                challenge = await self.otp.challenge(holder.id_number, subject)
            except FactorUnavailable as err:
                body = audit_body(state, "otp", subject, **err.fields())
                await self._emit("auth.unavailable", body)
                raise
            state.otp_challenge = challenge
            state.otp_challenged_at = now
            expires_in = max(0, round(challenge.expires_at - now))
            body = audit_body(state, "otp", subject, expires_in_s=expires_in)
            await self._emit("auth.otp_challenge", body)
            return {"expires_in_s": expires_in, "digits": self.settings.otp.digits}

    async def prove_otp(self, state: AuthState, code: str) -> ProvenFactor:
        """The SMS code of this session's challenge, checked by the cloud, accepted once."""
        self._require_session_kind(state, "otp")
        async with state.lock:
            challenge = state.otp_challenge
            if challenge is None:
                raise PolicyDenied("otp_challenge_required", factor="otp")
            await self._ensure_otp_online(state, challenge.subject)

            async def check() -> str | None:
                outcome = await self.otp.verify(challenge, code)
                return None if outcome is OtpOutcome.ACCEPTED else outcome.value

            factor = await self._attempts.prove(state, "otp", challenge.subject, check)
            state.otp_challenge = None
            return factor

    async def _ensure_otp_online(self, state: AuthState, subject: Subject) -> None:
        try:
            self.otp.ensure_online()
        except FactorUnavailable as err:
            await self._emit("auth.unavailable", audit_body(state, "otp", subject, **err.fields()))
            raise

    # --- staff TOTP and PIN ---------------------------------------------------------

    def _staff_subject(self, state: AuthState, kind: FactorKind, staff_id: str | None) -> Subject:
        if staff_id is not None:
            return self.keys.staff(staff_id)
        subject = state.staff_subject()
        if subject is None:
            raise PolicyDenied("staffcard_required", factor=kind)
        return subject

    async def prove_totp(self, state: AuthState, staff_id: str | None, code: str) -> ProvenFactor:
        """A staff member's TOTP code (staff_id None: the staff card proven in this session)."""
        self._require_session_kind(state, "totp")
        subject = self._staff_subject(state, "totp", staff_id)
        member = self.settings.staff.get(subject.key)

        async def check() -> str | None:
            outcome = await self._totp.verify(subject.key, member, code.strip())
            return None if outcome is TotpOutcome.ACCEPTED else outcome.value

        async with state.lock:
            return await self._attempts.prove(state, "totp", subject, check)

    async def prove_pin(self, state: AuthState, staff_id: str | None, pin: str) -> ProvenFactor:
        """A staff member's PIN against its scrypt hash (staff_id None: this session's staff card)."""
        self._require_session_kind(state, "pin")
        subject = self._staff_subject(state, "pin", staff_id)
        member = self.settings.staff.get(subject.key)

        async def check() -> str | None:
            try:
                check_pin_format(pin, min_length=self.settings.pin_min_length)
            except PinError:
                return "bad_pin_format"
            if member is None or member.pin_hash is None or not member.enabled:
                # Same scrypt cost as a real check, so timing does not tell who is enrolled.
                await verify_pin(pin, self._dummy_hash())
                return "not_enrolled"
            return None if await verify_pin(pin, member.pin_hash) else "wrong_pin"

        async with state.lock:
            return await self._attempts.prove(state, "pin", subject, check)

    def _dummy_hash(self) -> str:
        if self._dummy_pin_hash is None:
            self._dummy_pin_hash = hash_pin("not-a-real-pin-0000")
        return self._dummy_pin_hash

    # --- policy and ops -------------------------------------------------------------

    def assurance(self, state: AuthState) -> Assurance:
        """The session's assurance for GET /v1/sessions/{id}."""
        return self.policy.assurance(state)

    def evaluate(self, operation: str, state: AuthState, *, online: bool) -> Decision:
        """policy.evaluate without side effects (e.g. to show what an operation would need)."""
        return self.policy.evaluate(operation, state, online=online)

    async def authorize(self, operation: str, state: AuthState, *, online: bool) -> Decision:
        """Evaluate, audit the decision, and raise PolicyDenied unless allowed."""
        decision = self.policy.evaluate(operation, state, online=online)
        subjects = sorted({f.subject.masked for f in decision.used or decision.assurance.factors})
        await self._emit(
            "auth.decision",
            {
                "session": state.session_id,
                "session_kind": state.kind,
                "online": online,
                "subjects": subjects,
                **decision.as_dict(),
            },
        )
        if not decision.allowed:
            log.info("policy_denied", operation=operation, reason=decision.reason)
            raise PolicyDenied(decision.reason)
        return decision

    def subject_for(self, subject: str) -> Subject:
        """Ops' way to name a subject: an ID number, a stored key (`citizen:...`), or a staff id."""
        text = subject.strip()
        if valid_id_number(text.upper()) or valid_document_number("foreign_permanent", text.upper()):
            return self.keys.citizen(text)
        kind, sep, key = text.partition(":")
        if sep and key and kind == "staff":
            return self.keys.staff(key)
        if sep and key and kind == "citizen":
            return Subject("citizen", key, mask_id(key))
        if sep and key and kind == "card":
            return Subject("card", key, mask_id(key))
        return self.keys.staff(text)

    async def reenable(self, subject: str, authenticator: str) -> bool:
        """Ops: lift the disable (and wait) of one authenticator for one subject."""
        if authenticator not in FACTORS:
            raise ValueError(f"unknown authenticator {authenticator!r}")
        target = self.subject_for(subject)
        lifted = await self.throttle.reenable(target, authenticator)
        await self._emit(
            "auth.reenabled",
            {
                "factor": authenticator,
                "subject": target.masked,
                "subject_kind": target.kind,
                "lifted": lifted,
            },
        )
        log.info("factor_reenabled", factor=authenticator, subject=target.masked, lifted=lifted)
        return lifted

    async def disabled(self) -> list[FailureRecord]:
        """Every disabled (subject key, authenticator) for diag; keys hold no raw ID number."""
        return await self.store.list_disabled()

    def _today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self._clock()).date()
