"""PIN hashing and the `[auth]` config section."""

from __future__ import annotations

import tomllib
from typing import Any

import msgspec
import pytest

from gateway.auth import AuthSettings, FactorFailed, PolicyDenied
from gateway.auth.pins import PinError, hash_pin, parse_pin_hash, verify_pin, verify_pin_sync
from tests.auth.helpers import (
    RFC_SHA1_SEED,
    STAFF_PIN,
    EngineFactory,
    b32,
    settings_dict,
)


def test_hash_pin_encodes_parameters_and_salt() -> None:
    encoded = hash_pin("135790", n=2**10)
    parts = encoded.split("$")
    assert parts[0] == "scrypt" and parts[1:4] == ["1024", "8", "1"]
    assert verify_pin_sync("135790", encoded)
    assert not verify_pin_sync("135791", encoded)
    # A fresh salt each time: the same PIN never gives the same hash.
    assert hash_pin("135790", n=2**10) != encoded
    assert repr(parse_pin_hash(encoded)) == "PinHash(n=1024, r=8, p=1)"


async def test_verify_pin_runs_off_the_loop() -> None:
    encoded = hash_pin("97531864", n=2**10)
    assert await verify_pin("97531864", encoded)
    assert not await verify_pin("97531865", encoded)


@pytest.mark.parametrize("pin", ["12345", "", "12 3456", "123\x00456"])
def test_hash_pin_rejects_weak_or_odd_pins(pin: str) -> None:
    with pytest.raises(PinError):
        hash_pin(pin, n=2**10)


@pytest.mark.parametrize(
    "text",
    [
        "bcrypt$1$2$3$AAAA$AAAA",
        "scrypt$1000$8$1$c2FsdHNhbHQ=$" + "A" * 44,  # n not a power of two
        "scrypt$1024$8$1$not base64$AAAA",
        "scrypt$1024$8$1$c2FsdHNhbHQ=",
    ],
)
def test_parse_pin_hash_rejects_malformed(text: str) -> None:
    with pytest.raises(PinError):
        parse_pin_hash(text)


async def test_pin_factor(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    state = engine.new_state("t1", "technician")
    with pytest.raises(PolicyDenied):
        await engine.prove_pin(state, None, STAFF_PIN)  # no staff card, no staff id
    await engine.prove_staffcard(state, "04a2b3c4d5e6f7")
    with pytest.raises(FactorFailed) as wrong:
        await engine.prove_pin(state, None, "000000")
    assert wrong.value.reason == "wrong_pin"
    with pytest.raises(FactorFailed) as short:
        await engine.prove_pin(state, None, "123")
    assert short.value.reason == "bad_pin_format"
    factor = await engine.prove_pin(state, None, STAFF_PIN)
    assert (factor.kind, factor.category, factor.subject.key) == ("pin", "knowledge", "tech01")
    # tech02 has no PIN enrolled: a failure, at the cost of a real scrypt check.
    with pytest.raises(FactorFailed) as missing:
        await engine.prove_pin(state, "tech02", STAFF_PIN)
    assert missing.value.reason == "not_enrolled"


def test_settings_defaults_and_toml() -> None:
    text = f"""
[staff.tech09]
card_ids = ["AA BB CC DD"]
totp_secret = "{b32(RFC_SHA1_SEED).lower()}"

[policy.maintenance]
session_kinds = ["technician"]
min_factors = 3

[face]
verifier = "http"
url = "http://127.0.0.1:8088/compare"
threshold = 0.9
"""
    settings = msgspec.convert(tomllib.loads(text), AuthSettings)
    assert settings.policy.maintenance.min_factors == 3
    assert settings.policy.transaction.session_kinds == ["citizen"]
    assert settings.policy.transaction.min_factors == 2
    assert settings.lockout.threshold == 5 and settings.lockout.base_delay_s == 30
    assert settings.lockout.disable_after == 100
    assert settings.face.require_liveness is True
    assert settings.otp.digits == 6
    assert settings.staff_for_card("aabbccdd") == "tech09"
    assert settings.staff_for_card("aabbccde") is None
    assert "totp_secret" not in repr(settings.staff["tech09"])
    assert b32(RFC_SHA1_SEED).lower() not in repr(settings)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"surprise": 1}, "unknown field"),
        ({"policy": {"transaction": {"session_kinds": ["citizen"], "min_factors": 1}}}, ">= 2"),
        ({"policy": {"transaction": {"min_factors": 2}}}, "session_kinds"),
        ({"policy": {"refund": {"session_kinds": ["citizen"]}}}, "unknown field"),
        ({"lockout": {"base_delay_s": 5}}, ">= 30"),
        ({"lockout": {"disable_after": 3}}, "disable_after"),
        ({"otp": {"digits": 4}}, ">= 6"),
        ({"face": {"verifier": "http"}}, "url"),
        ({"face": {"verifier": "magic"}}, "face.verifier"),
        ({"staff": {"x": {"totp_secret": "!!!"}}}, "base32"),
        ({"staff": {"x": {"totp_secret": b32(b"short")}}}, "16 bytes"),
        ({"staff": {"x": {"totp_digits": 7}}}, "totp_digits"),
        ({"staff": {"x": {"pin_hash": "plain-text"}}}, "scrypt$"),
        ({"staff": {"a b": {}}}, "matching regex"),
        ({"staff": {"a": {"card_ids": ["01"]}, "b": {"card_ids": ["0:1"]}}}, "both"),
    ],
)
def test_settings_reject_bad_values(patch: dict[str, Any], message: str) -> None:
    raw = settings_dict()
    raw.update(patch)
    with pytest.raises(msgspec.ValidationError, match=message.replace("$", r"\$")):
        msgspec.convert(raw, AuthSettings)
