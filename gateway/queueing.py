"""Per-device request queues: fair across sessions, bounded, with deadlines, one operation in flight."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog

from gateway.errors import GatewayError
from gateway.status import QueueSnapshot
from gateway.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Until a device has been observed, assume this service time for estimates (seconds).
INITIAL_SERVICE_ESTIMATE = 0.5
# Weight of the newest sample in the service-time moving average.
EWMA_ALPHA = 0.2


class QueueError(GatewayError):
    """Root of queueing errors."""

    def __init__(self, message: str, *, device: str) -> None:
        super().__init__(message)
        self.device = device


class QueueFull(QueueError):
    """The device's queue is at its bound; try again after `retry_after` seconds."""

    def __init__(self, message: str, *, device: str, retry_after: float, depth: int) -> None:
        super().__init__(message, device=device)
        self.retry_after = retry_after
        self.depth = depth


class DeadlineExpired(QueueError, TimeoutError):
    """The request's deadline passed before the device could serve it (or while it did)."""


class RequestCancelled(QueueError):
    """The request was withdrawn: its session ended or the queue closed."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where a waiting request stands: how many go before it and the estimated wait."""

    ahead: int
    estimated_wait_s: float


PositionListener = Callable[[Position], None]
# Called after every operation that reached the device: (device, seconds, error or None).
CompletionListener = Callable[[str, float, BaseException | None], None]


@dataclass(eq=False)
class _Request(Generic[T]):
    operation: Callable[[], Awaitable[T]]
    session: str | None
    deadline: float
    key: tuple[float, int, int]
    future: asyncio.Future[T]
    priority: bool
    enqueued_at: float
    on_position: PositionListener | None = None
    last_reported: int = -1
    label: str = ""


@dataclass
class QueueStats:
    """Counters for status, metrics and usage roll-ups."""

    served: int = 0
    failed: int = 0
    expired: int = 0
    cancelled: int = 0
    rejected_full: int = 0
    wait_samples: list[float] = field(default_factory=list)

    def record_wait(self, seconds: float) -> None:
        self.wait_samples.append(seconds)
        if len(self.wait_samples) > 1024:
            del self.wait_samples[:512]


class DeviceQueue:
    """Serves one device: a priority lane first, then start-time fair queuing between sessions.

    Each request gets a virtual finish tag `max(V, last tag of its session) + 1`, where V is the tag
    of the request now being served; the smallest tag goes next. A session that queues twenty jobs
    therefore gets every other turn, and a newcomer is never behind more than one of its jobs.
    """

    def __init__(
        self,
        device: str,
        *,
        depth: int,
        deadline_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.device = device
        self.depth = depth
        self.deadline_s = deadline_s
        self._clock = clock
        self._waiting: list[_Request[Any]] = []
        self._priority: list[_Request[Any]] = []
        self._session_tags: dict[str | None, float] = {}
        self._session_counts: dict[str | None, int] = {}
        self._virtual = 0.0
        self._arrivals = itertools.count()
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._current: _Request[Any] | None = None
        self._current_task: asyncio.Task[Any] | None = None
        self.service_estimate = INITIAL_SERVICE_ESTIMATE
        self.stats = QueueStats()
        self.on_complete: list[CompletionListener] = []
        self._closed = False

    # Public API -------------------------------------------------------------------------

    def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name=f"queue-{self.device}")

    async def close(self) -> None:
        self._closed = True
        for request in [*self._priority, *self._waiting]:
            self._fail(request, RequestCancelled("the gateway is stopping", device=self.device))
        self._priority.clear()
        self._waiting.clear()
        if self._current_task is not None:
            self._current_task.cancel()
        worker, self._worker = self._worker, None
        await cancel_and_wait(worker)

    @property
    def queued(self) -> int:
        return len(self._waiting) + len(self._priority)

    @property
    def busy(self) -> bool:
        return self._current is not None

    def check_capacity(self) -> None:
        """Raise QueueFull (with a Retry-After estimate) when no request can be added now."""
        if len(self._waiting) >= self.depth:
            self.stats.rejected_full += 1
            raise QueueFull(
                f"{self.device} queue is full ({self.depth} waiting)",
                device=self.device,
                retry_after=self.retry_after(),
                depth=self.depth,
            )

    def retry_after(self) -> float:
        """Seconds until a slot is likely to free: the remaining service of the request in flight."""
        return max(1.0, self.service_estimate)

    def estimate_wait(self, ahead: int) -> float:
        return (ahead + (1 if self.busy else 0)) * self.service_estimate

    async def submit(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        session: str | None = None,
        deadline_s: float | None = None,
        priority: bool = False,
        on_position: PositionListener | None = None,
        label: str = "",
    ) -> T:
        """Queue `operation` and wait for its result; cancelling the caller withdraws it."""
        if self._closed:
            raise RequestCancelled("the gateway is stopping", device=self.device)
        if not priority:
            self.check_capacity()
        now = self._clock()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        request = _Request(
            operation=operation,
            session=session,
            deadline=now + (deadline_s if deadline_s is not None else self.deadline_s),
            key=self._key(session, priority),
            future=future,
            priority=priority,
            enqueued_at=now,
            on_position=on_position,
            label=label,
        )
        (self._priority if priority else self._waiting).append(request)
        self._report_positions()
        self._wakeup.set()
        deadline = asyncio.timeout(max(0.0, request.deadline - now))
        try:
            async with deadline:
                return await future
        except TimeoutError:
            if not deadline.expired():
                raise  # the operation's own timeout error, passed through
            # Still waiting at its deadline: it leaves the queue now, not when it reaches the head.
            if self._discard_waiting(request):
                self.stats.expired += 1
                raise DeadlineExpired(
                    f"deadline passed after {self._clock() - now:.1f}s in the {self.device} queue",
                    device=self.device,
                ) from None
            raise DeadlineExpired(
                f"the {self.device} did not finish before the deadline", device=self.device
            ) from None
        except asyncio.CancelledError:
            self._withdraw(request)
            raise

    def _key(self, session: str | None, priority: bool) -> tuple[float, int, int]:
        """The request's place: priority first; else its session's virtual finish tag (fair queuing)."""
        arrival = next(self._arrivals)
        if priority:
            return (0.0, 0, arrival)
        index = self._session_counts.get(session, 0)
        tag = max(self._virtual, self._session_tags.get(session, 0.0)) + 1.0
        self._session_tags[session] = tag
        self._session_counts[session] = index + 1
        return (tag, index, arrival)

    def pending(self, session: str) -> int:
        """Requests of `session` waiting here or in flight (the idle rule counts them as activity)."""
        waiting = sum(1 for lane in (self._priority, self._waiting) for r in lane if r.session == session)
        current = self._current
        return waiting + (1 if current is not None and current.session == session else 0)

    def cancel_session(self, session: str, reason: str = "the session ended") -> int:
        """Fail every request of `session` (queued or in flight); returns how many."""
        count = 0
        for lane in (self._priority, self._waiting):
            for request in [r for r in lane if r.session == session]:
                lane.remove(request)
                self._forget(request)
                self._fail(request, RequestCancelled(reason, device=self.device))
                count += 1
        current = self._current
        if current is not None and current.session == session and self._current_task is not None:
            self._current_task.cancel(reason)
            count += 1
        if count:
            self.stats.cancelled += count
            self._report_positions()
        return count

    def purge(self, reason: str = "purged by a technician") -> int:
        """Fail every waiting request (maintenance); the one in flight finishes."""
        requests = [*self._waiting]
        self._waiting.clear()
        for request in requests:
            self._forget(request)
            self._fail(request, RequestCancelled(reason, device=self.device))
        self.stats.cancelled += len(requests)
        return len(requests)

    def snapshot(self) -> QueueSnapshot:
        waits = sorted(self.stats.wait_samples)

        def pct(p: float) -> float | None:
            if not waits:
                return None
            return round(waits[min(len(waits) - 1, int(p * len(waits)))], 4)

        return QueueSnapshot(
            depth_limit=self.depth,
            queued=self.queued,
            busy=self.busy,
            service_estimate_s=round(self.service_estimate, 4),
            served=self.stats.served,
            failed=self.stats.failed,
            expired=self.stats.expired,
            cancelled=self.stats.cancelled,
            rejected_full=self.stats.rejected_full,
            wait_p50_s=pct(0.5),
            wait_p99_s=pct(0.99),
        )

    # Internals ----------------------------------------------------------------------------

    def _order(self) -> list[_Request[Any]]:
        return sorted(self._priority, key=lambda r: r.key) + sorted(self._waiting, key=lambda r: r.key)

    def _report_positions(self) -> None:
        for ahead, request in enumerate(self._order()):
            if request.on_position is not None and ahead != request.last_reported:
                request.last_reported = ahead
                with contextlib.suppress(Exception):
                    request.on_position(Position(ahead, round(self.estimate_wait(ahead), 3)))

    def _forget(self, request: _Request[Any]) -> None:
        if request.priority:
            return
        remaining = self._session_counts.get(request.session, 1) - 1
        if remaining <= 0:
            self._session_counts.pop(request.session, None)
            if self._session_tags.get(request.session, 0.0) <= self._virtual:
                self._session_tags.pop(request.session, None)
        else:
            self._session_counts[request.session] = remaining

    def _discard_waiting(self, request: _Request[Any]) -> bool:
        """Take a request out of its lane if it is still waiting there."""
        lane = self._priority if request.priority else self._waiting
        if request not in lane:
            return False
        lane.remove(request)
        self._forget(request)
        self._report_positions()
        return True

    def _withdraw(self, request: _Request[Any]) -> None:
        if self._discard_waiting(request):
            self.stats.cancelled += 1
        elif self._current is request and self._current_task is not None:
            self._current_task.cancel("the client went away")

    def _fail(self, request: _Request[Any], error: BaseException) -> None:
        if not request.future.done():
            request.future.set_exception(error)
            # Mark retrieved: a caller that already went away must not trigger "never retrieved".
            request.future.exception()

    def _next(self) -> _Request[Any] | None:
        for lane in (self._priority, self._waiting):
            if lane:
                request = min(lane, key=lambda r: r.key)
                lane.remove(request)
                self._forget(request)
                return request
        return None

    async def _run(self) -> None:
        while True:
            request = self._next()
            if request is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if request.future.done():
                continue
            now = self._clock()
            if now >= request.deadline:
                self.stats.expired += 1
                self._fail(
                    request,
                    DeadlineExpired(
                        f"deadline passed after {now - request.enqueued_at:.1f}s in the {self.device} queue",
                        device=self.device,
                    ),
                )
                continue
            if not request.priority:
                self._virtual = max(self._virtual, request.key[0])
            self.stats.record_wait(now - request.enqueued_at)
            self._current = request
            self._report_positions()
            await self._serve(request, request.deadline - now)
            self._current = None

    async def _serve(self, request: _Request[Any], remaining: float) -> None:
        started = self._clock()
        task: asyncio.Task[Any] = asyncio.ensure_future(request.operation())
        task.set_name(f"{self.device}-op-{request.label}")
        self._current_task = task
        try:
            async with asyncio.timeout(remaining):
                result = await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            self.stats.expired += 1
            self._fail(
                request,
                DeadlineExpired(f"the {self.device} did not finish before the deadline", device=self.device),
            )
        except asyncio.CancelledError:
            worker = asyncio.current_task()
            if worker is not None and worker.cancelling():
                # The worker itself is being cancelled (close): stop the operation too.
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                raise
            # The operation was cancelled (session ended, client left).
            self.stats.cancelled += 1
            self._fail(request, RequestCancelled("the request was cancelled", device=self.device))
        except Exception as err:
            self.stats.failed += 1
            self._fail(request, err)
            self._observe(self._clock() - started, err)
        else:
            self.stats.served += 1
            if not request.future.done():
                request.future.set_result(result)
            self._observe(self._clock() - started, None)
        finally:
            self._current_task = None

    def _observe(self, seconds: float, error: BaseException | None) -> None:
        self.service_estimate = (1 - EWMA_ALPHA) * self.service_estimate + EWMA_ALPHA * seconds
        for listener in self.on_complete:
            try:
                listener(self.device, seconds, error)
            except Exception:
                log.exception("completion_listener_failed", device=self.device)
