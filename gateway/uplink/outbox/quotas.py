"""Quotas and eviction: a class's and the outbox's byte limits, and which messages give way for room."""

from __future__ import annotations

import contextlib
import sqlite3

import structlog

from gateway.uplink.outbox.config import OutboxConfig
from gateway.uplink.outbox.errors import OutboxFull
from gateway.uplink.outbox.store import States, Store, save_counters

log = structlog.get_logger(__name__)


def drop_oldest(conn: sqlite3.Connection, work: States, stream: str, *, need: int, rows: int = 0) -> int:
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


class Quotas:
    """The per-class policies: what fits, and whose oldest messages are dropped to make it fit."""

    def __init__(self, config: OutboxConfig) -> None:
        self.classes = config.classes()
        self.max_bytes = config.max_bytes
        self.priority_order = config.by_priority()

    def victims(self, stream: str) -> list[str]:
        """Whose messages may go for a message of `stream`: its own if it drops, else the droppable."""
        if self.classes[stream].when_full == "drop_oldest":
            return [stream]
        return [s for s in reversed(self.priority_order) if self.classes[s].when_full == "drop_oldest"]

    def make_room(
        self, conn: sqlite3.Connection, work: States, stream: str, size: int, touched: set[str]
    ) -> OutboxFull | None:
        """Apply the class and outbox quotas; None when the message fits (maybe after drops)."""
        cls = self.classes[stream]
        st = work[stream]
        if cls.max_bytes and st.bytes + st.parked_bytes + size > cls.max_bytes:
            used = st.bytes + st.parked_bytes
            if cls.when_full != "drop_oldest" or size > cls.max_bytes:
                return OutboxFull(stream, reason="quota", used=used, limit=cls.max_bytes)
            drop_oldest(conn, work, stream, need=used + size - cls.max_bytes)
            touched.add(stream)
            if st.bytes + st.parked_bytes + size > cls.max_bytes:
                return OutboxFull(
                    stream, reason="quota", used=st.bytes + st.parked_bytes, limit=cls.max_bytes
                )
        total = sum(s.bytes + s.parked_bytes for s in work.values())
        if total + size <= self.max_bytes:
            return None
        for victim in self.victims(stream):
            need = total + size - self.max_bytes
            if need <= 0:
                break
            freed = drop_oldest(conn, work, victim, need=need)
            if freed:
                touched.add(victim)
            total -= freed
        if total + size > self.max_bytes:
            return OutboxFull(stream, reason="quota", used=total, limit=self.max_bytes)
        return None

    def evict_for_disk(self, store: Store, stream: str) -> bool:
        """Drop a chunk of the oldest droppable messages; False when there is nothing to drop."""
        conn = store.conn
        assert conn is not None
        for victim in self.victims(stream):
            if store.state[victim].count == 0:
                continue
            work = store.working_copy()
            try:
                conn.execute("BEGIN IMMEDIATE")
                freed = drop_oldest(conn, work, victim, need=0, rows=64)
                save_counters(conn, work, {victim})
                conn.execute("COMMIT")
            except sqlite3.Error as err:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                log.error("outbox_evict_failed", stream=victim, error=str(err))
                return False
            store.state = work
            store.publish_snapshot()
            if freed:
                log.warning("outbox_disk_full_dropped", stream=victim, bytes=freed)
                return True
        return False
