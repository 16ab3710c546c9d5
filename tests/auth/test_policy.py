"""Bypass attempts at the policy: every one is denied with a reason; the real pairs pass."""

from __future__ import annotations

import dataclasses
import os

import pytest

from gateway.auth import Authenticator, AuthState, PolicyDenied
from gateway.auth.totp import totp_value
from tests.auth.helpers import (
    CITIZEN_A,
    CITIZEN_B,
    RFC_SHA1_SEED,
    STAFF_PIN,
    AuditLog,
    CloudStandIn,
    EngineFactory,
    FakeClock,
)

PHOTO_A = os.urandom(1024)  # WLT bytes: opaque to us


async def citizen_with_otp(
    engine: Authenticator, cloud: CloudStandIn, session: str, id_no: str = CITIZEN_A
) -> AuthState:
    """A citizen session holding idcard + otp for the same person."""
    state = engine.new_state(session)
    await engine.prove_idcard(state, id_no, photo=PHOTO_A)
    await engine.otp_challenge(state)
    await engine.prove_otp(state, cloud.last_code(id_no))
    return state


async def denied(engine: Authenticator, state: AuthState, operation: str = "transaction") -> str:
    with pytest.raises(PolicyDenied) as err:
        await engine.authorize(operation, state, online=True)
    return err.value.reason


async def test_no_factor_is_denied(make_engine: EngineFactory, audit: AuditLog) -> None:
    engine = await make_engine()
    state = engine.new_state("s1")
    assert await denied(engine, state) == "no_factors"
    decision = audit.of("auth.decision")[-1]
    assert decision["allowed"] is False and decision["reason"] == "no_factors"
    assert engine.assurance(state).level == "none"


async def test_one_factor_is_denied(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    state = engine.new_state("s1")
    await engine.prove_idcard(state, CITIZEN_A, photo=PHOTO_A)
    assert await denied(engine, state) == "not_enough_factors"
    assert engine.assurance(state).level == "single"


async def test_two_cards_are_one_category(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    state = engine.new_state("s1")
    await engine.prove_idcard(state, CITIZEN_A, photo=PHOTO_A)
    await engine.prove_sscard(state, CITIZEN_A)
    assert await denied(engine, state) == "same_category"
    assert await denied(engine, state, "certificate_print") == "same_category"


async def test_factors_of_two_staff_members_are_not_two_factors(
    make_engine: EngineFactory, clock: FakeClock
) -> None:
    engine = await make_engine()
    state = engine.new_state("t1", "technician")
    clock.now = 1111111111.0
    await engine.prove_staffcard(state, "04A2B3C4D5E6F7")  # tech01
    await engine.prove_totp(state, "tech02", "67062674")  # tech02's code (RFC SHA-256 vector)
    assert await denied(engine, state, "maintenance") == "different_subjects"


async def test_factors_of_two_citizens_are_not_two_factors(
    make_engine: EngineFactory, cloud: CloudStandIn
) -> None:
    engine = await make_engine()
    other = await citizen_with_otp(engine, cloud, "s-b", CITIZEN_B)
    otp_b = next(f for f in other.factors if f.kind == "otp")
    state = engine.new_state("s-a")
    await engine.prove_idcard(state, CITIZEN_A, photo=PHOTO_A)
    # Someone grafts B's OTP into A's session, even restamped with A's session id.
    state.factors.append(dataclasses.replace(otp_b, session_id="s-a"))
    assert await denied(engine, state) == "different_subjects"


async def test_factor_from_another_session_does_not_count(
    make_engine: EngineFactory, cloud: CloudStandIn
) -> None:
    engine = await make_engine()
    donor = await citizen_with_otp(engine, cloud, "s-donor")
    thief = engine.new_state("s-thief")
    thief.factors.extend(donor.factors)
    assert await denied(engine, thief) == "factor_from_other_session"
    await engine.prove_idcard(thief, CITIZEN_A, photo=PHOTO_A)
    thief.factors.append(next(f for f in donor.factors if f.kind == "otp"))
    assert await denied(engine, thief) == "factor_from_other_session"
    assert engine.assurance(thief).level == "single"


async def test_no_cryptographic_factor_is_denied(
    make_engine: EngineFactory, cloud: CloudStandIn, clock: FakeClock
) -> None:
    engine = await make_engine()
    state = engine.new_state("s1")
    await engine.prove_idcard(state, CITIZEN_A, photo=PHOTO_A)
    idcard = state.factors[0]
    await engine.otp_challenge(state)
    await engine.prove_otp(state, cloud.last_code(CITIZEN_A))
    # Only non-cryptographic factors left: face-like inherence and the SMS code.
    state.factors.remove(idcard)
    face_like = dataclasses.replace(state.factors[0], kind="face", category="inherence")
    state.factors.append(face_like)
    assert await denied(engine, state) == "no_cryptographic_factor"


async def test_old_factors_expire(make_engine: EngineFactory, cloud: CloudStandIn, clock: FakeClock) -> None:
    engine = await make_engine()
    state = await citizen_with_otp(engine, cloud, "s1")
    clock.advance(601)
    assert await denied(engine, state) == "factors_expired"


async def test_session_kind_and_unknown_operation(make_engine: EngineFactory, cloud: CloudStandIn) -> None:
    engine = await make_engine()
    state = await citizen_with_otp(engine, cloud, "s1")
    assert await denied(engine, state, "maintenance") == "session_kind_not_allowed"
    assert await denied(engine, state, "format_disk") == "unknown_operation"
    technician = engine.new_state("t1", "technician")
    with pytest.raises(PolicyDenied) as err:
        await engine.prove_idcard(technician, CITIZEN_A, photo=PHOTO_A)
    assert err.value.reason == "factor_not_for_session_kind"
    with pytest.raises(PolicyDenied):
        await engine.prove_staffcard(state, "04A2B3C4D5E6F7")


async def test_real_pairs_are_allowed(
    make_engine: EngineFactory, cloud: CloudStandIn, audit: AuditLog, clock: FakeClock
) -> None:
    engine = await make_engine()
    state = await citizen_with_otp(engine, cloud, "s1")
    decision = await engine.authorize("transaction", state, online=True)
    assert decision.allowed and decision.reason == "ok"
    assert sorted(f.kind for f in decision.used) == ["idcard", "otp"]
    summary = decision.assurance.as_dict()
    assert summary["level"] == "two_factor"
    assert summary["categories"] == ["card", "device"]
    assert summary["subjects"] == [CITIZEN_A[:3] + "*" * 11 + CITIZEN_A[-4:]]
    assert audit.of("auth.decision")[-1]["allowed"] is True

    tech = engine.new_state("t1", "technician")
    await engine.prove_staffcard(tech, "04a2b3c4d5e6f7")
    await engine.prove_totp(tech, None, totp_value(RFC_SHA1_SEED, clock()))
    assert (await engine.authorize("maintenance", tech, online=True)).allowed

    tech2 = engine.new_state("t2", "technician")
    await engine.prove_staffcard(tech2, "04A2B3C4D5E6F7")
    await engine.prove_pin(tech2, None, STAFF_PIN)
    assert (await engine.authorize("maintenance", tech2, online=False)).allowed


async def test_unknown_staff_card_fails(make_engine: EngineFactory, audit: AuditLog) -> None:
    from gateway.auth import FactorFailed

    engine = await make_engine()
    state = engine.new_state("t1", "technician")
    with pytest.raises(FactorFailed) as err:
        await engine.prove_staffcard(state, "DEADBEEF00112233")
    assert err.value.reason == "unknown_card"
    assert state.factors == []
    assert "DEADBEEF00112233" not in audit.dump()
