"""Test helpers for the auth engine: a settable clock, an audit recorder, a stand-in cloud."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from gateway.auth import Authenticator, AuthSettings, Offline
from gateway.auth.pins import hash_pin
from gateway.auth.subjects import id_check_char

RFC_SHA1_SEED = b"12345678901234567890"
RFC_SHA256_SEED = b"12345678901234567890123456789012"
RFC_SHA512_SEED = b"1234567890123456789012345678901234567890123456789012345678901234"

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(64) + b"\xff\xd9"
T0 = 1_700_000_000.0


def id_number(first17: str) -> str:
    """A well-formed 18-character ID number with its MOD 11-2 check character."""
    return first17 + id_check_char(first17)


# Seeded citizens: every produced record and stored byte is searched for these raw numbers.
CITIZEN_A = id_number("11010519491231002")
CITIZEN_B = id_number("44030419900307123")


def b32(seed: bytes) -> str:
    """Base32 as an authenticator app shows it."""
    return base64.b32encode(seed).decode().rstrip("=")


class FakeClock:
    """Wall clock the test moves by hand."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class AuditLog:
    """Collects audit records as the signed `audit` stream would receive them."""

    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def __call__(self, type_: str, body: dict[str, Any]) -> None:
        # The uplink serialises bodies to JSON: anything else would fail there.
        json.dumps(body)
        self.records.append((type_, body))

    def types(self) -> list[str]:
        return [t for t, _ in self.records]

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [b for t, b in self.records if t == type_]

    def dump(self) -> str:
        return "\n".join(json.dumps({"type": t, "body": b}) for t, b in self.records)


@dataclass
class CloudStandIn:
    """Plays the cloud's side of `cloud_request`: texts OTP codes, checks them, compares faces."""

    online: bool = True
    consume_codes: bool = True  # False: a lax cloud, so only the gateway's replay guard is tested
    answer: dict[str, Any] | None = None  # forced answer (garbage tests)
    face_answer: dict[str, Any] = field(default_factory=lambda: {"score": 0.95, "liveness": True})
    fixed_code: str | None = None
    stall: bool = False  # never answer (the caller's timeout must fire)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    inbox: dict[str, list[str]] = field(default_factory=dict)  # id number -> codes texted
    _codes: dict[str, str] = field(default_factory=dict)

    async def __call__(self, type_: str, body: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        assert timeout > 0
        if not self.online:
            raise Offline("uplink down")
        self.calls.append((type_, body))
        if self.stall:
            await asyncio.Event().wait()
        if self.answer is not None:
            return self.answer
        if type_ == "otp.challenge":
            code = self.fixed_code or f"{secrets.randbelow(10 ** body['digits']):0{body['digits']}d}"
            challenge = secrets.token_hex(8)
            self._codes[challenge] = code
            self.inbox.setdefault(body["id_number"], []).append(code)
            return {"challenge": challenge, "expires_in_s": 300}
        if type_ == "otp.verify":
            expected = self._codes.get(body["challenge"])
            ok = expected is not None and secrets.compare_digest(expected, body["code"])
            if ok and self.consume_codes:
                del self._codes[body["challenge"]]
            return {"ok": ok}
        if type_ == "face.compare":
            base64.b64decode(body["probe"], validate=True)
            base64.b64decode(body["reference"], validate=True)
            return self.face_answer
        return {"error": "unknown type"}

    def last_code(self, id_no: str) -> str:
        return self.inbox[id_no][-1]


STAFF_PIN = "482915"


def settings_dict(**overrides: Any) -> dict[str, Any]:
    """An `[auth]` section as the config loader would hand it over (parsed TOML)."""
    base: dict[str, Any] = {
        "staff": {
            "tech01": {
                "card_ids": ["04:A2:B3:C4:D5:E6:F7"],
                "totp_secret": b32(RFC_SHA1_SEED),
                # Cheap scrypt parameters keep the suite fast; production uses the defaults.
                "pin_hash": hash_pin(STAFF_PIN, n=2**10, r=8, p=1),
            },
            "tech02": {
                "card_ids": ["0499887766"],
                "totp_secret": b32(RFC_SHA256_SEED),
                "totp_algorithm": "SHA256",
                "totp_digits": 8,
            },
        },
        "face": {"verifier": "none"},
    }
    base.update(overrides)
    return base


def make_settings(**overrides: Any) -> AuthSettings:
    return msgspec.convert(settings_dict(**overrides), AuthSettings)


EngineFactory = Callable[..., Awaitable[Authenticator]]


async def restart(engine: Authenticator, factory: EngineFactory, **kwargs: Any) -> Authenticator:
    """Close an engine and its store, then open a new one on the same state dir."""
    await engine.close()
    await engine.store.close()
    return await factory(**kwargs)
