"""Fixtures for the outbox, link and publisher tests: keys, a sealer, real brokers."""

from __future__ import annotations

import pytest

from gateway.uplink.envelope import Sealer
from gateway.uplink.keys import KeyRing, NodeKey

NODE = "edge-t1"


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
