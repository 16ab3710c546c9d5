"""Face factor against a real local HTTP face-compare service, and the cloud verifier."""

from __future__ import annotations

import os

import pytest

from gateway.auth import (
    FactorFailed,
    FactorUnavailable,
    HttpFaceVerifier,
    PolicyDenied,
    Throttled,
    VerifierError,
    VerifierTimeout,
)
from tests.auth.face_service import FaceService
from tests.auth.helpers import (
    CITIZEN_A,
    JPEG,
    AuditLog,
    CloudStandIn,
    EngineFactory,
    FakeClock,
    make_settings,
)

PHOTO = os.urandom(1024)  # the WLT photo from the ID card: opaque bytes


def http_settings(url: str, **face: object) -> dict[str, object]:
    return {"verifier": "http", "url": url, "timeout_s": 2.0, **face}


async def test_match_grants_the_face_factor_bound_to_the_idcard(
    make_engine: EngineFactory, face_service: FaceService, audit: AuditLog
) -> None:
    engine = await make_engine(settings=make_settings(face=http_settings(face_service.url)))
    state = engine.new_state("s1")
    with pytest.raises(PolicyDenied) as no_card:
        await engine.prove_face(state, JPEG)
    assert no_card.value.reason == "idcard_required"
    idcard = await engine.prove_idcard(state, CITIZEN_A, photo=PHOTO)
    face = await engine.prove_face(state, JPEG)
    assert (face.kind, face.category, face.cryptographic) == ("face", "inherence", False)
    assert face.subject == idcard.subject
    # The service got our probe and the card's photo byte for byte.
    [request] = face_service.requests
    assert request["probe"] == JPEG and request["reference"] == PHOTO
    assert request["probe_format"] == "jpeg" and request["reference_format"] == "wlt"
    assert audit.of("auth.success")[-1]["score"] == 0.93
    decision = await engine.authorize("transaction", state, online=True)
    assert decision.allowed


@pytest.mark.parametrize(("mode", "reason"), [("low", "face_mismatch"), ("spoof", "no_liveness")])
async def test_below_threshold_or_no_liveness_is_a_failure(
    make_engine: EngineFactory, face_service: FaceService, mode: str, reason: str
) -> None:
    face_service.mode = mode
    engine = await make_engine(settings=make_settings(face=http_settings(face_service.url)))
    state = engine.new_state("s1")
    await engine.prove_idcard(state, CITIZEN_A, photo=PHOTO)
    with pytest.raises(FactorFailed) as err:
        await engine.prove_face(state, JPEG)
    assert err.value.reason == reason
    assert [f.kind for f in state.factors] == ["idcard"]


async def test_liveness_can_be_switched_off_by_config(
    make_engine: EngineFactory, face_service: FaceService
) -> None:
    face_service.mode = "spoof"
    settings = make_settings(face=http_settings(face_service.url, require_liveness=False))
    engine = await make_engine(settings=settings)
    state = engine.new_state("s1")
    await engine.prove_idcard(state, CITIZEN_A, photo=PHOTO)
    await engine.prove_face(state, JPEG)


async def test_threshold_is_configurable(make_engine: EngineFactory, face_service: FaceService) -> None:
    settings = make_settings(face=http_settings(face_service.url, threshold=0.95))
    engine = await make_engine(settings=settings)
    state = engine.new_state("s1")
    await engine.prove_idcard(state, CITIZEN_A, photo=PHOTO)
    with pytest.raises(FactorFailed, match="face_mismatch"):
        await engine.prove_face(state, JPEG)


async def test_timeout_is_a_verifier_error_and_no_factor(
    make_engine: EngineFactory, face_service: FaceService, audit: AuditLog
) -> None:
    face_service.mode = "slow"
    settings = make_settings(face=http_settings(face_service.url, timeout_s=0.3))
    engine = await make_engine(settings=settings)
    state = engine.new_state("s1")
    await engine.prove_idcard(state, CITIZEN_A, photo=PHOTO)
    with pytest.raises(VerifierTimeout) as err:
        await engine.prove_face(state, JPEG)
    assert isinstance(err.value, TimeoutError) and isinstance(err.value, VerifierError)
    assert err.value.status == 503
    assert [f.kind for f in state.factors] == ["idcard"]
    assert audit.of("auth.unavailable")[-1]["code"] == "verifier_timeout"
    # A broken verifier is not the citizen's failure: nothing was counted against them.
    assert audit.of("auth.failure") == []


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("garbage", "answer_not_json"),
        ("wrong_types", "answer_score_missing"),
        ("out_of_range", "answer_score_out_of_range"),
        ("missing", "answer_score_missing"),
        ("error", "http_status_500"),
        ("huge", "answer_too_large"),
    ],
)
async def test_garbage_answers_are_verifier_errors(face_service: FaceService, mode: str, reason: str) -> None:
    face_service.mode = mode
    verifier = HttpFaceVerifier(face_service.url, timeout=2.0)
    try:
        with pytest.raises(VerifierError) as err:
            await verifier.compare(JPEG, PHOTO)
        assert err.value.reason == reason
    finally:
        await verifier.close()


async def test_unreachable_service_and_bad_probe(face_service: FaceService) -> None:
    verifier = HttpFaceVerifier("http://127.0.0.1:9/compare", timeout=2.0)
    try:
        with pytest.raises(VerifierError, match="unreachable"):
            await verifier.compare(JPEG, PHOTO)
        with pytest.raises(VerifierError, match="probe_not_jpeg"):
            await verifier.compare(b"GIF89a", PHOTO)
    finally:
        await verifier.close()
    assert face_service.requests == []


async def test_verifier_none_means_unavailable(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    state = engine.new_state("s1")
    await engine.prove_idcard(state, CITIZEN_A, photo=PHOTO)
    with pytest.raises(FactorUnavailable, match="face_verifier_disabled"):
        await engine.prove_face(state, JPEG)


async def test_cloud_verifier(make_engine: EngineFactory, cloud: CloudStandIn, clock: FakeClock) -> None:
    engine = await make_engine(settings=make_settings(face={"verifier": "cloud"}))
    state = engine.new_state("s1")
    await engine.prove_idcard(state, CITIZEN_A, photo=PHOTO)
    await engine.prove_face(state, JPEG)
    assert cloud.calls[-1][0] == "face.compare"
    cloud.face_answer = {"score": 0.99}
    with pytest.raises(VerifierError, match="answer_liveness_missing"):
        await engine.prove_face(state, JPEG)


async def test_face_lockout_after_five_mismatches(
    make_engine: EngineFactory, face_service: FaceService
) -> None:
    face_service.mode = "low"
    engine = await make_engine(settings=make_settings(face=http_settings(face_service.url)))
    state = engine.new_state("s1")
    await engine.prove_idcard(state, CITIZEN_A, photo=PHOTO)
    for _ in range(5):
        with pytest.raises(FactorFailed) as err:
            await engine.prove_face(state, JPEG)
    assert err.value.retry_after_s is not None and err.value.retry_after_s >= 30
    with pytest.raises(Throttled):
        await engine.prove_face(state, JPEG)
    assert len(face_service.requests) == 5  # the throttled try never reached the service
