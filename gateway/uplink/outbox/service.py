"""The Outbox: what the event loop calls (enqueue, acks, page reads, stats); the writer thread stores.

Every uplink message is sealed and committed to SQLite before anyone is told; the event loop
never waits on fsync. The storage work is in writer, store, quotas, jobs and recovery.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import structlog

from gateway.status import IncidentReport, OutboxClassStats, OutboxStats
from gateway.tasks import cancel_and_wait
from gateway.uplink.envelope import GENESIS_PREV, envelope_digest
from gateway.uplink.outbox.config import STREAMS, OutboxConfig
from gateway.uplink.outbox.errors import (
    OutboxClosed,
    OutboxError,
    OutboxFull,
    StorageError,
    StorageTimeout,
    UnknownStream,
)
from gateway.uplink.outbox.incidents import Incident
from gateway.uplink.outbox.jobs import (
    DeliveredJob,
    EnqueueJob,
    ExpireJob,
    Job,
    RejectJob,
    RequeueJob,
    StopJob,
    SweepJob,
)
from gateway.uplink.outbox.quotas import Quotas
from gateway.uplink.outbox.reader import PageReader
from gateway.uplink.outbox.records import Enqueued, OutboxAlert, Pending, Recovery, Seal
from gateway.uplink.outbox.recovery import IncidentLog, incident_alert
from gateway.uplink.outbox.store import Store, StreamState
from gateway.uplink.outbox.writer import Result, Writer

log = structlog.get_logger(__name__)


class DeliveryRate:
    """Deliveries per second over the last minute, as (whole monotonic second, count) pairs."""

    def __init__(self) -> None:
        self._seconds: collections.deque[list[int]] = collections.deque()

    def count(self) -> None:
        second = int(time.monotonic())
        if self._seconds and self._seconds[-1][0] == second:
            self._seconds[-1][1] += 1
        else:
            self._seconds.append([second, 1])

    def per_second(self) -> float:
        cutoff = int(time.monotonic()) - 60
        while self._seconds and self._seconds[0][0] <= cutoff:
            self._seconds.popleft()
        return sum(n for _, n in self._seconds) / 60.0


def _class_stats(st: StreamState, now: float) -> OutboxClassStats:
    return OutboxClassStats(
        count=st.count,
        bytes=st.bytes,
        oldest_age_s=None if st.oldest is None else max(0.0, now - st.oldest),
        parked=st.parked,
        last_seq=st.last_seq,
        **st.counters,
    )


class Outbox:
    """Durable, group-committed store of sealed uplink envelopes, with per-class policies."""

    def __init__(
        self,
        path: Path,
        sealer: Seal,
        *,
        digest: Callable[[bytes], str] = envelope_digest,
        genesis_prev: str = GENESIS_PREV,
        config: OutboxConfig | None = None,
        on_alert: Callable[[OutboxAlert], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.config = config or OutboxConfig()
        self._on_alert = on_alert
        # The wall clock of message lifetimes (created, expires); tests step it.
        self.clock = clock
        self._classes = self.config.classes()
        self.priority_order = self.config.by_priority()
        self._store = self._make_store(self.path, genesis_prev)
        self._incidents = IncidentLog(self.path)
        self._writer = self._make_writer(
            self._store,
            Quotas(self.config),
            self._incidents,
            sealer=sealer,
            digest=digest,
            clock=clock,
            config=self.config,
            loop_side=self,
        )
        self._reader = PageReader(self._writer, lambda: self._closed)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: list[Callable[[frozenset[str]], None]] = []
        # Per stream, how often rows went back behind a publisher's cursor (requeue): the
        # publisher starts that stream over from its first queued row when this changes.
        self.rewinds: dict[str, int] = {}
        self._alerted: dict[tuple[str, str | None], float] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = True
        self._delivery_rate = DeliveryRate()
        self.last_puback: float | None = None
        self._acks: list[Pending] = []
        self._acks_future: asyncio.Future[None] | None = None

    def _make_store(self, path: Path, genesis_prev: str) -> Store:
        """The store; gateway.uplink.outbox.testing overrides it (a small disk)."""
        return Store(path, genesis_prev)

    def _make_writer(self, store: Store, quotas: Quotas, incidents: IncidentLog, **kwargs: Any) -> Writer:
        """The writer; gateway.uplink.outbox.testing overrides it (a slow disk)."""
        return Writer(store, quotas, incidents, **kwargs)

    # ---------------------------------------------------------------- what storage reports

    @property
    def generation(self) -> int:
        """How often the database file was replaced (a corrupt one recovered)."""
        return self._store.generation

    @property
    def commits(self) -> int:
        return self._writer.commits

    @property
    def recoveries(self) -> list[Recovery]:
        return self._writer.recoveries

    @property
    def incidents(self) -> list[Incident]:
        """Storage incidents recorded by this process (the journal holds older ones too)."""
        return self._incidents.recorded

    def open_incidents(self) -> list[IncidentReport]:
        """Storage incidents ops have not acknowledged yet (`edge-gateway outbox-ack`)."""
        return self._incidents.open_incidents()

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> Outbox:
        """Open (or recover) the database and start the writer thread and the expiry sweep."""
        if not self._closed:
            return self
        self._loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._writer.open)
        self._closed = False
        self._thread = threading.Thread(target=self._writer.run, name="outbox-writer", daemon=True)
        self._thread.start()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="outbox-sweep")
        for incident in self.incidents:
            self._alert(incident_alert(incident), every=True)
        return self

    async def close(self) -> None:
        """Finish queued jobs, stop the writer thread, close the files."""
        if self._closed:
            return
        self._closed = True
        sweeper, self._sweeper = self._sweeper, None
        await cancel_and_wait(sweeper)
        self._writer.jobs.put(StopJob(None))
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        self._reader.close()

    async def __aenter__(self) -> Outbox:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def add_listener(self, callback: Callable[[frozenset[str]], None]) -> None:
        """Call `callback(streams)` on the loop after each commit that added messages."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[frozenset[str]], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    # ---------------------------------------------------------------- the API

    async def enqueue(
        self,
        stream: str,
        type: str,
        body: Any,
        *,
        timeout: float | None = None,
    ) -> Enqueued:
        """Seal and store one message; returns only after its transaction committed."""
        if stream not in self._classes:
            raise UnknownStream(stream)
        future = self._submit(EnqueueJob(None, stream, type, body, self.clock()))
        limit = self.config.enqueue_timeout_s if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                result: Enqueued = await future
        except TimeoutError as err:
            raise StorageTimeout(
                f"commit of a {stream} message took over {limit}s; it may still be stored",
                path=self.path,
            ) from err
        return result

    def mark_delivered(self, item: Pending) -> asyncio.Future[None]:
        """The broker acknowledged it: delete the row (at the next commit) and count it."""
        self.last_puback = time.time()
        self._delivery_rate.count()
        if self._closed or self._loop is None:
            raise OutboxClosed("the outbox is closed")
        # PUBACKs arrive in bursts: one writer job (and one future) per loop iteration.
        if self._acks_future is None:
            self._acks_future = self._loop.create_future()
            self._loop.call_soon(self._flush_acks)
        self._acks.append(item)
        return self._acks_future

    def _flush_acks(self) -> None:
        job = DeliveredJob(self._acks_future, self._acks)
        self._acks, self._acks_future = [], None
        if job.future is None:
            return
        if self._closed:
            job.future.set_exception(OutboxClosed("the outbox is closed"))
            job.future.exception()
            return
        self._writer.jobs.put(job)

    def mark_expired(self, item: Pending) -> asyncio.Future[None]:
        """The publisher passed it over as expired: delete it now and count it, so it can never
        go out later (after a clock step back) behind a higher seq of its stream."""
        future = self._submit(ExpireJob(None, item))
        # Nobody waits on it: a failure is logged by the writer, not left unretrieved.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return future

    def mark_rejected(self, item: Pending, reason: int) -> asyncio.Future[None]:
        """The broker refused it (PUBACK reason >= 0x80): park the row, count it, alert."""
        self.last_puback = time.time()
        self._alert(
            OutboxAlert(
                "rejected",
                item.stream,
                f"broker rejected {item.stream} seq {item.seq} with reason 0x{reason:02x}",
                {"seq": item.seq, "reason": reason},
            ),
            every=True,
        )
        return self._submit(RejectJob(None, item, reason))

    async def requeue_rejected(
        self, stream: str | None = None, seqs: Sequence[int] | None = None
    ) -> dict[str, int]:
        """Put messages the broker rejected back in the queue (after ops fixed the cause: an ACL,
        a quota on the broker). All parked messages, those of one stream, or the given seqs of
        one stream. They go out again as the same bytes, before anything newer of their stream.
        Returns how many were requeued per stream."""
        if stream is not None and stream not in self._classes:
            raise UnknownStream(stream)
        if seqs is not None and stream is None:
            raise ValueError("seqs name messages of one stream: give the stream too")
        picked = tuple(sorted(set(seqs))) if seqs is not None else None
        result: dict[str, int] = await self._submit(RequeueJob(None, stream, picked))
        for name, count in result.items():
            if count:
                self.rewinds[name] = self.rewinds.get(name, 0) + 1
                log.info("outbox_requeued", stream=name, count=count)
        self._notify(frozenset(name for name, count in result.items() if count))
        return result

    async def sweep(self) -> None:
        """Delete expired messages now (also runs every sweep_interval_s)."""
        await self._submit(SweepJob(None))

    async def read_page(self, stream: str, after_seq: int, limit: int) -> list[Pending]:
        """Queued messages of one stream with seq > after_seq, in seq order (one page)."""
        if self._closed:
            raise OutboxClosed("the outbox is closed")
        return await asyncio.to_thread(self._reader.read, stream, after_seq, limit)

    def backlog(self) -> int:
        """Messages waiting for delivery (not counting parked rejections)."""
        return sum(s.count for s in self._store.snapshot.values())

    def stats(self) -> OutboxStats:
        """Per class: count, bytes, oldest age, delivered, expired, dropped, rejected, refused."""
        now = time.time()
        snap = self._store.snapshot
        return OutboxStats(
            classes={stream: _class_stats(snap[stream], now) for stream in STREAMS},
            count=sum(s.count for s in snap.values()),
            bytes=sum(s.bytes + s.parked_bytes for s in snap.values()),
            max_bytes=self.config.max_bytes,
            delivery_rate_per_s=self._delivery_rate.per_second(),
            last_puback=self.last_puback,
            commits=self.commits,
            generation=self.generation,
            recoveries=len(self.recoveries),
            # Storage incidents (lost WAL tail, corrupt or lost file) ops have not acknowledged.
            incidents=self.open_incidents(),
            awaiting_delete=len(self._writer.undeleted),
        )

    # ---------------------------------------------------------------- loop side

    def _submit(self, job: Job) -> asyncio.Future[Any]:
        if self._closed or self._loop is None:
            raise OutboxClosed("the outbox is closed")
        job.future = self._loop.create_future()
        self._writer.jobs.put(job)
        return job.future

    def _alert(self, alert: OutboxAlert, *, every: bool = False) -> None:
        key = (alert.kind, alert.stream)
        now = time.monotonic()
        last = self._alerted.get(key)
        if not every and last is not None and now - last < self.config.alert_interval_s:
            return
        self._alerted[key] = now
        log.warning("outbox_alert", kind=alert.kind, stream=alert.stream, detail=alert.message)
        if self._on_alert is not None:
            try:
                self._on_alert(alert)
            except Exception:
                log.exception("outbox_alert_callback_failed", kind=alert.kind)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval_s)
            try:
                await self.sweep()
            except OutboxError as err:
                log.warning("outbox_sweep_failed", error=str(err))

    def _deliver_results(self, results: list[Result]) -> None:
        """Runs on the loop: resolve futures, publish notifications and alerts."""
        added: set[str] = set()
        for job, value, error in results:
            fut = job.future
            if isinstance(job, EnqueueJob) and error is None:
                added.add(job.stream)
            if isinstance(error, OutboxFull):
                kind: Literal["disk_full", "outbox_full"] = (
                    "disk_full" if error.reason == "disk" else "outbox_full"
                )
                self._alert(
                    OutboxAlert(kind, error.stream, str(error), {"used": error.used, "limit": error.limit})
                )
            elif isinstance(error, StorageError):
                self._alert(OutboxAlert("storage_error", None, str(error)))
            if fut is None or fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(value)
        self._notify(frozenset(added))

    def _notify(self, streams: frozenset[str]) -> None:
        """Tell listeners (the publisher) which streams have rows to send that they may not know of."""
        if streams:
            for listener in list(self._listeners):
                listener(streams)

    # ---------------------------------------------------------------- from the writer thread

    def post_results(self, results: list[Result]) -> None:
        """Writer thread: resolve the jobs' futures on the loop."""
        self._on_loop(self._deliver_results, results)

    def post_notify(self, streams: frozenset[str]) -> None:
        """Writer thread: tell the listeners on the loop."""
        self._on_loop(self._notify, streams)

    def post_incident(self, incident: Incident) -> None:
        """Writer thread: alert ops now, or at start when the incident came with the open."""
        if not self._closed:
            alert = incident_alert(incident)
            self._on_loop(lambda: self._alert(alert, every=True))

    def _on_loop(self, callback: Callable[..., None], *args: Any) -> None:
        """From the writer thread: run `callback(*args)` on the event loop (if it still runs)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback, *args)
