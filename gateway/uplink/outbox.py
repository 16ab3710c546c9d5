"""The durable outbox: every uplink message is sealed and committed to SQLite before anyone is told.

One writer thread owns the write connection. Concurrent `enqueue` calls that arrive within the
batch window share one transaction and one fsync (group commit); seq allocation, the prev-hash
lookup, sealing and the insert happen inside that transaction, so a committed seq is never reused
and an acknowledged message is never lost. The event loop never waits on fsync.

Seq continuity across a lost WAL tail, a lost or a corrupt database: before each commit that uses
a new seq, the highest seq of every stream and its envelope digest are made durable in a side
file (`<db>.seq`, see gateway.uplink.seqmark). On every open the database is compared with it: a
database behind the mark lost committed transactions (a disk that lied about fsync), so seq
continues above the mark, the hash chain from the mark's digest, and the unaccounted seqs are
reported (log, red alert, `/v1/status`, diag) as possibly lost until ops acknowledge them
(gateway.uplink.incidents). A corrupt file is moved aside and every row that still reads back
(row by row around damaged pages) is queued again; the rows that do not are counted per stream.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Protocol

import msgspec
import structlog

from gateway.errors import GatewayError
from gateway.tasks import cancel_and_wait
from gateway.uplink import incidents as incidents_journal
from gateway.uplink.envelope import GENESIS_PREV, EnvelopeError, envelope_digest, peek_envelope
from gateway.uplink.incidents import Incident
from gateway.uplink.salvage import salvage_messages
from gateway.uplink.seqmark import Mark, SeqMark, SeqMarkFull

log = structlog.get_logger(__name__)

STREAMS: Final = ("tx", "audit", "alert", "telemetry", "event")
Stream = Literal["tx", "audit", "alert", "telemetry", "event"]

_SQLITE_CORRUPT: Final = 11
_SQLITE_FULL: Final = 13
_SQLITE_NOTADB: Final = 26
_QUEUED: Final = 0
_REJECTED: Final = 1
_BATCH_GAP_S: Final = 0.0005
_COUNTERS: Final = ("delivered", "expired", "dropped", "rejected", "refused", "requeued")


# ------------------------------------------------------------------------------------ config


class ClassConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """How one message class (stream) is queued: send order, lifetime, quota, what full means."""

    # Higher is sent first; within a stream messages always go in seq order.
    priority: Annotated[int, msgspec.Meta(ge=0, le=100)] = 50
    # 0 = never expires.
    ttl_s: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    # 0 = only the outbox-wide max_bytes applies.
    max_bytes: Annotated[int, msgspec.Meta(ge=0)] = 0
    when_full: Literal["refuse", "drop_oldest"] = "refuse"


def _tx() -> ClassConfig:
    return ClassConfig(priority=80)


def _audit() -> ClassConfig:
    return ClassConfig(priority=60)


def _alert() -> ClassConfig:
    return ClassConfig(priority=90, ttl_s=7 * 86_400.0, max_bytes=64 << 20, when_full="drop_oldest")


def _event() -> ClassConfig:
    return ClassConfig(priority=40, ttl_s=7 * 86_400.0, max_bytes=256 << 20, when_full="drop_oldest")


def _telemetry() -> ClassConfig:
    return ClassConfig(priority=10, ttl_s=86_400.0, max_bytes=64 << 20, when_full="drop_oldest")


class OutboxConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The `[outbox]` table: file, quotas, group-commit window, in-flight window, message classes."""

    # Relative to the state dir.
    file: str = "outbox.sqlite3"
    # Sum of stored envelope bytes (queued + parked) across all classes.
    max_bytes: Annotated[int, msgspec.Meta(ge=4096)] = 1 << 30
    batch_window_ms: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 2.0
    max_batch: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    inflight: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
    publish_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    enqueue_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    page_size: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 256
    sweep_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    # Minimum spacing of repeated alerts of one kind for one stream.
    alert_interval_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    tx: ClassConfig = msgspec.field(default_factory=_tx)
    audit: ClassConfig = msgspec.field(default_factory=_audit)
    alert: ClassConfig = msgspec.field(default_factory=_alert)
    event: ClassConfig = msgspec.field(default_factory=_event)
    telemetry: ClassConfig = msgspec.field(default_factory=_telemetry)

    def __post_init__(self) -> None:
        for name in ("tx", "audit"):
            cls: ClassConfig = getattr(self, name)
            if cls.when_full != "refuse" or cls.ttl_s:
                raise ValueError(f"{name} messages are never dropped: when_full must be 'refuse', ttl_s 0")

    def classes(self) -> dict[str, ClassConfig]:
        return {name: getattr(self, name) for name in STREAMS}

    def by_priority(self) -> tuple[str, ...]:
        """Streams, highest priority first (ties in STREAMS order)."""
        classes = self.classes()
        return tuple(sorted(STREAMS, key=lambda s: -classes[s].priority))


# ------------------------------------------------------------------------------------ errors


class OutboxError(GatewayError):
    """Root of the outbox errors."""


class UnknownStream(OutboxError, ValueError):
    """The stream is not one of tx, audit, alert, telemetry, event."""

    def __init__(self, stream: str) -> None:
        super().__init__(f"unknown stream {stream!r}; expected one of {', '.join(STREAMS)}")
        self.stream = stream


class InvalidMessage(OutboxError, ValueError):
    """The body could not be sealed (not JSON-serialisable, too large, ...)."""

    def __init__(self, stream: str, detail: str) -> None:
        super().__init__(f"cannot seal a {stream} message: {detail}")
        self.stream = stream
        self.detail = detail


class OutboxFull(OutboxError):
    """The message was refused: its class quota, the outbox quota or the disk is full (HTTP 507)."""

    def __init__(self, stream: str, *, reason: Literal["quota", "disk"], used: int, limit: int) -> None:
        what = "the disk is full" if reason == "disk" else f"quota reached ({used}/{limit} bytes)"
        super().__init__(f"outbox refused a {stream} message: {what}")
        self.stream = stream
        self.reason = reason
        self.used = used
        self.limit = limit


class StorageError(OutboxError):
    """SQLite failed (I/O error, corruption being recovered); the message was not stored."""

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class StorageTimeout(StorageError, TimeoutError):
    """The commit did not finish in time; the message may still be committed later."""


class OutboxClosed(OutboxError):
    """The outbox is closed (or not started)."""


# ------------------------------------------------------------------------------------ records


class Seal(Protocol):
    """What the outbox needs from the envelope sealer (gateway.uplink.envelope.Sealer)."""

    def seal(self, *, stream: str, seq: int, prev: str, type: str, body: Any) -> bytes: ...


@dataclass(frozen=True)
class Enqueued:
    """A committed message: its stream, its seq and its row id."""

    stream: str
    seq: int
    id: int


@dataclass(frozen=True)
class Pending:
    """A stored envelope waiting for delivery (the bytes are resent unchanged)."""

    id: int
    stream: str
    seq: int
    envelope: bytes = field(repr=False)
    expires: float | None
    generation: int

    def __repr__(self) -> str:
        # The envelope of a tx message can carry personal data: never in a repr.
        return f"Pending(id={self.id}, stream={self.stream!r}, seq={self.seq}, bytes={len(self.envelope)})"


@dataclass(frozen=True)
class OutboxAlert:
    """Something ops must see: a refusal, a full disk, a corrupt file, a broker rejection."""

    kind: Literal["outbox_full", "disk_full", "corrupt_db", "seq_gap", "rejected", "storage_error"]
    stream: str | None
    message: str
    fields: dict[str, Any] = field(default_factory=dict)
    # Red when acknowledged messages may be lost (a recovery or a lost WAL tail), else blue.
    severity: Literal["red", "blue"] = "blue"


@dataclass(frozen=True)
class Recovery:
    """What happened to a corrupt database at open or at run time."""

    moved_to: tuple[Path, ...]
    error: str
    seq_from: Literal["corrupt_db", "side_file", "both", "none"]
    last_seq: dict[str, int]
    # Messages read back whole from the corrupt file and queued again (same bytes, same seq), and
    # rows that read back but whose envelope did not match its row (left behind in the moved file).
    salvaged: int = 0
    unusable: int = 0


# ------------------------------------------------------------------------------------ writer jobs


@dataclass(eq=False)
class _Job:
    future: asyncio.Future[Any] | None


@dataclass(eq=False)
class _EnqueueJob(_Job):
    stream: str
    type: str
    body: Any
    created: float


@dataclass(eq=False)
class _DeliveredJob(_Job):
    items: list[Pending]


@dataclass(eq=False)
class _RejectJob(_Job):
    item: Pending
    reason: int


@dataclass(eq=False)
class _SweepJob(_Job):
    pass


@dataclass(eq=False)
class _ExpireJob(_Job):
    item: Pending


@dataclass(eq=False)
class _RequeueJob(_Job):
    stream: str | None
    seqs: tuple[int, ...] | None


@dataclass(eq=False)
class _StopJob(_Job):
    pass


@dataclass(eq=False)
class _CheckJob(_Job):
    """A reader met a malformed page: the writer checks the file and recovers if it is corrupt."""


class _DiskFull(Exception):
    """Internal: SQLITE_FULL inside a transaction."""


class _Corrupt(Exception):
    """Internal: SQLITE_CORRUPT / SQLITE_NOTADB inside a transaction."""


@dataclass
class _StreamState:
    last_seq: int = 0
    last_digest: str = ""
    count: int = 0
    bytes: int = 0
    parked: int = 0
    parked_bytes: int = 0
    oldest: float | None = None
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTERS, 0))

    def copy(self) -> _StreamState:
        clone = _StreamState(**{k: v for k, v in vars(self).items() if k != "counters"})
        clone.counters = dict(self.counters)
        return clone


_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS streams (
    stream TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    last_digest TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    created REAL NOT NULL,
    expires REAL,
    size INTEGER NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    reason INTEGER,
    envelope BLOB NOT NULL,
    UNIQUE (stream, seq)
);
CREATE TABLE IF NOT EXISTS counters (
    stream TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (stream, name)
) WITHOUT ROWID;
"""


def _is_corrupt(err: sqlite3.Error) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return int(code) & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(err)
    return "malformed" in text or "not a database" in text


def _is_full(err: sqlite3.Error) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return int(code) & 0xFF == _SQLITE_FULL
    return "full" in str(err)


def _utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------ the outbox


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
        max_page_count: int | None = None,
        commit_delay_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.config = config or OutboxConfig()
        self._sealer = sealer
        self._digest = digest
        self._genesis = genesis_prev
        self._on_alert = on_alert
        # Tests simulate a full disk with it; benchmarks simulate slow storage with the delay.
        self._max_page_count = max_page_count
        self._commit_delay_s = commit_delay_s
        # The wall clock of message lifetimes (created, expires); tests step it.
        self.clock = clock
        self._classes = self.config.classes()
        self.priority_order = self.config.by_priority()
        self._mark = SeqMark(self.path.with_name(self.path.name + ".seq"))
        # Per stream, the highest seq made durable in the mark: readers never see rows above it.
        self._marked: dict[str, int] = dict.fromkeys(STREAMS, 0)
        self._mark_ready = False
        self._journal_path = incidents_journal.journal_path(self.path)
        self._journal: list[Incident] = []
        self._journal_stamp = -2
        self.incidents: list[Incident] = []
        # Delivered rows whose delete could not be committed (a full disk): retried later.
        self._undeleted: list[Pending] = []

        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: sqlite3.Connection | None = None
        self._state: dict[str, _StreamState] = {s: _StreamState() for s in STREAMS}
        self._snapshot: dict[str, _StreamState] = {s: _StreamState() for s in STREAMS}
        self._listeners: list[Callable[[frozenset[str]], None]] = []
        # Per stream, how often rows went back behind a publisher's cursor (requeue): the
        # publisher starts that stream over from its first queued row when this changes.
        self.rewinds: dict[str, int] = {}
        self._alerted: dict[tuple[str, str | None], float] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = True

        self._reader: sqlite3.Connection | None = None
        self._reader_generation = -1
        self._reader_lock = threading.Lock()
        self._check_requested = False

        self.generation = 0
        self.commits = 0
        self.recoveries: list[Recovery] = []
        # (whole monotonic second, deliveries in it) for the last minute: flat in memory.
        self._delivered_times: collections.deque[list[int]] = collections.deque()
        self.last_puback: float | None = None
        self._acks: list[Pending] = []
        self._acks_future: asyncio.Future[None] | None = None

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> Outbox:
        """Open (or recover) the database and start the writer thread and the expiry sweep."""
        if not self._closed:
            return self
        self._loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._open)
        self._closed = False
        self._thread = threading.Thread(target=self._writer, name="outbox-writer", daemon=True)
        self._thread.start()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="outbox-sweep")
        for incident in self.incidents:
            self._alert(self._incident_alert(incident), every=True)
        return self

    async def close(self) -> None:
        """Finish queued jobs, stop the writer thread, close the files."""
        if self._closed:
            return
        self._closed = True
        sweeper, self._sweeper = self._sweeper, None
        await cancel_and_wait(sweeper)
        self._jobs.put(_StopJob(None))
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

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
        future = self._submit(_EnqueueJob(None, stream, type, body, self.clock()))
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
        now = time.time()
        self.last_puback = now
        second = int(time.monotonic())
        if self._delivered_times and self._delivered_times[-1][0] == second:
            self._delivered_times[-1][1] += 1
        else:
            self._delivered_times.append([second, 1])
        if self._closed or self._loop is None:
            raise OutboxClosed("the outbox is closed")
        # PUBACKs arrive in bursts: one writer job (and one future) per loop iteration.
        if self._acks_future is None:
            self._acks_future = self._loop.create_future()
            self._loop.call_soon(self._flush_acks)
        self._acks.append(item)
        return self._acks_future

    def _flush_acks(self) -> None:
        job = _DeliveredJob(self._acks_future, self._acks)
        self._acks, self._acks_future = [], None
        if job.future is None:
            return
        if self._closed:
            job.future.set_exception(OutboxClosed("the outbox is closed"))
            job.future.exception()
            return
        self._jobs.put(job)

    def mark_expired(self, item: Pending) -> asyncio.Future[None]:
        """The publisher passed it over as expired: delete it now and count it, so it can never
        go out later (after a clock step back) behind a higher seq of its stream."""
        future = self._submit(_ExpireJob(None, item))
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
        return self._submit(_RejectJob(None, item, reason))

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
        result: dict[str, int] = await self._submit(_RequeueJob(None, stream, picked))
        for name, count in result.items():
            if count:
                self.rewinds[name] = self.rewinds.get(name, 0) + 1
                log.info("outbox_requeued", stream=name, count=count)
        self._notify(frozenset(name for name, count in result.items() if count))
        return result

    async def sweep(self) -> None:
        """Delete expired messages now (also runs every sweep_interval_s)."""
        await self._submit(_SweepJob(None))

    async def read_page(self, stream: str, after_seq: int, limit: int) -> list[Pending]:
        """Queued messages of one stream with seq > after_seq, in seq order (one page)."""
        if self._closed:
            raise OutboxClosed("the outbox is closed")
        return await asyncio.to_thread(self._read_page, stream, after_seq, limit)

    def backlog(self) -> int:
        """Messages waiting for delivery (not counting parked rejections)."""
        return sum(s.count for s in self._snapshot.values())

    def stats(self) -> dict[str, Any]:
        """Per class: count, bytes, oldest age, delivered, expired, dropped, rejected, refused."""
        now = time.time()
        snap = self._snapshot
        classes: dict[str, Any] = {}
        for stream in STREAMS:
            st = snap[stream]
            classes[stream] = {
                "count": st.count,
                "bytes": st.bytes,
                "oldest_age_s": None if st.oldest is None else max(0.0, now - st.oldest),
                "parked": st.parked,
                "last_seq": st.last_seq,
                **st.counters,
            }
        cutoff = int(time.monotonic()) - 60
        while self._delivered_times and self._delivered_times[0][0] <= cutoff:
            self._delivered_times.popleft()
        return {
            "classes": classes,
            "count": sum(s.count for s in snap.values()),
            "bytes": sum(s.bytes + s.parked_bytes for s in snap.values()),
            "max_bytes": self.config.max_bytes,
            "delivery_rate_per_s": sum(n for _, n in self._delivered_times) / 60.0,
            "last_puback": self.last_puback,
            "commits": self.commits,
            "generation": self.generation,
            "recoveries": len(self.recoveries),
            # Storage incidents (lost WAL tail, corrupt or lost file) ops have not acknowledged.
            "incidents": self.open_incidents(),
            "awaiting_delete": len(self._undeleted),
        }

    # ---------------------------------------------------------------- loop side helpers

    def _submit(self, job: _Job) -> asyncio.Future[Any]:
        if self._closed or self._loop is None:
            raise OutboxClosed("the outbox is closed")
        job.future = self._loop.create_future()
        self._jobs.put(job)
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

    def _deliver_results(self, results: list[tuple[_Job, Any, BaseException | None]]) -> None:
        """Runs on the loop: resolve futures, publish notifications and alerts."""
        added: set[str] = set()
        for job, value, error in results:
            fut = job.future
            if isinstance(job, _EnqueueJob) and error is None:
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

    def _post(self, results: list[tuple[_Job, Any, BaseException | None]]) -> None:
        self._on_loop(self._deliver_results, results)

    def _post_alert(self, alert: OutboxAlert, *, every: bool = False) -> None:
        self._on_loop(lambda: self._alert(alert, every=every))

    def _on_loop(self, callback: Callable[..., None], *args: Any) -> None:
        """From the writer thread: run `callback(*args)` on the event loop (if it still runs)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback, *args)

    # ---------------------------------------------------------------- reader (worker threads)

    def _read_page(self, stream: str, after_seq: int, limit: int) -> list[Pending]:
        with self._reader_lock:
            if self._closed:
                raise OutboxClosed("the outbox is closed")
            generation = self.generation
            if self._reader is None or self._reader_generation != generation:
                if self._reader is not None:
                    self._reader.close()
                self._reader = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                self._reader_generation = generation
            try:
                # Never a row above the durable seq mark: after a lost WAL tail such a seq is
                # handed out again, so it must not have been sent.
                rows = self._reader.execute(
                    "SELECT id, seq, envelope, expires FROM messages"
                    " WHERE stream = ? AND seq > ? AND seq <= ? AND state = 0 ORDER BY seq LIMIT ?",
                    (stream, after_seq, self._marked.get(stream, 0), limit),
                ).fetchall()
            except sqlite3.Error as err:
                self._reader.close()
                self._reader = None
                if _is_corrupt(err) and not self._check_requested:
                    # Writes may never touch the damaged pages: have the writer look now.
                    self._check_requested = True
                    self._jobs.put(_CheckJob(None))
                raise StorageError(f"cannot read the outbox: {err}", path=self.path) from err
        return [Pending(r[0], stream, r[1], bytes(r[2]), r[3], generation) for r in rows]

    # ---------------------------------------------------------------- writer thread

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            # Set only when it differs: even an unchanged setting writes, which fails on a full disk.
            if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:  # 2 = incremental
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"cannot switch {self.path} to WAL (got {mode})", path=self.path)
            conn.execute("PRAGMA synchronous = FULL")
            if self._max_page_count is not None:
                conn.execute(f"PRAGMA max_page_count = {int(self._max_page_count)}")
            check = conn.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                raise sqlite3.DatabaseError(
                    f"database disk image is malformed: {'; '.join(str(r[0]) for r in check[:3])}"
                )
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _open(self) -> None:
        """Runs in a worker thread before the writer starts."""
        mark = self._mark.read()
        try:
            self._conn = self._connect()
            self._load_state(self._conn)
            self._continue_above_mark(self._conn, mark)
        except sqlite3.DatabaseError as err:
            if not _is_corrupt(err) and "malformed" not in str(err):
                raise StorageError(f"cannot open the outbox {self.path}: {err}", path=self.path) from err
            self._recover(str(err), mark)
        try:
            self._write_mark(self._state)
        except OSError as err:  # a full disk: enqueues answer 507 until the mark can be written
            log.error("outbox_seq_mark_unwritable", path=str(self._mark.path), error=str(err))
            # The backlog already stored still goes out (delivering it is what frees space).
            self._marked = {s: self._state[s].last_seq for s in STREAMS}
        self._publish_snapshot()

    def _continue_above_mark(self, conn: sqlite3.Connection, mark: Mark | None) -> None:
        """The database is behind the seq mark (lost WAL tail, lost file): continue above it, report."""
        if mark is None:
            return
        state = self._state
        behind = {s: mark.seqs[s] for s in STREAMS if mark.seqs.get(s, 0) > state[s].last_seq}
        if not behind:
            return
        empty = conn.execute("SELECT 1 FROM messages LIMIT 1").fetchone() is None and not any(
            st.last_seq for st in state.values()
        )
        unaccounted = {s: [state[s].last_seq + 1, seq] for s, seq in behind.items()}
        for stream, seq in behind.items():
            state[stream].last_seq = seq
            state[stream].last_digest = mark.digests.get(stream) or self._genesis
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT OR REPLACE INTO streams (stream, last_seq, last_digest) VALUES (?, ?, ?)",
            [(s, state[s].last_seq, state[s].last_digest) for s in behind],
        )
        conn.execute("COMMIT")
        what = "missing (deleted or lost)" if empty else "behind its seq mark (a lost WAL tail)"
        if mark.legacy:
            what += "; the mark is an older release's reservation, an upper bound of what was used"
        incident = Incident(
            "database_missing" if empty else "lost_tail",
            f"the outbox database was {what}: seq continues above the mark",
            unaccounted=unaccounted,
        )
        log.error(
            "outbox_behind_seq_mark",
            path=str(self.path),
            kind=incident.kind,
            unaccounted=unaccounted,
            possibly_lost=incident.possibly_lost,
        )
        self._record_incident(incident)

    def _record_incident(self, incident: Incident) -> None:
        """Keep it for /v1/status and diag (journal file) and alert ops (now or once started)."""
        self.incidents.append(incident)
        try:
            self._journal = [*incidents_journal.load(self._journal_path), incident]
            incidents_journal.save(self._journal_path, self._journal)
        except OSError as err:
            log.error("outbox_incident_not_saved", path=str(self._journal_path), error=str(err))
        if not self._closed:
            self._post_alert(self._incident_alert(incident), every=True)

    @staticmethod
    def _incident_alert(incident: Incident) -> OutboxAlert:
        kind: Literal["corrupt_db", "seq_gap"] = "corrupt_db" if incident.kind == "corrupt" else "seq_gap"
        return OutboxAlert(
            kind,
            None,
            f"{incident.detail}; {incident.possibly_lost} message(s) possibly lost",
            {
                "incident": incident.id,
                "unaccounted": incident.unaccounted,
                "unreadable": incident.unreadable,
                "unusable": incident.unusable,
                "salvaged": incident.salvaged,
                "possibly_lost": incident.possibly_lost,
                "moved_to": incident.moved_to,
            },
            severity=incident.severity,
        )

    def open_incidents(self) -> list[dict[str, Any]]:
        """Storage incidents ops have not acknowledged yet (`edge-gateway outbox-ack`)."""
        try:
            stamp = self._journal_path.stat().st_mtime_ns
        except FileNotFoundError:
            stamp = -1
        if stamp != self._journal_stamp:
            self._journal_stamp = stamp
            self._journal = incidents_journal.load(self._journal_path)
        ids = {i.id for i in self._journal}
        # An incident the journal could not store (a full disk) is still reported.
        pending = [i for i in self._journal if i.acknowledged_at is None]
        pending += [i for i in self.incidents if i.id not in ids]
        return [i.as_dict() for i in pending]

    def _load_state(self, conn: sqlite3.Connection) -> None:
        state = {s: _StreamState() for s in STREAMS}
        for stream, last_seq, last_digest in conn.execute(
            "SELECT stream, last_seq, last_digest FROM streams"
        ):
            if stream in state:
                state[stream].last_seq = last_seq
                state[stream].last_digest = last_digest
        for stream, st_, count, size in conn.execute(
            "SELECT stream, state, count(*), coalesce(sum(size), 0) FROM messages GROUP BY stream, state"
        ):
            if stream not in state:
                continue
            if st_ == _QUEUED:
                state[stream].count, state[stream].bytes = count, size
            else:
                state[stream].parked, state[stream].parked_bytes = count, size
        for stream, name, value in conn.execute("SELECT stream, name, value FROM counters"):
            if stream in state and name in _COUNTERS:
                state[stream].counters[name] = value
        for stream in STREAMS:
            st = state[stream]
            if not st.last_digest:
                st.last_digest = self._genesis
            st.oldest = self._oldest(conn, stream)
        self._state = state

    @staticmethod
    def _oldest(conn: sqlite3.Connection, stream: str) -> float | None:
        row = conn.execute(
            "SELECT created FROM messages WHERE stream = ? AND state = 0 ORDER BY seq LIMIT 1", (stream,)
        ).fetchone()
        return None if row is None else float(row[0])

    def _write_mark(self, state: dict[str, _StreamState]) -> None:
        """Make the streams' highest seqs durable in the seq mark (after their commit, before use)."""
        seqs = {s: state[s].last_seq for s in STREAMS}
        if seqs == self._marked and self._mark_ready:
            return
        self._mark.write(seqs, {s: state[s].last_digest for s in STREAMS})
        self._mark_ready = True
        self._marked = seqs

    def _recover(self, error: str, mark: Mark | None) -> None:
        """Move a corrupt database aside (never delete it), start fresh, keep seq going up."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        stamp = _utc_stamp()
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        moved: list[Path] = []
        for suffix in ("", "-wal", "-shm"):
            src = self.path.with_name(self.path.name + suffix)
            if src.exists():
                dst = aside.with_name(aside.name + suffix)
                src.rename(dst)
                moved.append(dst)
        _fsync_dir(self.path.parent)
        salvaged = self._salvage_streams(aside)
        found = salvage_messages(aside, self._envelope_fits)
        rows = found.rows
        marked = mark.seqs if mark is not None else {}
        last_seq: dict[str, int] = {}
        digests: dict[str, str] = {}
        unaccounted: dict[str, list[int]] = {}
        for stream in STREAMS:
            old_seq, old_digest = salvaged.get(stream, (0, ""))
            reserved = marked.get(stream, 0)
            kept = max((row[1] for row in rows if row[0] == stream), default=0)
            last_seq[stream] = max(old_seq, reserved, kept)
            # The chain continues only where the exact last envelope's digest is known.
            if old_seq >= reserved and old_digest:
                digests[stream] = old_digest
            elif mark is not None and reserved >= old_seq and mark.digests.get(stream):
                digests[stream] = mark.digests[stream]
            else:
                digests[stream] = self._genesis
            if reserved > max(old_seq, kept):
                # Handed out but neither the damaged streams table nor any row knows them.
                unaccounted[stream] = [max(old_seq, kept) + 1, reserved]
        source: Literal["corrupt_db", "side_file", "both", "none"]
        if salvaged and any(marked.values()):
            source = "both"
        elif salvaged:
            source = "corrupt_db"
        elif any(marked.values()):
            source = "side_file"
        else:
            source = "none"
        self._conn = self._connect()
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT OR REPLACE INTO streams (stream, last_seq, last_digest) VALUES (?, ?, ?)",
            [(s, last_seq[s], digests[s]) for s in STREAMS],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO messages (stream, seq, created, expires, size, state, reason, envelope)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute("COMMIT")
        self.generation += 1
        self._load_state(conn)
        unusable_total = sum(found.unusable.values())
        recovery = Recovery(tuple(moved), error, source, dict(last_seq), len(rows), unusable_total)
        self.recoveries.append(recovery)
        log.error(
            "outbox_corrupt_recovered",
            error=error,
            moved_to=[str(p) for p in moved],
            seq_from=source,
            last_seq=last_seq,
            salvaged=len(rows),
            unreadable=found.unreadable,
            unusable=found.unusable,
        )
        self._record_incident(
            Incident(
                "corrupt",
                f"outbox database was corrupt ({error}); moved aside, started fresh with the"
                f" {len(rows)} message(s) that read back whole",
                unaccounted=unaccounted,
                unreadable=found.unreadable,
                unusable=found.unusable,
                salvaged=len(rows),
                moved_to=[str(p) for p in moved],
            )
        )

    @staticmethod
    def _salvage_streams(aside: Path) -> dict[str, tuple[int, str]]:
        """Best effort: read the streams table of the moved corrupt file, read-only."""
        found: dict[str, tuple[int, str]] = {}
        try:
            conn = sqlite3.connect(f"file:{aside}?mode=ro", uri=True)
        except sqlite3.Error:
            return found
        try:
            for stream, last_seq, digest in conn.execute("SELECT stream, last_seq, last_digest FROM streams"):
                if stream in STREAMS:
                    found[str(stream)] = (int(last_seq), str(digest))
        except sqlite3.Error:
            return {}
        finally:
            conn.close()
        return found

    @staticmethod
    def _envelope_fits(stream: Any, seq: Any, envelope: Any) -> bool:
        if stream not in STREAMS or not isinstance(seq, int) or not isinstance(envelope, bytes):
            return False
        try:
            _kid, payload = peek_envelope(envelope)
        except (EnvelopeError, ValueError):
            return False
        return payload.get("stream") == stream and payload.get("seq") == seq

    def _publish_snapshot(self) -> None:
        self._snapshot = {s: st.copy() for s, st in self._state.items()}

    def _writer(self) -> None:
        window = self.config.batch_window_ms / 1000.0
        # A burst of enqueues arrives tens of microseconds apart; a pause this long ends it early.
        gap = min(window, _BATCH_GAP_S)
        stop = False
        while not stop:
            try:
                # Deletes deferred by a full disk are retried every second until they commit.
                job = self._jobs.get(timeout=1.0) if self._undeleted else self._jobs.get()
            except queue.Empty:
                job = _DeliveredJob(None, [])
            batch = [job]
            deadline = time.monotonic() + window
            while len(batch) < self.config.max_batch and not isinstance(batch[-1], _StopJob):
                remaining = deadline - time.monotonic()
                try:
                    batch.append(
                        self._jobs.get(timeout=min(remaining, gap))
                        if remaining > 0
                        else self._jobs.get_nowait()
                    )
                except queue.Empty:
                    break
            if isinstance(batch[-1], _StopJob):
                stop = True
                batch.pop()
            if batch:
                try:
                    results = self._process(batch)
                except Exception as err:  # a bug must not leave callers hanging forever
                    log.exception("outbox_writer_failed")
                    failure = StorageError(f"outbox writer failed: {err}", path=self.path)
                    results = [(j, None, failure) for j in batch]
                self._post(results)
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None
        self._mark.close()

    def _process(self, batch: list[_Job]) -> list[tuple[_Job, Any, BaseException | None]]:
        batch = self._with_undeleted(batch)
        if not self._mark_ready and any(isinstance(j, _EnqueueJob) for j in batch):
            try:
                self._write_mark(self._state)
            except OSError as err:
                # No seq may be handed out before the mark can record it: refuse (507), keep going.
                log.error("outbox_seq_mark_unwritable", path=str(self._mark.path), error=str(err))
                return self._refuse_enqueues(batch, err)
        try:
            return self._transaction(batch)
        except _DiskFull:
            pass
        except _Corrupt as err:
            return self._after_corruption(batch, str(err))
        # Disk full: free space first (acks, expiry), then each message alone, making room.
        others = [j for j in batch if not isinstance(j, _EnqueueJob)]
        results: list[tuple[_Job, Any, BaseException | None]] = []
        if others:
            try:
                results += self._transaction(others)
            except (_DiskFull, _Corrupt) as err:
                results += self._failed_bookkeeping(others, err)
        for job in batch:
            if isinstance(job, _EnqueueJob):
                results.append(self._enqueue_alone(job))
        return results

    def _refuse_enqueues(
        self, batch: list[_Job], err: OSError
    ) -> list[tuple[_Job, Any, BaseException | None]]:
        others = [j for j in batch if not isinstance(j, _EnqueueJob)]
        results: list[tuple[_Job, Any, BaseException | None]] = []
        if others:
            try:
                results += self._transaction(others)
            except (_DiskFull, _Corrupt) as failure:
                results += self._failed_bookkeeping(others, failure)
        used = sum(s.bytes + s.parked_bytes for s in self._state.values())
        for job in batch:
            if isinstance(job, _EnqueueJob):
                st = self._state[job.stream]
                st.counters["refused"] += 1
                self._persist_counter_quietly(job.stream, "refused", st.counters["refused"])
                refusal: OutboxError = (
                    OutboxFull(job.stream, reason="disk", used=used, limit=self.config.max_bytes)
                    if isinstance(err, SeqMarkFull)
                    else StorageError(f"cannot record the seq mark: {err}", path=self.path)
                )
                results.append((job, None, refusal))
        return results

    def _enqueue_alone(self, job: _EnqueueJob) -> tuple[_Job, Any, BaseException | None]:
        for _ in range(64):
            try:
                return self._transaction([job])[0]
            except _DiskFull:
                pass
            except _Corrupt as err:
                return self._after_corruption([job], str(err))[0]
            if not self._evict_for_disk(job.stream):
                break
        st = self._state[job.stream]
        st.counters["refused"] += 1
        self._persist_counter_quietly(job.stream, "refused", st.counters["refused"])
        used = sum(s.bytes + s.parked_bytes for s in self._state.values())
        return job, None, OutboxFull(job.stream, reason="disk", used=used, limit=self.config.max_bytes)

    def _with_undeleted(self, batch: list[_Job]) -> list[_Job]:
        """Deletes that failed on a full disk ride along with the next transaction."""
        if not self._undeleted:
            return batch
        items, self._undeleted = self._undeleted, []
        return [_DeliveredJob(None, items), *batch]

    def _failed_bookkeeping(
        self, jobs: list[_Job], err: Exception
    ) -> list[tuple[_Job, Any, BaseException | None]]:
        """Deletes after PUBACK are kept and retried (the broker has them); the rest fail."""
        failure = StorageError(f"outbox storage failed: {err}", path=self.path)
        results: list[tuple[_Job, Any, BaseException | None]] = []
        for job in jobs:
            if isinstance(job, _DeliveredJob) and isinstance(err, _DiskFull):
                self._undeleted.extend(job.items)
                log.warning("outbox_delete_deferred", rows=len(job.items), error=str(err))
                results.append((job, None, None))
            else:
                results.append((job, None, failure))
        return results

    def _persist_counter_quietly(self, stream: str, name: str, value: int) -> None:
        conn = self._conn
        if conn is None:
            return
        with contextlib.suppress(sqlite3.Error):
            conn.execute(
                "INSERT OR REPLACE INTO counters (stream, name, value) VALUES (?, ?, ?)",
                (stream, name, value),
            )
        self._publish_snapshot()

    def _evict_for_disk(self, stream: str) -> bool:
        """Drop a chunk of the oldest droppable messages; False when there is nothing to drop."""
        policy = self._classes[stream].when_full
        victims = [stream] if policy == "drop_oldest" else self._droppable_streams()
        conn = self._conn
        assert conn is not None
        for victim in victims:
            if self._state[victim].count == 0:
                continue
            work = {s: st.copy() for s, st in self._state.items()}
            try:
                conn.execute("BEGIN IMMEDIATE")
                freed = self._drop_oldest(conn, work, victim, need=0, rows=64)
                self._write_counters(conn, work, {victim})
                conn.execute("COMMIT")
            except sqlite3.Error as err:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                log.error("outbox_evict_failed", stream=victim, error=str(err))
                return False
            self._state = work
            self._publish_snapshot()
            if freed:
                log.warning("outbox_disk_full_dropped", stream=victim, bytes=freed)
                return True
        return False

    def _droppable_streams(self) -> list[str]:
        """Streams whose policy allows dropping, lowest priority first."""
        return [s for s in reversed(self.priority_order) if self._classes[s].when_full == "drop_oldest"]

    def _after_corruption(
        self, batch: list[_Job], error: str
    ) -> list[tuple[_Job, Any, BaseException | None]]:
        try:
            self._recover(error, self._mark.read())
        except Exception as err:
            log.exception("outbox_recovery_failed")
            failure = StorageError(f"outbox database corrupt and recovery failed: {err}", path=self.path)
            return [(j, None, failure) for j in batch]
        with contextlib.suppress(OSError):
            self._write_mark(self._state)
        self._publish_snapshot()
        # Salvaged rows are new rows of a new generation: the publisher starts over on them.
        self._on_loop(self._notify, frozenset(STREAMS))
        failure = StorageError(f"outbox database was corrupt and was replaced: {error}", path=self.path)
        return [(j, None, failure if isinstance(j, _EnqueueJob) else None) for j in batch]

    def _transaction(self, batch: Sequence[_Job]) -> list[tuple[_Job, Any, BaseException | None]]:
        """Apply the jobs in one transaction; in-memory state changes only if it commits."""
        conn = self._conn
        assert conn is not None
        work = {s: st.copy() for s, st in self._state.items()}
        touched: set[str] = set()
        results: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                if isinstance(job, _EnqueueJob):
                    results.append(self._apply_enqueue(conn, work, job, touched))
                elif isinstance(job, _DeliveredJob):
                    self._apply_delivered(conn, work, job.items, touched)
                    results.append((job, None, None))
                elif isinstance(job, _RejectJob):
                    self._apply_reject(conn, work, job, touched)
                    results.append((job, None, None))
                elif isinstance(job, _ExpireJob):
                    self._apply_expire(conn, work, job.item, touched)
                    results.append((job, None, None))
                elif isinstance(job, _SweepJob):
                    results.append((job, self._apply_sweep(conn, work, touched), None))
                elif isinstance(job, _RequeueJob):
                    results.append((job, self._apply_requeue(conn, work, job, touched), None))
                elif isinstance(job, _CheckJob):
                    self._check_requested = False
                    problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall()]
                    if problems != ["ok"]:
                        conn.execute("ROLLBACK")
                        raise _Corrupt("; ".join(problems[:5]))
                    results.append((job, None, None))
            if touched:
                for stream in touched:
                    work[stream].oldest = self._oldest(conn, stream)
                conn.executemany(
                    "INSERT OR REPLACE INTO streams (stream, last_seq, last_digest) VALUES (?, ?, ?)",
                    [(s, work[s].last_seq, work[s].last_digest) for s in touched],
                )
                self._write_counters(conn, work, touched)
            conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as err:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(err, sqlite3.Error) and _is_full(err):
                raise _DiskFull(str(err)) from err
            if isinstance(err, sqlite3.Error) and _is_corrupt(err):
                raise _Corrupt(str(err)) from err
            failure = StorageError(f"outbox transaction failed: {err}", path=self.path)
            return [(j, None, failure) for j in batch]
        self.commits += 1
        if self._commit_delay_s:
            time.sleep(self._commit_delay_s)
        self._state = work
        try:
            # Durable before anyone learns of the new seqs (callers, the publisher's reads).
            self._write_mark(work)
        except OSError as err:
            log.error("outbox_seq_mark_failed", path=str(self._mark.path), error=str(err))
            failure = StorageError(
                f"committed, but its seq could not be made durable ({err}); it may still be sent",
                path=self.path,
            )
            results = [
                (j, v, failure if isinstance(j, _EnqueueJob) and e is None else e) for j, v, e in results
            ]
        self._publish_snapshot()
        return results

    @staticmethod
    def _write_counters(
        conn: sqlite3.Connection, work: dict[str, _StreamState], streams: Iterable[str]
    ) -> None:
        conn.executemany(
            "INSERT OR REPLACE INTO counters (stream, name, value) VALUES (?, ?, ?)",
            [(s, name, work[s].counters[name]) for s in streams for name in _COUNTERS],
        )

    def _apply_enqueue(
        self, conn: sqlite3.Connection, work: dict[str, _StreamState], job: _EnqueueJob, touched: set[str]
    ) -> tuple[_Job, Any, BaseException | None]:
        st = work[job.stream]
        seq = st.last_seq + 1
        try:
            envelope = self._sealer.seal(
                stream=job.stream, seq=seq, prev=st.last_digest, type=job.type, body=job.body
            )
        except Exception as err:  # whatever the sealer's encoder raises for a bad body
            return job, None, InvalidMessage(job.stream, f"{type(err).__name__}: {err}")
        size = len(envelope)
        refusal = self._make_room(conn, work, job.stream, size, touched)
        if refusal is not None:
            st.counters["refused"] += 1
            touched.add(job.stream)
            return job, None, refusal
        cls = self._classes[job.stream]
        expires = job.created + cls.ttl_s if cls.ttl_s else None
        cur = conn.execute(
            "INSERT INTO messages (stream, seq, created, expires, size, envelope) VALUES (?, ?, ?, ?, ?, ?)",
            (job.stream, seq, job.created, expires, size, envelope),
        )
        st.last_seq = seq
        st.last_digest = self._digest(envelope)
        st.count += 1
        st.bytes += size
        touched.add(job.stream)
        row_id = cur.lastrowid
        assert row_id is not None
        return job, Enqueued(job.stream, seq, row_id), None

    def _make_room(
        self,
        conn: sqlite3.Connection,
        work: dict[str, _StreamState],
        stream: str,
        size: int,
        touched: set[str],
    ) -> OutboxFull | None:
        """Apply the class and outbox quotas; None when the message fits (maybe after drops)."""
        cls = self._classes[stream]
        st = work[stream]
        if cls.max_bytes and st.bytes + st.parked_bytes + size > cls.max_bytes:
            used = st.bytes + st.parked_bytes
            if cls.when_full != "drop_oldest" or size > cls.max_bytes:
                return OutboxFull(stream, reason="quota", used=used, limit=cls.max_bytes)
            self._drop_oldest(conn, work, stream, need=used + size - cls.max_bytes)
            touched.add(stream)
            if st.bytes + st.parked_bytes + size > cls.max_bytes:
                return OutboxFull(
                    stream, reason="quota", used=st.bytes + st.parked_bytes, limit=cls.max_bytes
                )
        total = sum(s.bytes + s.parked_bytes for s in work.values())
        if total + size <= self.config.max_bytes:
            return None
        victims = [stream] if cls.when_full == "drop_oldest" else self._droppable_streams()
        for victim in victims:
            need = total + size - self.config.max_bytes
            if need <= 0:
                break
            freed = self._drop_oldest(conn, work, victim, need=need)
            if freed:
                touched.add(victim)
            total -= freed
        if total + size > self.config.max_bytes:
            return OutboxFull(stream, reason="quota", used=total, limit=self.config.max_bytes)
        return None

    @staticmethod
    def _drop_oldest(
        conn: sqlite3.Connection, work: dict[str, _StreamState], stream: str, *, need: int, rows: int = 0
    ) -> int:
        """Delete the oldest queued messages of a stream until `need` bytes (or `rows` rows) are freed."""
        st = work[stream]
        freed = 0
        dropped = 0
        while (freed < need or dropped < rows) and st.count > 0:
            batch = conn.execute(
                "SELECT id, size FROM messages WHERE stream = ? AND state = 0 ORDER BY seq LIMIT 256",
                (stream,),
            ).fetchall()
            if not batch:
                break
            chosen: list[tuple[int, int]] = []
            for row_id, size in batch:
                if freed >= need and dropped >= rows:
                    break
                chosen.append((row_id, size))
                freed += size
                dropped += 1
            conn.executemany("DELETE FROM messages WHERE id = ?", [(r,) for r, _ in chosen])
            st.count -= len(chosen)
            st.bytes -= sum(s for _, s in chosen)
            st.counters["dropped"] += len(chosen)
        return freed

    def _apply_delivered(
        self, conn: sqlite3.Connection, work: dict[str, _StreamState], items: list[Pending], touched: set[str]
    ) -> None:
        # Row ids restart in a database that replaced a corrupt one: older acks are void.
        ids = [item.id for item in items if item.generation == self.generation]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            # Rows already dropped or expired are simply not there any more.
            for stream, size, state in conn.execute(
                f"DELETE FROM messages WHERE id IN ({marks}) RETURNING stream, size, state",  # noqa: S608
                chunk,
            ).fetchall():
                st = work[stream]
                if state == _QUEUED:
                    st.count -= 1
                    st.bytes -= size
                else:
                    st.parked -= 1
                    st.parked_bytes -= size
                st.counters["delivered"] += 1
                touched.add(stream)

    def _apply_reject(
        self, conn: sqlite3.Connection, work: dict[str, _StreamState], job: _RejectJob, touched: set[str]
    ) -> None:
        item = job.item
        if item.generation != self.generation:
            return
        row = conn.execute(
            "UPDATE messages SET state = 1, reason = ? WHERE id = ? AND stream = ? AND seq = ? AND state = 0"
            " RETURNING size",
            (job.reason, item.id, item.stream, item.seq),
        ).fetchone()
        if row is None:
            return
        st = work[item.stream]
        st.count -= 1
        st.bytes -= row[0]
        st.parked += 1
        st.parked_bytes += row[0]
        st.counters["rejected"] += 1
        touched.add(item.stream)

    def _apply_requeue(
        self, conn: sqlite3.Connection, work: dict[str, _StreamState], job: _RequeueJob, touched: set[str]
    ) -> dict[str, int]:
        where = "state != ?"
        args: list[int | str] = [_QUEUED]
        if job.stream is not None:
            where += " AND stream = ?"
            args.append(job.stream)
        requeued: dict[str, int] = {}
        chunks = [None] if job.seqs is None else [job.seqs[i : i + 500] for i in range(0, len(job.seqs), 500)]
        for chunk in chunks:
            clause, params = where, list(args)
            if chunk is not None:
                clause += f" AND seq IN ({','.join('?' * len(chunk))})"
                params.extend(chunk)
            rows = conn.execute(
                f"UPDATE messages SET state = ?, reason = NULL WHERE {clause} RETURNING stream, size",  # noqa: S608
                [_QUEUED, *params],
            ).fetchall()
            for stream, size in rows:
                st = work[stream]
                st.parked -= 1
                st.parked_bytes -= size
                st.count += 1
                st.bytes += size
                st.counters["requeued"] += 1
                requeued[stream] = requeued.get(stream, 0) + 1
                touched.add(stream)
        return requeued

    def _apply_expire(
        self, conn: sqlite3.Connection, work: dict[str, _StreamState], item: Pending, touched: set[str]
    ) -> None:
        if item.generation != self.generation:
            return
        row = conn.execute(
            "DELETE FROM messages WHERE id = ? AND stream = ? AND seq = ? AND state = 0 RETURNING size",
            (item.id, item.stream, item.seq),
        ).fetchone()
        if row is None:
            return
        st = work[item.stream]
        st.count -= 1
        st.bytes -= row[0]
        st.counters["expired"] += 1
        touched.add(item.stream)

    def _apply_sweep(
        self, conn: sqlite3.Connection, work: dict[str, _StreamState], touched: set[str]
    ) -> dict[str, int]:
        now = self.clock()
        expired: dict[str, int] = {}
        for stream in STREAMS:
            st = work[stream]
            total = 0
            while True:
                rows = conn.execute(
                    "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE stream = ? AND state = 0"
                    " AND expires IS NOT NULL AND expires <= ? ORDER BY seq LIMIT 1000) RETURNING size",
                    (stream, now),
                ).fetchall()
                if not rows:
                    break
                total += len(rows)
                st.count -= len(rows)
                st.bytes -= sum(r[0] for r in rows)
            if total:
                st.counters["expired"] += total
                touched.add(stream)
                expired[stream] = total
        if expired:
            log.info("outbox_expired", counts=expired)
        free, pages = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("freelist_count", "page_count"))
        if pages and free > max(256, pages // 4):
            # Give back space from a drained backlog without a full VACUUM.
            conn.execute(f"PRAGMA incremental_vacuum({int(free)})").fetchall()
        return expired
