"""Request/response correlation and the one-command-in-flight gate for half-duplex devices."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Generic, TypeVar

V = TypeVar("V")
K = TypeVar("K")


class FifoReplies(Generic[V]):
    """Replies that carry no request id: the oldest waiting request gets the next reply."""

    def __init__(self) -> None:
        self._waiting: deque[asyncio.Future[V]] = deque()

    def __len__(self) -> int:
        return len(self._waiting)

    def expect(self) -> asyncio.Future[V]:
        """Register interest in the next reply; call before writing the request."""
        fut: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        return fut

    def resolve(self, value: V) -> bool:
        """Hand a reply to the oldest waiter; False when nobody waits (an unsolicited reply)."""
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_result(value)
                return True
        return False

    def forget(self, fut: asyncio.Future[V]) -> None:
        """Remove a waiter (in `finally`, whether it got its reply or not)."""
        with suppress(ValueError):
            self._waiting.remove(fut)

    def fail_all(self, exc: BaseException) -> None:
        """Fail every waiter at once (connection lost)."""
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_exception(exc)


class OwedReplies:
    """Answers still owed to commands nobody waits for any more (timed out, caller gone).

    Where replies carry no request id, such an answer arriving late would be taken for the next
    command's. So the next command first `settle`s: it waits until the owed answers have come
    (each is discarded through `take`) or until their window has passed.
    """

    def __init__(self) -> None:
        self._count = 0
        self._until = 0.0
        self._paid = asyncio.Event()
        self.discarded = 0

    def __bool__(self) -> bool:
        return self._count > 0

    def owe(self, count: int, *, until: float) -> None:
        """`count` answers may still arrive, up to `until` (monotonic time)."""
        if count <= 0:
            return
        self._count += count
        self._until = max(self._until, until)
        self._paid.clear()

    def take(self) -> bool:
        """An answer arrived: True (and it is discarded) when it is one of those owed."""
        if not self._count:
            return False
        self._count -= 1
        self.discarded += 1
        if not self._count:
            self._paid.set()
        return True

    async def settle(self) -> None:
        """Return once nothing is owed: every owed answer came, or the window passed (then the
        debt is written off). Returns at once when nothing is owed."""
        if self._count:
            remaining = self._until - time.monotonic()
            if remaining > 0:
                with suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._paid.wait()
        self._count = 0
        self._until = 0.0


class KeyedReplies(Generic[K, V]):
    """Replies that name their request: each key has at most one waiter."""

    def __init__(self) -> None:
        self._waiting: dict[K, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def expect(self, key: K) -> asyncio.Future[V]:
        if key in self._waiting and not self._waiting[key].done():
            raise RuntimeError(f"a request with key {key!r} is already waiting")
        fut: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._waiting[key] = fut
        return fut

    def resolve(self, key: K, value: V) -> bool:
        fut = self._waiting.pop(key, None)
        if fut is None or fut.done():
            return False
        fut.set_result(value)
        return True

    def forget(self, key: K) -> None:
        self._waiting.pop(key, None)

    def fail_all(self, exc: BaseException) -> None:
        waiting, self._waiting = self._waiting, {}
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(exc)


class CommandGate:
    """Admits one command at a time to a device and keeps the queue visible (depth, wait)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._waiting = 0
        self.last_wait_s = 0.0

    @property
    def depth(self) -> int:
        """Commands waiting for the device, not counting the one in flight."""
        return self._waiting

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    async def acquire(self) -> float:
        """Wait for the device; returns the seconds spent waiting. Callers bound it with a timeout."""
        started = time.monotonic()
        self._waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self._waiting -= 1
        self.last_wait_s = time.monotonic() - started
        return self.last_wait_s

    def release(self) -> None:
        self._lock.release()

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[float]:
        """`acquire` and `release` as a context manager; yields the seconds spent waiting."""
        waited = await self.acquire()
        try:
            yield waited
        finally:
            self.release()
