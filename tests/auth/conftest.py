"""Fixtures for the auth engine tests: real SQLite state dir, settings from config, the engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web

from gateway.auth import Authenticator, AuthSettings, AuthStore, FaceVerifier
from tests.auth.face_service import FaceService
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


@pytest.fixture
async def face_service() -> AsyncIterator[FaceService]:
    """The face-compare stand-in listening on a free loopback port."""
    service = FaceService()
    app = web.Application()
    app.router.add_post("/compare", service.compare)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    service.url = f"http://127.0.0.1:{port}/compare"
    try:
        yield service
    finally:
        service.release.set()
        await runner.cleanup()
