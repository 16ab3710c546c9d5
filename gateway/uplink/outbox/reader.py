"""The page reader: queued rows for the publisher, read on worker threads through a connection of its own."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable

from gateway.uplink.outbox.errors import OutboxClosed, StorageError
from gateway.uplink.outbox.jobs import CheckJob
from gateway.uplink.outbox.records import Pending
from gateway.uplink.outbox.store import is_corrupt
from gateway.uplink.outbox.writer import Writer


class PageReader:
    """Reads one stream's queued rows in seq order, never above the durable seq mark."""

    def __init__(self, writer: Writer, is_closed: Callable[[], bool]) -> None:
        self._writer = writer
        self._store = writer.store
        self._is_closed = is_closed
        self._conn: sqlite3.Connection | None = None
        self._generation = -1
        self._lock = threading.Lock()
        # Set while a CheckJob it asked for has not run yet (one at a time).
        self.check_requested = False

    def read(self, stream: str, after_seq: int, limit: int) -> list[Pending]:
        """Queued messages of `stream` with seq > after_seq (one page); runs in a worker thread."""
        with self._lock:
            if self._is_closed():
                raise OutboxClosed("the outbox is closed")
            generation = self._store.generation
            conn = self._connect(generation)
            try:
                # Never a row above the durable seq mark: after a lost WAL tail such a seq is
                # handed out again, so it must not have been sent.
                rows = conn.execute(
                    "SELECT id, seq, envelope, expires FROM messages"
                    " WHERE stream = ? AND seq > ? AND seq <= ? AND state = 0 ORDER BY seq LIMIT ?",
                    (stream, after_seq, self._writer.marked.get(stream, 0), limit),
                ).fetchall()
            except sqlite3.Error as err:
                conn.close()
                self._conn = None
                if is_corrupt(err) and not self.check_requested:
                    # Writes may never touch the damaged pages: have the writer look now.
                    self.check_requested = True
                    self._writer.jobs.put(CheckJob(None, self))
                path = self._store.path
                raise StorageError(f"cannot read the outbox: {err}", path=path) from err
        return [Pending(r[0], stream, r[1], bytes(r[2]), r[3], generation) for r in rows]

    def _connect(self, generation: int) -> sqlite3.Connection:
        """The read connection, reopened when the file was replaced (a new generation)."""
        if self._conn is None or self._generation != generation:
            if self._conn is not None:
                self._conn.close()
            self._conn = sqlite3.connect(self._store.path, check_same_thread=False, isolation_level=None)
            self._generation = generation
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
