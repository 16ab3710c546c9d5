"""The one interface parts use to send something to the cloud (the outbox implements it)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Queued:
    """A message accepted for the cloud: its stream and sequence number."""

    stream: str
    seq: int
    state: str = "queued"


class CloudSink(Protocol):
    """Accepts a message for the cloud; returns once it is durably queued."""

    async def send(self, stream: str, type: str, body: Mapping[str, Any]) -> Queued: ...


class MemorySink:
    """In-process sink for tests and for a gateway without an outbox: keeps what was sent."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, dict[str, Any]]] = []
        self._seq: dict[str, int] = {}
        self.changed = asyncio.Event()

    async def send(self, stream: str, type: str, body: Mapping[str, Any]) -> Queued:
        seq = self._seq.get(stream, 0) + 1
        self._seq[stream] = seq
        self.messages.append((stream, type, dict(body)))
        self.changed.set()
        return Queued(stream, seq)
