"""Two-factor authentication core: factors, policy, TOTP/OTP/PIN, lockouts, face verifiers."""

from __future__ import annotations

from gateway.auth.engine import AuditSink, Authenticator, build_face_verifier
from gateway.auth.errors import (
    AuthError,
    FactorDisabled,
    FactorFailed,
    FactorUnavailable,
    Offline,
    PolicyDenied,
    Throttled,
    VerifierError,
    VerifierTimeout,
)
from gateway.auth.face import (
    CloudFaceVerifier,
    CloudRequest,
    FaceResult,
    FaceVerifier,
    HttpFaceVerifier,
    NoFaceVerifier,
)
from gateway.auth.factors import FACTORS, AuthState, ProvenFactor
from gateway.auth.pins import hash_pin
from gateway.auth.policy import Assurance, Decision, Policy
from gateway.auth.settings import AuthSettings
from gateway.auth.store import AuthStore

__all__ = [
    "FACTORS",
    "Assurance",
    "AuditSink",
    "AuthError",
    "AuthSettings",
    "AuthState",
    "AuthStore",
    "Authenticator",
    "CloudFaceVerifier",
    "CloudRequest",
    "Decision",
    "FaceResult",
    "FaceVerifier",
    "FactorDisabled",
    "FactorFailed",
    "FactorUnavailable",
    "HttpFaceVerifier",
    "NoFaceVerifier",
    "Offline",
    "Policy",
    "PolicyDenied",
    "ProvenFactor",
    "Throttled",
    "VerifierError",
    "VerifierTimeout",
    "build_face_verifier",
    "hash_pin",
]
