"""No raw ID number leaves the engine: not in audit records, not in auth.sqlite, not in reprs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.auth import AuthError
from tests.auth.face_service import FaceService
from tests.auth.helpers import (
    CITIZEN_A,
    CITIZEN_B,
    JPEG,
    AuditLog,
    CloudStandIn,
    EngineFactory,
    FakeClock,
    make_settings,
    restart,
)


async def test_no_audit_record_or_stored_byte_holds_a_raw_id_number(
    make_engine: EngineFactory,
    cloud: CloudStandIn,
    audit: AuditLog,
    clock: FakeClock,
    face_service: FaceService,
    state_dir: Path,
) -> None:
    settings = make_settings(face={"verifier": "http", "url": face_service.url}, lockout={"disable_after": 7})
    engine = await make_engine(settings=settings)
    photo = os.urandom(1024)
    # Everything a citizen can do: successes, failures, lockout, disable, decisions, re-enable.
    locked = engine.new_state("s0")
    await engine.prove_idcard(locked, CITIZEN_A, photo=photo)
    await engine.otp_challenge(locked)
    for _ in range(7):
        with pytest.raises(AuthError):
            await engine.prove_otp(locked, "000001")
        clock.advance(60)
    await engine.reenable(CITIZEN_A, "otp")
    state = engine.new_state("s1")
    await engine.prove_idcard(state, CITIZEN_A, photo=photo)
    await engine.prove_sscard(state, CITIZEN_A)
    await engine.prove_face(state, JPEG)
    await engine.otp_challenge(state)
    await engine.prove_otp(state, cloud.last_code(CITIZEN_A))
    await engine.authorize("transaction", state, online=True)
    other = engine.new_state("s2")
    await engine.prove_sscard(other, CITIZEN_B)
    with pytest.raises(AuthError):
        await engine.authorize("transaction", other, online=False)
    with pytest.raises(AuthError):
        await engine.prove_idcard(other, CITIZEN_B[:-1] + "0", photo=photo)  # bad check char
    engine = await restart(engine, make_engine, settings=settings)

    types = set(audit.types())
    assert {"auth.attempt", "auth.success", "auth.failure", "auth.lockout", "auth.disabled"} <= types
    assert {"auth.reenabled", "auth.decision", "auth.otp_challenge"} <= types
    dump = audit.dump()
    for raw in (CITIZEN_A, CITIZEN_B, CITIZEN_B[:-1] + "0"):
        assert raw not in dump
        assert raw[:14] not in dump  # not even most of it
    assert CITIZEN_A[:3] + "*" * 11 + CITIZEN_A[-4:] in dump  # the masked form is what appears

    # The persistent state (database, WAL, secret) holds hashes only.
    files = list(state_dir.iterdir())
    assert any(f.name == "auth.sqlite" for f in files)
    for path in files:
        data = path.read_bytes()
        for raw in (CITIZEN_A, CITIZEN_B):
            assert raw.encode() not in data, path.name
            assert raw.encode("utf-16-le") not in data, path.name
    assert (state_dir / "auth.key").stat().st_mode & 0o077 == 0

    # Reprs that might end up in a log or a traceback are masked too.
    for shown in (repr(state), repr(state.idcard), repr(state.factors), repr(state.otp_challenge)):
        assert CITIZEN_A not in shown


async def test_subject_keys_are_node_local(make_engine: EngineFactory, tmp_path: Path) -> None:
    from gateway.auth import AuthStore
    from gateway.auth.subjects import SubjectKeys

    engine = await make_engine()
    other = await AuthStore.open(tmp_path / "other-node")
    try:
        mine = engine.keys.citizen(CITIZEN_A)
        theirs = SubjectKeys(other.secret).citizen(CITIZEN_A)
        assert mine.masked == theirs.masked and mine.key != theirs.key
        assert engine.keys.citizen(CITIZEN_A.lower()) == mine
    finally:
        await other.close()
