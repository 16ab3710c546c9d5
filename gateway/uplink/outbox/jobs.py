"""The writer's jobs: each applies itself to one write transaction and returns what its caller gets.

A job's `apply` changes rows through `tx.conn` and the streams' working state `tx.work`, and adds
the streams it changed to `tx.touched`; the writer commits them together. A refusal of one
message (InvalidMessage, OutboxFull) is raised and answered to that caller alone.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from gateway.uplink.outbox.config import STREAMS
from gateway.uplink.outbox.errors import InvalidMessage
from gateway.uplink.outbox.quotas import Quotas
from gateway.uplink.outbox.records import Enqueued, Pending, Seal
from gateway.uplink.outbox.store import QUEUED, Corrupt, States, StreamState

log = structlog.get_logger(__name__)

_CHUNK = 500


@dataclass
class Transaction:
    """One write transaction and what jobs need to apply themselves to it."""

    conn: sqlite3.Connection
    work: States
    touched: set[str]
    generation: int
    quotas: Quotas
    sealer: Seal
    digest: Callable[[bytes], str]
    clock: Callable[[], float]


@dataclass(eq=False)
class Job:
    """Something the writer thread does in a transaction; `future` gets the result on the loop."""

    future: asyncio.Future[Any] | None

    def apply(self, tx: Transaction) -> Any:
        raise NotImplementedError


@dataclass(eq=False)
class EnqueueJob(Job):
    """Seal a message with the next seq of its stream and store it (making room if the class drops)."""

    stream: str
    type: str
    body: Any
    created: float

    def apply(self, tx: Transaction) -> Enqueued:
        st = tx.work[self.stream]
        seq = st.last_seq + 1
        try:
            envelope = tx.sealer.seal(
                stream=self.stream, seq=seq, prev=st.last_digest, type=self.type, body=self.body
            )
        except Exception as err:  # whatever the sealer's encoder raises for a bad body
            raise InvalidMessage(self.stream, f"{type(err).__name__}: {err}") from err
        size = len(envelope)
        refusal = tx.quotas.make_room(tx.conn, tx.work, self.stream, size, tx.touched)
        if refusal is not None:
            st.counters["refused"] += 1
            tx.touched.add(self.stream)
            raise refusal
        cls = tx.quotas.classes[self.stream]
        expires = self.created + cls.ttl_s if cls.ttl_s else None
        cur = tx.conn.execute(
            "INSERT INTO messages (stream, seq, created, expires, size, envelope) VALUES (?, ?, ?, ?, ?, ?)",
            (self.stream, seq, self.created, expires, size, envelope),
        )
        st.last_seq = seq
        st.last_digest = tx.digest(envelope)
        st.count += 1
        st.bytes += size
        tx.touched.add(self.stream)
        row_id = cur.lastrowid
        assert row_id is not None
        return Enqueued(self.stream, seq, row_id)


@dataclass(eq=False)
class DeliveredJob(Job):
    """The broker has these: delete their rows (rows already dropped or expired are simply gone)."""

    items: list[Pending]

    def apply(self, tx: Transaction) -> None:
        # Row ids restart in a database that replaced a corrupt one: older acks are void.
        ids = [item.id for item in self.items if item.generation == tx.generation]
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for stream, size, state in tx.conn.execute(
                f"DELETE FROM messages WHERE id IN ({marks}) RETURNING stream, size, state",  # noqa: S608
                chunk,
            ).fetchall():
                st = tx.work[stream]
                if state == QUEUED:
                    st.count -= 1
                    st.bytes -= size
                else:
                    st.parked -= 1
                    st.parked_bytes -= size
                st.counters["delivered"] += 1
                tx.touched.add(stream)


def _take_queued(
    tx: Transaction, item: Pending, sql: str, params: tuple[Any, ...]
) -> tuple[StreamState, int] | None:
    """Take `item`'s row out of the queue with `sql` (RETURNING size): its stream's state and size.

    None when the row is of an older generation or no longer queued (delivered, dropped, expired).
    """
    if item.generation != tx.generation:
        return None
    row = tx.conn.execute(sql, params).fetchone()
    if row is None:
        return None
    st = tx.work[item.stream]
    st.count -= 1
    st.bytes -= row[0]
    tx.touched.add(item.stream)
    return st, int(row[0])


@dataclass(eq=False)
class RejectJob(Job):
    """The broker refused it: park the row (kept, not sent) until ops requeue it."""

    item: Pending
    reason: int

    def apply(self, tx: Transaction) -> None:
        item = self.item
        taken = _take_queued(
            tx,
            item,
            "UPDATE messages SET state = 1, reason = ? WHERE id = ? AND stream = ? AND seq = ? AND state = 0"
            " RETURNING size",
            (self.reason, item.id, item.stream, item.seq),
        )
        if taken is not None:
            st, size = taken
            st.parked += 1
            st.parked_bytes += size
            st.counters["rejected"] += 1


@dataclass(eq=False)
class ExpireJob(Job):
    """The publisher passed it over as expired: delete it so it can never go out later."""

    item: Pending

    def apply(self, tx: Transaction) -> None:
        item = self.item
        taken = _take_queued(
            tx,
            item,
            "DELETE FROM messages WHERE id = ? AND stream = ? AND seq = ? AND state = 0 RETURNING size",
            (item.id, item.stream, item.seq),
        )
        if taken is not None:
            taken[0].counters["expired"] += 1


@dataclass(eq=False)
class RequeueJob(Job):
    """Put parked rows (all, one stream's, or given seqs of one stream) back in the queue."""

    stream: str | None
    seqs: tuple[int, ...] | None

    def apply(self, tx: Transaction) -> dict[str, int]:
        where = "state != ?"
        args: list[int | str] = [QUEUED]
        if self.stream is not None:
            where += " AND stream = ?"
            args.append(self.stream)
        requeued: dict[str, int] = {}
        seqs = self.seqs
        chunks = [None] if seqs is None else [seqs[i : i + _CHUNK] for i in range(0, len(seqs), _CHUNK)]
        for chunk in chunks:
            clause, params = where, list(args)
            if chunk is not None:
                clause += f" AND seq IN ({','.join('?' * len(chunk))})"
                params.extend(chunk)
            rows = tx.conn.execute(
                f"UPDATE messages SET state = ?, reason = NULL WHERE {clause} RETURNING stream, size",  # noqa: S608
                [QUEUED, *params],
            ).fetchall()
            for stream, size in rows:
                st = tx.work[stream]
                st.parked -= 1
                st.parked_bytes -= size
                st.count += 1
                st.bytes += size
                st.counters["requeued"] += 1
                requeued[stream] = requeued.get(stream, 0) + 1
                tx.touched.add(stream)
        return requeued


@dataclass(eq=False)
class SweepJob(Job):
    """Delete expired queued messages of every stream; give back space from a drained backlog."""

    def apply(self, tx: Transaction) -> dict[str, int]:
        now = tx.clock()
        expired: dict[str, int] = {}
        for stream in STREAMS:
            total = self._expire_stream(tx, stream, now)
            if total:
                tx.work[stream].counters["expired"] += total
                tx.touched.add(stream)
                expired[stream] = total
        if expired:
            log.info("outbox_expired", counts=expired)
        conn = tx.conn
        free, pages = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("freelist_count", "page_count"))
        if pages and free > max(256, pages // 4):
            # Give back space from a drained backlog without a full VACUUM.
            conn.execute(f"PRAGMA incremental_vacuum({int(free)})").fetchall()
        return expired

    @staticmethod
    def _expire_stream(tx: Transaction, stream: str, now: float) -> int:
        st = tx.work[stream]
        total = 0
        while True:
            rows = tx.conn.execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE stream = ? AND state = 0"
                " AND expires IS NOT NULL AND expires <= ? ORDER BY seq LIMIT 1000) RETURNING size",
                (stream, now),
            ).fetchall()
            if not rows:
                return total
            total += len(rows)
            st.count -= len(rows)
            st.bytes -= sum(r[0] for r in rows)


class CheckRequester(Protocol):
    """Who asked for a check (the page reader): told when it ran, so it may ask again."""

    check_requested: bool


@dataclass(eq=False)
class CheckJob(Job):
    """A reader met a malformed page: check the file; a corrupt one is recovered by the writer."""

    requester: CheckRequester

    def apply(self, tx: Transaction) -> None:
        self.requester.check_requested = False
        problems = [str(r[0]) for r in tx.conn.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            tx.conn.execute("ROLLBACK")
            raise Corrupt("; ".join(problems[:5]))


@dataclass(eq=False)
class StopJob(Job):
    """The last job: the writer finishes its batch, closes the files and ends."""
