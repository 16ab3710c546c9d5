"""SMS OTP through the cloud: challenge, one-time acceptance across restarts, bad answers."""

from __future__ import annotations

import os

import pytest

from gateway.auth import FactorFailed, FactorUnavailable, PolicyDenied, Throttled
from tests.auth.helpers import (
    CITIZEN_A,
    CITIZEN_B,
    CloudStandIn,
    EngineFactory,
    FakeClock,
    make_settings,
    restart,
)

PHOTO = os.urandom(1024)


async def test_challenge_goes_to_the_id_number_read_in_this_session(
    make_engine: EngineFactory, cloud: CloudStandIn
) -> None:
    engine = await make_engine()
    state = engine.new_state("s1")
    with pytest.raises(PolicyDenied) as no_card:
        await engine.otp_challenge(state)
    assert no_card.value.reason == "id_card_required"
    with pytest.raises(PolicyDenied) as no_challenge:
        await engine.prove_otp(state, "123456")
    assert no_challenge.value.reason == "otp_challenge_required"

    await engine.prove_sscard(state, CITIZEN_B)
    info = await engine.otp_challenge(state)
    assert info == {"expires_in_s": 300, "digits": 6}
    assert cloud.calls[-1] == ("otp.challenge", {"id_number": CITIZEN_B, "digits": 6})
    factor = await engine.prove_otp(state, cloud.last_code(CITIZEN_B))
    assert (factor.kind, factor.category, factor.cryptographic) == ("otp", "device", False)
    assert factor.subject == engine.keys.citizen(CITIZEN_B)
    # One challenge gives one factor: a second code needs a new SMS.
    with pytest.raises(PolicyDenied):
        await engine.prove_otp(state, cloud.last_code(CITIZEN_B))


async def test_wrong_and_malformed_codes_fail(make_engine: EngineFactory, cloud: CloudStandIn) -> None:
    engine = await make_engine()
    state = engine.new_state("s1")
    await engine.prove_idcard(state, CITIZEN_A, photo=PHOTO)
    await engine.otp_challenge(state)
    good = cloud.last_code(CITIZEN_A)
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    for code, reason in ((wrong, "mismatch"), ("12345", "bad_code_format"), ("12345a", "bad_code_format")):
        with pytest.raises(FactorFailed) as err:
            await engine.prove_otp(state, code)
        assert err.value.reason == reason
    calls_before = len(cloud.calls)
    await engine.prove_otp(state, good)
    assert len(cloud.calls) == calls_before + 1  # malformed codes never went to the cloud


async def test_used_code_is_refused_even_by_a_lax_cloud_and_after_restart(
    make_engine: EngineFactory, cloud: CloudStandIn, clock: FakeClock
) -> None:
    # A cloud that keeps codes valid and re-issues the same one: only our guard stops a replay.
    cloud.consume_codes = False
    cloud.fixed_code = "314159"
    engine = await make_engine()
    first = engine.new_state("s1")
    await engine.prove_idcard(first, CITIZEN_A, photo=PHOTO)
    await engine.otp_challenge(first)
    await engine.prove_otp(first, "314159")

    second = engine.new_state("s2")
    await engine.prove_idcard(second, CITIZEN_A, photo=PHOTO)
    await engine.otp_challenge(second)
    with pytest.raises(FactorFailed) as replay:
        await engine.prove_otp(second, "314159")
    assert replay.value.reason == "code_reused"

    engine = await restart(engine, make_engine)
    clock.advance(3600)
    third = engine.new_state("s3")
    await engine.prove_idcard(third, CITIZEN_A, photo=PHOTO)
    await engine.otp_challenge(third)
    with pytest.raises(FactorFailed) as after_restart:
        await engine.prove_otp(third, "314159")
    assert after_restart.value.reason == "code_reused"

    # Another citizen may legitimately get the same digits.
    other = engine.new_state("s4")
    await engine.prove_idcard(other, CITIZEN_B, photo=PHOTO)
    await engine.otp_challenge(other)
    await engine.prove_otp(other, "314159")


async def test_expired_challenge_and_resend_interval(
    make_engine: EngineFactory, cloud: CloudStandIn, clock: FakeClock
) -> None:
    engine = await make_engine()
    state = engine.new_state("s1")
    await engine.prove_idcard(state, CITIZEN_A, photo=PHOTO)
    await engine.otp_challenge(state)
    with pytest.raises(Throttled) as resend:
        await engine.otp_challenge(state)
    assert resend.value.retry_after_s == 30
    clock.advance(301)
    with pytest.raises(FactorFailed, match="challenge_expired"):
        await engine.prove_otp(state, cloud.last_code(CITIZEN_A))
    await engine.otp_challenge(state)
    await engine.prove_otp(state, cloud.last_code(CITIZEN_A))


@pytest.mark.parametrize(
    "answer",
    [{"challenge": ""}, {"challenge": 5}, {"nothing": True}, {"challenge": "x", "expires_in_s": -1}],
)
async def test_garbage_challenge_answer_is_unavailable(
    make_engine: EngineFactory, cloud: CloudStandIn, answer: dict[str, object]
) -> None:
    engine = await make_engine()
    state = engine.new_state("s1")
    await engine.prove_idcard(state, CITIZEN_A, photo=PHOTO)
    cloud.answer = dict(answer)
    with pytest.raises(FactorUnavailable, match="cloud_answer_invalid"):
        await engine.otp_challenge(state)
    assert state.otp_challenge is None


async def test_garbage_verify_answer_is_unavailable_not_a_failure(
    make_engine: EngineFactory, cloud: CloudStandIn
) -> None:
    engine = await make_engine()
    state = engine.new_state("s1")
    await engine.prove_idcard(state, CITIZEN_A, photo=PHOTO)
    await engine.otp_challenge(state)
    cloud.answer = {"ok": "yes"}
    with pytest.raises(FactorUnavailable):
        await engine.prove_otp(state, cloud.last_code(CITIZEN_A))
    assert await engine.store.get_failures(engine.keys.citizen(CITIZEN_A).storage_key, "otp") is None
    cloud.answer = None
    await engine.prove_otp(state, cloud.last_code(CITIZEN_A))


async def test_slow_cloud_times_out_as_unavailable(make_engine: EngineFactory, cloud: CloudStandIn) -> None:
    cloud.stall = True
    engine = await make_engine(settings=make_settings(otp={"timeout_s": 0.2}))
    state = engine.new_state("s1")
    await engine.prove_idcard(state, CITIZEN_A, photo=PHOTO)
    with pytest.raises(FactorUnavailable, match="cloud_timeout"):
        await engine.otp_challenge(state)
