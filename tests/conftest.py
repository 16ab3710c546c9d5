"""Suite-wide fixtures: the task-leak check, short state dirs, real mosquitto brokers."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.auth.face_service import FaceService
from tests.support.daemon import short_tmpdir
from tests.support.mosquitto import BrokerFactory, Mosquitto, MosquittoMissing, mosquitto_binary


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A state dir short enough for the API socket path (107 bytes at most)."""
    path = short_tmpdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[BrokerFactory]:
    """Start real mosquitto brokers on free loopback ports; all are killed at the end."""
    try:
        mosquitto_binary()
    except MosquittoMissing as err:
        pytest.fail(str(err))
    brokers: list[Mosquitto] = []

    def make(**kwargs: Any) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"broker{len(brokers)}", **kwargs)
        brokers.append(broker)
        broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.kill()


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """A test must end every task it started; a leftover task is a bug in the code or the test."""
    before = set(asyncio.all_tasks())
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() if t not in before and t is not current and not t.done()]
    if leaked:
        for task in leaked:
            task.cancel()
        await asyncio.gather(*leaked, return_exceptions=True)
        pytest.fail(f"test left {len(leaked)} task(s) running: {[t.get_coro() for t in leaked]}")


@pytest.fixture
async def face_service() -> AsyncIterator[FaceService]:
    """The face-compare stand-in listening on a free loopback port."""
    service = FaceService()
    app = web.Application()
    app.router.add_post("/compare", service.compare)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    service.url = f"http://127.0.0.1:{runner.addresses[0][1]}/compare"
    try:
        yield service
    finally:
        service.release.set()
        await runner.cleanup()
