"""With the uplink down: cloud-bound factors fail at once, offline-capable pairs still pass."""

from __future__ import annotations

import os

import pytest

from gateway.auth import FactorUnavailable, PolicyDenied
from gateway.auth.totp import totp_value
from tests.auth.face_service import FaceService
from tests.auth.helpers import (
    CITIZEN_A,
    JPEG,
    RFC_SHA1_SEED,
    AuditLog,
    CloudStandIn,
    EngineFactory,
    FakeClock,
    make_settings,
)

PHOTO = os.urandom(1024)


async def test_otp_fails_at_once_when_is_online_says_down(
    make_engine: EngineFactory, cloud: CloudStandIn, audit: AuditLog
) -> None:
    engine = await make_engine(online=lambda: False)
    state = engine.new_state("s1")
    await engine.prove_idcard(state, CITIZEN_A, photo=PHOTO)
    with pytest.raises(FactorUnavailable) as err:
        await engine.otp_challenge(state)
    assert (err.value.reason, err.value.status) == ("offline", 503)
    assert cloud.calls == []  # not even tried: no waiting on a dead link
    assert audit.of("auth.unavailable")[-1]["reason"] == "offline"


async def test_otp_fails_when_the_uplink_raises_offline(
    make_engine: EngineFactory, cloud: CloudStandIn
) -> None:
    engine = await make_engine(online=lambda: True)
    state = engine.new_state("s1")
    await engine.prove_idcard(state, CITIZEN_A, photo=PHOTO)
    await engine.otp_challenge(state)
    code = cloud.last_code(CITIZEN_A)
    cloud.online = False  # the link dropped between the SMS and the code
    with pytest.raises(FactorUnavailable, match="offline"):
        await engine.prove_otp(state, code)
    cloud.online = True
    await engine.prove_otp(state, code)  # nothing was counted or consumed meanwhile


async def test_cloud_face_fails_at_once_offline(make_engine: EngineFactory, cloud: CloudStandIn) -> None:
    cloud.online = False
    engine = await make_engine(settings=make_settings(face={"verifier": "cloud"}))
    state = engine.new_state("s1")
    await engine.prove_idcard(state, CITIZEN_A, photo=PHOTO)
    with pytest.raises(FactorUnavailable, match="offline"):
        await engine.prove_face(state, JPEG)
    assert cloud.calls == []
    assert [f.kind for f in state.factors] == ["idcard"]


async def test_idcard_and_local_face_pass_offline(
    make_engine: EngineFactory, cloud: CloudStandIn, face_service: FaceService
) -> None:
    cloud.online = False
    settings = make_settings(face={"verifier": "http", "url": face_service.url})
    engine = await make_engine(settings=settings)
    state = engine.new_state("s1")
    await engine.prove_idcard(state, CITIZEN_A, photo=PHOTO)
    await engine.prove_face(state, JPEG)
    decision = await engine.authorize("transaction", state, online=False)
    assert decision.allowed
    assert sorted(f.kind for f in decision.used) == ["face", "idcard"]
    assert cloud.calls == []


async def test_staffcard_and_totp_pass_offline(
    make_engine: EngineFactory, cloud: CloudStandIn, clock: FakeClock
) -> None:
    cloud.online = False
    engine = await make_engine()
    state = engine.new_state("t1", "technician")
    await engine.prove_staffcard(state, "04A2B3C4D5E6F7")
    await engine.prove_totp(state, None, totp_value(RFC_SHA1_SEED, clock()))
    assert (await engine.authorize("maintenance", state, online=False)).allowed


async def test_online_only_pair_is_denied_offline(make_engine: EngineFactory, cloud: CloudStandIn) -> None:
    engine = await make_engine()
    state = engine.new_state("s1")
    await engine.prove_idcard(state, CITIZEN_A, photo=PHOTO)
    await engine.otp_challenge(state)
    await engine.prove_otp(state, cloud.last_code(CITIZEN_A))
    assert (await engine.authorize("transaction", state, online=True)).allowed
    with pytest.raises(PolicyDenied) as err:
        await engine.authorize("transaction", state, online=False)
    assert err.value.reason == "offline_combination_not_allowed"


async def test_operation_without_offline_combos_is_denied_offline(
    make_engine: EngineFactory, clock: FakeClock
) -> None:
    policy = {"maintenance": {"session_kinds": ["technician"], "offline_allowed": []}}
    engine = await make_engine(settings=make_settings(policy=policy))
    state = engine.new_state("t1", "technician")
    await engine.prove_staffcard(state, "04A2B3C4D5E6F7")
    await engine.prove_totp(state, None, totp_value(RFC_SHA1_SEED, clock()))
    with pytest.raises(PolicyDenied, match="offline_not_allowed"):
        await engine.authorize("maintenance", state, online=False)
    assert (await engine.authorize("maintenance", state, online=True)).allowed
