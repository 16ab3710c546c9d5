"""The writer thread: the one owner of the write connection, applying jobs in group commits.

Concurrent `enqueue` calls that arrive within the batch window share one transaction and one
fsync (group commit); seq allocation, the prev-hash lookup, sealing and the insert happen inside
that transaction, so a committed seq is never reused and an acknowledged message is never lost.
The seq mark is made durable after each commit and before anyone learns of the new seqs. A full
disk frees space (acks, expiry, drops) and retries each message alone; a corrupt file is recovered.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

import structlog

from gateway.uplink.outbox.config import STREAMS, OutboxConfig
from gateway.uplink.outbox.errors import InvalidMessage, OutboxError, OutboxFull, StorageError
from gateway.uplink.outbox.incidents import Incident
from gateway.uplink.outbox.jobs import DeliveredJob, EnqueueJob, Job, StopJob, Transaction
from gateway.uplink.outbox.quotas import Quotas
from gateway.uplink.outbox.records import Pending, Recovery, Seal
from gateway.uplink.outbox.recovery import IncidentLog, continue_above_mark, recover_corrupt
from gateway.uplink.outbox.seqmark import Mark, SeqMark, SeqMarkFull
from gateway.uplink.outbox.store import (
    Corrupt,
    DiskFull,
    States,
    Store,
    is_corrupt,
    is_full,
    oldest,
    save_counters,
    save_streams,
    used_bytes,
)

log = structlog.get_logger(__name__)

# What a job's caller gets: (job, value, error).
Result = tuple[Job, Any, BaseException | None]

# A burst of enqueues arrives tens of microseconds apart; a pause this long ends it early.
_BATCH_GAP_S: Final = 0.0005


class LoopSide(Protocol):
    """What the writer tells the event loop (the Outbox), each call safe from the writer thread."""

    def post_results(self, results: list[Result]) -> None: ...

    def post_notify(self, streams: frozenset[str]) -> None: ...

    def post_incident(self, incident: Incident) -> None: ...


class Writer:
    """Owns the write connection and the seq mark; `run` is the thread, `open` runs before it."""

    def __init__(
        self,
        store: Store,
        quotas: Quotas,
        incidents: IncidentLog,
        *,
        sealer: Seal,
        digest: Callable[[bytes], str],
        clock: Callable[[], float],
        config: OutboxConfig,
        loop_side: LoopSide,
    ) -> None:
        self.store = store
        self.quotas = quotas
        self.incidents = incidents
        self._sealer = sealer
        self._digest = digest
        self._clock = clock
        self._config = config
        self._loop_side = loop_side
        self.jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self.mark = SeqMark(store.path.with_name(store.path.name + ".seq"))
        # Per stream, the highest seq made durable in the mark: readers never see rows above it.
        self.marked: dict[str, int] = dict.fromkeys(STREAMS, 0)
        self._mark_ready = False
        # Delivered rows whose delete could not be committed (a full disk): retried later.
        self.undeleted: list[Pending] = []
        self.commits = 0
        self.recoveries: list[Recovery] = []

    # ---------------------------------------------------------------- open and run

    def open(self) -> None:
        """Open (or recover) the database; runs in a worker thread before the writer starts."""
        store = self.store
        mark = self.mark.read()
        try:
            store.conn = store.connect()
            store.load_state(store.conn)
            incident = continue_above_mark(store, store.conn, mark)
            if incident is not None:
                self._record(incident)
        except sqlite3.DatabaseError as err:
            if not is_corrupt(err) and "malformed" not in str(err):
                raise StorageError(f"cannot open the outbox {store.path}: {err}", path=store.path) from err
            self._recover(str(err), mark)
        try:
            self._write_mark(store.state)
        except OSError as err:  # a full disk: enqueues answer 507 until the mark can be written
            log.error("outbox_seq_mark_unwritable", path=str(self.mark.path), error=str(err))
            # The backlog already stored still goes out (delivering it is what frees space).
            self.marked = {s: store.state[s].last_seq for s in STREAMS}
        store.publish_snapshot()

    def run(self) -> None:
        """The thread: take batches of jobs, apply them, post the results, until a StopJob."""
        stop = False
        while not stop:
            batch, stop = self._next_batch()
            if batch:
                try:
                    results = self._process(batch)
                except Exception as err:  # a bug must not leave callers hanging forever
                    log.exception("outbox_writer_failed")
                    failure = StorageError(f"outbox writer failed: {err}", path=self.store.path)
                    results = [(j, None, failure) for j in batch]
                self._loop_side.post_results(results)
        self.store.close()
        self.mark.close()

    def _next_batch(self) -> tuple[list[Job], bool]:
        """Jobs that arrive within the batch window (up to max_batch); True when a StopJob came."""
        window = self._config.batch_window_ms / 1000.0
        gap = min(window, _BATCH_GAP_S)
        try:
            # Deletes deferred by a full disk are retried every second until they commit.
            job = self.jobs.get(timeout=1.0) if self.undeleted else self.jobs.get()
        except queue.Empty:
            job = DeliveredJob(None, [])
        batch = [job]
        deadline = time.monotonic() + window
        while len(batch) < self._config.max_batch and not isinstance(batch[-1], StopJob):
            remaining = deadline - time.monotonic()
            try:
                batch.append(
                    self.jobs.get(timeout=min(remaining, gap)) if remaining > 0 else self.jobs.get_nowait()
                )
            except queue.Empty:
                break
        if isinstance(batch[-1], StopJob):
            batch.pop()
            return batch, True
        return batch, False

    def _after_commit(self) -> None:
        """Called after each commit; nothing here (gateway.uplink.outbox.testing slows it down)."""

    # ---------------------------------------------------------------- one batch

    def _process(self, batch: list[Job]) -> list[Result]:
        batch = self._with_undeleted(batch)
        if not self._mark_ready and any(isinstance(j, EnqueueJob) for j in batch):
            try:
                self._write_mark(self.store.state)
            except OSError as err:
                # No seq may be handed out before the mark can record it: refuse (507), keep going.
                log.error("outbox_seq_mark_unwritable", path=str(self.mark.path), error=str(err))
                return self._refuse_enqueues(batch, err)
        try:
            return self._transaction(batch)
        except DiskFull:
            pass
        except Corrupt as err:
            return self._after_corruption(batch, str(err))
        # Disk full: free space first (acks, expiry), then each message alone, making room.
        results = self._bookkeeping(batch)
        for job in batch:
            if isinstance(job, EnqueueJob):
                results.append(self._enqueue_alone(job))
        return results

    def _bookkeeping(self, batch: list[Job]) -> list[Result]:
        """Apply the jobs of a batch that store no message, on their own."""
        others = [j for j in batch if not isinstance(j, EnqueueJob)]
        if not others:
            return []
        try:
            return self._transaction(others)
        except (DiskFull, Corrupt) as err:
            return self._failed_bookkeeping(others, err)

    def _refuse_enqueues(self, batch: list[Job], err: OSError) -> list[Result]:
        results = self._bookkeeping(batch)
        used = used_bytes(self.store.state)
        for job in batch:
            if isinstance(job, EnqueueJob):
                self.store.count_refused(job.stream)
                refusal: OutboxError = (
                    OutboxFull(job.stream, reason="disk", used=used, limit=self._config.max_bytes)
                    if isinstance(err, SeqMarkFull)
                    else StorageError(f"cannot record the seq mark: {err}", path=self.store.path)
                )
                results.append((job, None, refusal))
        return results

    def _enqueue_alone(self, job: EnqueueJob) -> Result:
        for _ in range(64):
            try:
                return self._transaction([job])[0]
            except DiskFull:
                pass
            except Corrupt as err:
                return self._after_corruption([job], str(err))[0]
            if not self.quotas.evict_for_disk(self.store, job.stream):
                break
        self.store.count_refused(job.stream)
        used = used_bytes(self.store.state)
        return job, None, OutboxFull(job.stream, reason="disk", used=used, limit=self._config.max_bytes)

    def _with_undeleted(self, batch: list[Job]) -> list[Job]:
        """Deletes that failed on a full disk ride along with the next transaction."""
        if not self.undeleted:
            return batch
        items, self.undeleted = self.undeleted, []
        return [DeliveredJob(None, items), *batch]

    def _failed_bookkeeping(self, jobs: list[Job], err: Exception) -> list[Result]:
        """Deletes after PUBACK are kept and retried (the broker has them); the rest fail."""
        failure = StorageError(f"outbox storage failed: {err}", path=self.store.path)
        results: list[Result] = []
        for job in jobs:
            if isinstance(job, DeliveredJob) and isinstance(err, DiskFull):
                self.undeleted.extend(job.items)
                log.warning("outbox_delete_deferred", rows=len(job.items), error=str(err))
                results.append((job, None, None))
            else:
                results.append((job, None, failure))
        return results

    # ---------------------------------------------------------------- the transaction

    def _transaction(self, batch: list[Job]) -> list[Result]:
        """Apply the jobs in one transaction; in-memory state changes only if it commits."""
        store = self.store
        conn = store.conn
        assert conn is not None
        tx = Transaction(
            conn,
            store.working_copy(),
            set(),
            store.generation,
            self.quotas,
            self._sealer,
            self._digest,
            self._clock,
        )
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [self._apply(job, tx) for job in batch]
            self._save_touched(tx)
            conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as err:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(err, sqlite3.Error) and is_full(err):
                raise DiskFull(str(err)) from err
            if isinstance(err, sqlite3.Error) and is_corrupt(err):
                raise Corrupt(str(err)) from err
            failure = StorageError(f"outbox transaction failed: {err}", path=store.path)
            return [(j, None, failure) for j in batch]
        self.commits += 1
        self._after_commit()
        store.state = tx.work
        results = self._mark_committed(tx.work, results)
        store.publish_snapshot()
        return results

    @staticmethod
    def _apply(job: Job, tx: Transaction) -> Result:
        try:
            return job, job.apply(tx), None
        except (InvalidMessage, OutboxFull) as refusal:
            return job, None, refusal

    @staticmethod
    def _save_touched(tx: Transaction) -> None:
        if not tx.touched:
            return
        for stream in tx.touched:
            tx.work[stream].oldest = oldest(tx.conn, stream)
        save_streams(tx.conn, [(s, tx.work[s].last_seq, tx.work[s].last_digest) for s in tx.touched])
        save_counters(tx.conn, tx.work, tx.touched)

    def _mark_committed(self, work: States, results: list[Result]) -> list[Result]:
        """Make the new seqs durable before anyone learns of them (callers, the publisher's reads)."""
        try:
            self._write_mark(work)
        except OSError as err:
            log.error("outbox_seq_mark_failed", path=str(self.mark.path), error=str(err))
            failure = StorageError(
                f"committed, but its seq could not be made durable ({err}); it may still be sent",
                path=self.store.path,
            )
            return [(j, v, failure if isinstance(j, EnqueueJob) and e is None else e) for j, v, e in results]
        return results

    def _write_mark(self, state: States) -> None:
        """Make the streams' highest seqs durable in the seq mark (after their commit, before use)."""
        seqs = {s: state[s].last_seq for s in STREAMS}
        if seqs == self.marked and self._mark_ready:
            return
        self.mark.write(seqs, {s: state[s].last_digest for s in STREAMS})
        self._mark_ready = True
        self.marked = seqs

    # ---------------------------------------------------------------- corruption

    def _recover(self, error: str, mark: Mark | None) -> None:
        recovery, incident = recover_corrupt(self.store, error, mark)
        self.recoveries.append(recovery)
        self._record(incident)

    def _record(self, incident: Incident) -> None:
        self.incidents.record(incident)
        self._loop_side.post_incident(incident)

    def _after_corruption(self, batch: list[Job], error: str) -> list[Result]:
        try:
            self._recover(error, self.mark.read())
        except Exception as err:
            log.exception("outbox_recovery_failed")
            failure = StorageError(
                f"outbox database corrupt and recovery failed: {err}", path=self.store.path
            )
            return [(j, None, failure) for j in batch]
        with contextlib.suppress(OSError):
            self._write_mark(self.store.state)
        self.store.publish_snapshot()
        # Salvaged rows are new rows of a new generation: the publisher starts over on them.
        self._loop_side.post_notify(frozenset(STREAMS))
        failure = StorageError(f"outbox database was corrupt and was replaced: {error}", path=self.store.path)
        return [(j, None, failure if isinstance(j, EnqueueJob) else None) for j in batch]
