"""Fixtures for the envelope, key and command tests: node and cloud keys, stream builders."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.uplink.envelope import GENESIS_PREV, Sealer, envelope_digest
from gateway.uplink.keys import KeyRing, NodeKey, format_rfc3339

NODE = "edge-001"
T0 = datetime(2026, 11, 26, 9, 13, 3, 123000, tzinfo=UTC)

StreamBuilder = Callable[..., list[bytes]]


@pytest.fixture
def node_key() -> NodeKey:
    """A fresh node key for edge-001."""
    return NodeKey.generate(NODE)


@pytest.fixture
def cloud_key() -> NodeKey:
    """A cloud command-signing key with a cloud-chosen kid."""
    return NodeKey(Ed25519PrivateKey.generate(), "cloud-2026-1")


@pytest.fixture
def node_ring(node_key: NodeKey) -> KeyRing:
    """What the cloud trusts: the node's public JWK."""
    return KeyRing.from_jwks([node_key.public_jwk])


@pytest.fixture
def cloud_ring(cloud_key: NodeKey) -> KeyRing:
    """What the node trusts for commands: the cloud's public JWK."""
    return KeyRing.from_jwks([cloud_key.public_jwk])


@pytest.fixture
def make_stream(node_key: NodeKey) -> StreamBuilder:
    """Build a hash-chained stream of envelopes seq start..start+count-1, one second apart."""

    def build(
        count: int,
        *,
        stream: str = "tx",
        start: int = 1,
        key: NodeKey | None = None,
        prev: str = GENESIS_PREV,
        t0: datetime = T0,
    ) -> list[bytes]:
        sealer = Sealer(key or node_key, NODE)
        out: list[bytes] = []
        for i in range(count):
            raw = sealer.seal(
                stream=stream,
                seq=start + i,
                prev=prev,
                type="service_request",
                body={"service": "certificate", "n": i},
                ts=format_rfc3339(t0 + timedelta(seconds=i)),
            )
            out.append(raw)
            prev = envelope_digest(raw)
        return out

    return build
