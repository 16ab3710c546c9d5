"""Fixtures for the outbox, link and publisher tests: keys, a sealer, real brokers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.uplink.envelope import Sealer
from gateway.uplink.keys import KeyRing, NodeKey
from tests.support.mosquitto import Mosquitto, MosquittoMissing, mosquitto_binary

NODE = "edge-t1"

BrokerFactory = Callable[..., Mosquitto]


@pytest.fixture
def node_key() -> NodeKey:
    return NodeKey.generate(NODE)


@pytest.fixture
def sealer(node_key: NodeKey) -> Sealer:
    return Sealer(node_key, NODE)


@pytest.fixture
def ring(node_key: NodeKey) -> KeyRing:
    """What the cloud trusts: this node's public key."""
    return KeyRing.from_jwks([node_key.public_jwk])


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[BrokerFactory]:
    """Start real mosquitto brokers on free ports; all are stopped at the end."""
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
