"""Fixtures for the auth engine tests: real SQLite state dir, settings from config, the engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.auth import Authenticator, AuthSettings, AuthStore, FaceVerifier
from tests.auth.helpers import AuditLog, CloudStandIn, EngineFactory, FakeClock, make_settings


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def audit() -> AuditLog:
    return AuditLog()


@pytest.fixture
def cloud() -> CloudStandIn:
    return CloudStandIn()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
async def make_engine(
    state_dir: Path, clock: FakeClock, audit: AuditLog, cloud: CloudStandIn
) -> AsyncIterator[EngineFactory]:
    """Build engines on the shared state dir; a second call after closing the first = a restart."""
    opened: list[tuple[Authenticator, AuthStore]] = []

    async def factory(
        *,
        settings: AuthSettings | None = None,
        online: Callable[[], bool] | None = None,
        face_verifier: FaceVerifier | None = None,
    ) -> Authenticator:
        store = await AuthStore.open(state_dir)
        engine = Authenticator(
            settings or make_settings(),
            store,
            audit=audit,
            cloud_request=cloud,
            is_online=online or (lambda: cloud.online),
            face_verifier=face_verifier,
            clock=clock,
        )
        opened.append((engine, store))
        return engine

    yield factory
    for engine, store in opened:
        await engine.close()
        await store.close()
