"""Lockouts: a growing wait after 5 failures, disabled after 100, re-enabled by ops, persisted."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

import pytest

from gateway.auth import FactorDisabled, FactorFailed, Throttled
from gateway.auth.totp import totp_value
from tests.auth.helpers import (
    CITIZEN_A,
    RFC_SHA1_SEED,
    AuditLog,
    EngineFactory,
    FakeClock,
    make_settings,
    restart,
)

WRONG = "000000"


def good_code(clock: FakeClock) -> str:
    return totp_value(RFC_SHA1_SEED, clock())


async def test_wait_after_five_failures_grows_and_success_resets(
    make_engine: EngineFactory, clock: FakeClock, audit: AuditLog
) -> None:
    engine = await make_engine()
    state = engine.new_state("t1", "technician")
    for n in range(1, 5):
        with pytest.raises(FactorFailed) as err:
            await engine.prove_totp(state, "tech01", WRONG)
        assert err.value.retry_after_s is None, n
    with pytest.raises(FactorFailed) as fifth:
        await engine.prove_totp(state, "tech01", WRONG)
    assert fifth.value.retry_after_s == 30
    assert audit.of("auth.lockout")[-1]["retry_after_s"] == 30

    # During the wait even the right code is refused, without being checked.
    with pytest.raises(Throttled) as wait:
        await engine.prove_totp(state, "tech01", good_code(clock))
    assert wait.value.retry_after_s == 30
    assert wait.value.fields()["retry_after_s"] == 30
    clock.advance(29.5)
    with pytest.raises(Throttled) as almost:
        await engine.prove_totp(state, "tech01", good_code(clock))
    assert almost.value.retry_after_s == 1

    clock.advance(0.5)
    with pytest.raises(FactorFailed) as sixth:
        await engine.prove_totp(state, "tech01", WRONG)
    assert sixth.value.retry_after_s == 60  # 30 s * 2^(6-5)
    clock.advance(60)
    with pytest.raises(FactorFailed) as seventh:
        await engine.prove_totp(state, "tech01", WRONG)
    assert seventh.value.retry_after_s == 120

    # The wait survives a restart (it is in auth.sqlite, not in memory).
    engine = await restart(engine, make_engine)
    with pytest.raises(Throttled):
        await engine.prove_totp(state, "tech01", good_code(clock))

    clock.advance(120)
    await engine.prove_totp(state, "tech01", good_code(clock))
    # Success reset the count: one new failure starts no wait.
    with pytest.raises(FactorFailed) as after:
        await engine.prove_totp(state, "tech01", WRONG)
    assert after.value.retry_after_s is None

    # Other staff members and other factors are not affected by tech01's TOTP failures.
    assert [f.kind for f in state.factors] == ["totp"]


async def test_wait_is_capped_at_one_hour(make_engine: EngineFactory, clock: FakeClock) -> None:
    engine = await make_engine()
    state = engine.new_state("t1", "technician")
    last = 0
    for _ in range(20):
        with pytest.raises(FactorFailed) as err:
            await engine.prove_pin(state, "tech01", "111111")
        last = err.value.retry_after_s or 0
        clock.advance(last)
    assert last == 3600


async def test_disabled_after_100_until_ops_reenable(
    make_engine: EngineFactory, clock: FakeClock, audit: AuditLog
) -> None:
    engine = await make_engine()
    state = engine.new_state("t1", "technician")
    for _ in range(100):
        with pytest.raises(FactorFailed) as err:
            await engine.prove_totp(state, "tech01", WRONG)
        clock.advance(err.value.retry_after_s or 0)
    assert len(audit.of("auth.disabled")) == 1
    clock.advance(86400)
    with pytest.raises(FactorDisabled):
        await engine.prove_totp(state, "tech01", good_code(clock))
    [record] = await engine.disabled()
    assert (record.subject, record.authenticator, record.consecutive) == ("staff:tech01", "totp", 100)

    engine = await restart(engine, make_engine)
    with pytest.raises(FactorDisabled):
        await engine.prove_totp(state, "tech01", good_code(clock))
    # The disable is per authenticator: the PIN still works.
    await engine.prove_pin(state, "tech01", "482915")

    assert await engine.reenable("tech01", "totp") is True
    assert audit.of("auth.reenabled")[-1] == {
        "factor": "totp",
        "subject": "tech01",
        "subject_kind": "staff",
        "lifted": True,
    }
    await engine.prove_totp(state, "tech01", good_code(clock))
    assert await engine.disabled() == []
    with pytest.raises(ValueError, match="unknown authenticator"):
        await engine.reenable("tech01", "retina")


async def test_citizen_lockout_is_keyed_by_hash_and_reenabled_by_id_number(
    make_engine: EngineFactory, clock: FakeClock
) -> None:
    settings = make_settings(lockout={"threshold": 2, "disable_after": 3})
    engine = await make_engine(settings=settings)
    state = engine.new_state("s1")
    await engine.prove_idcard(state, CITIZEN_A, photo=os.urandom(64))
    await engine.otp_challenge(state)
    for _ in range(3):
        with pytest.raises(FactorFailed) as err:
            await engine.prove_otp(state, "999999")
        clock.advance(err.value.retry_after_s or 0)
    with pytest.raises(FactorDisabled):
        await engine.prove_otp(state, "999999")
    [record] = await engine.disabled()
    assert record.subject.startswith("citizen:") and CITIZEN_A not in record.subject
    assert await engine.reenable(CITIZEN_A, "otp") is True
    assert await engine.disabled() == []


async def test_store_is_a_wal_sqlite_file(make_engine: EngineFactory, state_dir: Path) -> None:
    engine = await make_engine()
    state = engine.new_state("t1", "technician")
    with pytest.raises(FactorFailed):
        await engine.prove_totp(state, "tech01", WRONG)
    with contextlib.closing(sqlite3.connect(state_dir / "auth.sqlite")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = db.execute("SELECT subject, authenticator, consecutive FROM failures").fetchall()
    assert rows == [("staff:tech01", "totp", 1)]
