"""One command/reply exchange with a serial device whose replies name no command.

Both serial drivers talk this way: the SAM_V reader (one reply frame per command) and the ESC/POS
printer's real-time status (DLE EOT n, one byte each). An exchange goes:

1. `turn`: take the device's command gate within a bound, else the caller's "busy" error;
2. `ask`: settle what an earlier exchange still owes (wait for those late replies, or for the
   end of their window), expect the replies, send, and await them within the window; a reply
   the caller says is not its own (`fits`) is skipped and the next one awaited instead;
3. when the wait ends short of every reply (timeout, or the caller went away), the missing
   replies are owed: the next exchange waits for them until `owed_until`, and when they come
   they are discarded instead of being taken as the next command's answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from drivers.serialio.correlation import CommandGate, FifoReplies, OwedReplies

V = TypeVar("V")


class UnnamedReplies(FifoReplies[V]):
    """Replies that name no request: the oldest waiter takes the next one, unless it is owed.

    The link protocol calls `take_late` first for every reply (True: an abandoned exchange's
    answer, drop it), then `resolve`. `after_settle` runs once owed replies were waited out
    (the SAM_V reader drops a partial frame there).
    """

    def __init__(self, *, after_settle: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.owed = OwedReplies()
        self._after_settle = after_settle

    @property
    def late(self) -> int:
        """Late replies discarded so far."""
        return self.owed.discarded

    def owe(self, count: int, *, until: float) -> None:
        """`count` replies to an abandoned exchange may still arrive, up to `until` (monotonic)."""
        self.owed.owe(count, until=until)

    def take_late(self) -> bool:
        """A reply arrived: True (drop it) when it is one still owed to an abandoned exchange."""
        return self.owed.take()

    async def settle(self) -> None:
        """Before sending: wait until nothing is owed (paid or written off). At once if nothing is."""
        if self.owed:
            await self.owed.settle()
            if self._after_settle is not None:
                self._after_settle()


@asynccontextmanager
async def turn(
    gate: CommandGate, *, within: float, busy: Callable[[], BaseException]
) -> AsyncIterator[float]:
    """Hold the device's gate for the body; yields the seconds waited. `busy()` is raised when
    the gate is not free within `within` seconds."""
    try:
        async with asyncio.timeout(within):
            waited = await gate.acquire()
    except TimeoutError:
        raise busy() from None
    try:
        yield waited
    finally:
        gate.release()


async def ask(
    replies: UnnamedReplies[V],
    send: Callable[[], None],
    *,
    window: float,
    no_reply: Callable[[], BaseException],
    owed_until: Callable[[float], float],
    count: int = 1,
    fits: Callable[[V], bool] | None = None,
    misfit: Callable[[V], None] | None = None,
) -> list[V]:
    """Settle, expect `count` replies, `send()`, and return the replies awaited within `window`.

    On timeout `no_reply()` is raised. Replies still missing when the wait ends (timeout, a
    cancelled caller, a failed send) are owed until `owed_until(sent_at)`, computed then. A
    reply that `fits` rejects is reported to `misfit` and the next one awaited in its place (for
    one reply per request: the replacement waits behind any others of the same exchange).
    A reply that came as an error (a corrupt frame) was answered: nothing is owed for it.
    """
    await replies.settle()
    futures = [replies.expect() for _ in range(count)]
    sent_at = time.monotonic()
    try:
        send()
        async with asyncio.timeout(window):
            return [await _own_reply(replies, futures, index, fits, misfit) for index in range(count)]
    except TimeoutError:
        raise no_reply() from None
    finally:
        unanswered = sum(not fut.done() or fut.cancelled() for fut in futures)
        for fut in futures:
            replies.forget(fut)
            fut.cancel()
        if unanswered:
            replies.owe(unanswered, until=owed_until(sent_at))


async def _own_reply(
    replies: UnnamedReplies[V],
    futures: list[asyncio.Future[V]],
    index: int,
    fits: Callable[[V], bool] | None,
    misfit: Callable[[V], None] | None,
) -> V:
    """The reply awaited at `index`, skipping (and reporting) any that is not this exchange's."""
    value = await futures[index]
    while fits is not None and not fits(value):
        if misfit is not None:
            misfit(value)
        replies.forget(futures[index])
        futures[index] = replies.expect()
        value = await futures[index]
    return value
