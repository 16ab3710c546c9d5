"""TOTP/HOTP against the RFC vectors, drift, and one-time use that survives a restart."""

from __future__ import annotations

import asyncio

import pytest

from gateway.auth import FactorFailed
from gateway.auth.totp import match_step, time_step, totp_value
from tests.auth.helpers import (
    RFC_SHA1_SEED,
    RFC_SHA256_SEED,
    RFC_SHA512_SEED,
    EngineFactory,
    FakeClock,
    restart,
)

# RFC 6238 Appendix B: (time, SHA1, SHA256, SHA512), 8 digits, X = 30, T0 = 0.
RFC6238 = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]

# RFC 4226 Appendix D: HOTP values for counters 0..9 with the 20-byte ASCII seed.
RFC4226 = [
    "755224", "287082", "359152", "969429", "338314",
    "254676", "287922", "162583", "399871", "520489",
]  # fmt: skip


@pytest.mark.parametrize(("at", "sha1", "sha256", "sha512"), RFC6238)
def test_rfc6238_vectors(at: int, sha1: str, sha256: str, sha512: str) -> None:
    assert totp_value(RFC_SHA1_SEED, at, digits=8, algorithm="SHA1") == sha1
    assert totp_value(RFC_SHA256_SEED, at, digits=8, algorithm="SHA256") == sha256
    assert totp_value(RFC_SHA512_SEED, at, digits=8, algorithm="SHA512") == sha512


@pytest.mark.parametrize(("at", "sha1", "sha256", "sha512"), RFC6238)
def test_rfc6238_vectors_match_their_step(at: int, sha1: str, sha256: str, sha512: str) -> None:
    step = time_step(at)
    for seed, algorithm, code in (
        (RFC_SHA1_SEED, "SHA1", sha1),
        (RFC_SHA256_SEED, "SHA256", sha256),
        (RFC_SHA512_SEED, "SHA512", sha512),
    ):
        assert match_step(seed, code, at, digits=8, algorithm=algorithm) == step  # type: ignore[arg-type]


@pytest.mark.parametrize(("counter", "value"), list(enumerate(RFC4226)))
def test_rfc4226_hotp_vectors(counter: int, value: str) -> None:
    # TOTP is HOTP of the time step (RFC 6238 §4): the code the gateway checks at step `counter`.
    assert match_step(RFC_SHA1_SEED, value, counter * 30, drift=0) == counter


def test_drift_of_one_step_either_way_but_not_two() -> None:
    now = 1_700_000_015.0
    step = time_step(now)
    for offset in (-1, 0, 1):
        code = totp_value(RFC_SHA1_SEED, now + offset * 30)
        assert match_step(RFC_SHA1_SEED, code, now) == step + offset
    for offset in (-2, 2):
        assert match_step(RFC_SHA1_SEED, totp_value(RFC_SHA1_SEED, now + offset * 30), now) is None
    assert match_step(RFC_SHA1_SEED, "12345", now) is None
    assert match_step(RFC_SHA1_SEED, "１２３４５６", now) is None  # full-width digits


async def test_totp_factor_accepts_each_code_once_even_after_restart(
    make_engine: EngineFactory, clock: FakeClock
) -> None:
    engine = await make_engine()
    state = engine.new_state("s1", "technician")
    code = totp_value(RFC_SHA1_SEED, clock())
    factor = await engine.prove_totp(state, "tech01", code)
    assert (factor.kind, factor.subject.key, factor.cryptographic) == ("totp", "tech01", True)

    with pytest.raises(FactorFailed) as replay:
        await engine.prove_totp(engine.new_state("s2", "technician"), "tech01", code)
    assert replay.value.reason == "code_reused"

    engine = await restart(engine, make_engine)
    with pytest.raises(FactorFailed) as after_restart:
        await engine.prove_totp(engine.new_state("s3", "technician"), "tech01", code)
    assert after_restart.value.reason == "code_reused"

    # An earlier step is a replay too, even if it was never used.
    previous = totp_value(RFC_SHA1_SEED, clock() - 30)
    with pytest.raises(FactorFailed):
        await engine.prove_totp(engine.new_state("s4", "technician"), "tech01", previous)

    clock.advance(30)
    fresh = totp_value(RFC_SHA1_SEED, clock())
    await engine.prove_totp(engine.new_state("s5", "technician"), "tech01", fresh)


async def test_totp_sha256_8_digits_from_config(make_engine: EngineFactory, clock: FakeClock) -> None:
    engine = await make_engine()
    clock.now = 1111111111.0
    state = engine.new_state("s1", "technician")
    # tech02 is enrolled with the RFC SHA-256 seed and 8 digits: the RFC's own value passes.
    await engine.prove_totp(state, "tech02", "67062674")
    assert [f.kind for f in state.factors] == ["totp"]


async def test_totp_unknown_staff_and_wrong_code_fail(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    state = engine.new_state("s1", "technician")
    with pytest.raises(FactorFailed) as unknown:
        await engine.prove_totp(state, "nobody", "123456")
    assert unknown.value.reason == "not_enrolled"
    with pytest.raises(FactorFailed) as wrong:
        await engine.prove_totp(state, "tech01", "000000")
    assert wrong.value.reason == "mismatch"
    assert state.factors == []


async def test_concurrent_use_of_one_code_is_accepted_once(
    make_engine: EngineFactory, clock: FakeClock
) -> None:
    engine = await make_engine()
    code = totp_value(RFC_SHA1_SEED, clock())
    states = [engine.new_state(f"s{i}", "technician") for i in range(4)]
    results = await asyncio.gather(
        *(engine.prove_totp(s, "tech01", code) for s in states), return_exceptions=True
    )
    accepted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, FactorFailed)]
    assert len(accepted) == 1 and len(refused) == 3
    assert {r.reason for r in refused} == {"code_reused"}
