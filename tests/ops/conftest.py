"""Fixtures for the ops tests: short state dirs (Unix socket paths), real mosquitto brokers."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import short_tmpdir
from tests.support.mosquitto import Mosquitto, MosquittoMissing, mosquitto_binary

BrokerFactory = Callable[..., Mosquitto]


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
