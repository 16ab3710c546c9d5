"""Per-session event hubs feeding server-sent event streams, bounded so a stuck reader costs nothing."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """One event for a session's stream."""

    id: int
    type: str
    data: dict[str, Any]
    at: float = field(default_factory=time.time)

    def sse(self) -> bytes:
        payload = json.dumps({"type": self.type, "at": self.at, **self.data}, ensure_ascii=False)
        return f"id: {self.id}\nevent: {self.type}\ndata: {payload}\n\n".encode()


class Subscription:
    """One reader's bounded buffer; overflowing closes it with a reason instead of growing."""

    def __init__(self, limit: int) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=limit)
        self.closed_reason: str | None = None
        self._closed = asyncio.Event()

    def offer(self, event: Event) -> None:
        if self.closed_reason is not None:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.close("slow_consumer: the event buffer filled up; reconnect to resume")

    def close(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
            self._closed.set()

    async def next(self, wait_s: float) -> Event | None:
        """The next event, or None after `wait_s` (time for a heartbeat) or when closed."""
        if self.closed_reason is not None and self.queue.empty():
            return None
        if not self.queue.empty():
            return self.queue.get_nowait()
        getter = asyncio.ensure_future(self.queue.get())
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            done, _ = await asyncio.wait(
                {getter, closed}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for fut in (getter, closed):
                if not fut.done():
                    fut.cancel()
        if getter in done:
            return getter.result()
        return None


class EventHub:
    """Fans a session's events out to its subscribers."""

    def __init__(self, buffer: int) -> None:
        self._ids = itertools.count(1)
        self.buffer = buffer
        self._subscribers: list[Subscription] = []
        self.published = 0

    def publish(self, type: str, **data: Any) -> Event:
        event = Event(next(self._ids), type, data)
        self.published += 1
        for sub in list(self._subscribers):
            sub.offer(event)
            if sub.closed_reason is not None:
                self._subscribers.remove(sub)
        return event

    def subscribe(self) -> Subscription:
        sub = Subscription(self.buffer)
        self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)

    def close(self, reason: str) -> None:
        for sub in self._subscribers:
            sub.close(reason)
        self._subscribers.clear()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
