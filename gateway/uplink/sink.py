"""The outbox as the gateway's CloudSink, and a sealer whose key can be swapped at a rotation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.cloud import Queued
from gateway.uplink.envelope import Sealer
from gateway.uplink.outbox import Outbox


class SwitchableSealer:
    """Seals with the current node key; a rotation swaps it (an attribute swap, safe across threads)."""

    def __init__(self, sealer: Sealer) -> None:
        self.current = sealer

    def seal(self, *, stream: str, seq: int, prev: str, type: str, body: Any) -> bytes:
        return self.current.seal(stream=stream, seq=seq, prev=prev, type=type, body=body)

    @property
    def kid(self) -> str:
        return self.current.kid


class OutboxSink:
    """`send` returns once the signed envelope is committed to the outbox."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def send(self, stream: str, type: str, body: Mapping[str, Any]) -> Queued:
        enqueued = await self.outbox.enqueue(stream, type, dict(body))
        return Queued(enqueued.stream, enqueued.seq)
