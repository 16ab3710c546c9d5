"""The outbox's SQLite file: schema, connection settings, and the per-stream state that mirrors it.

Only the writer thread (and the open before it) changes the file or the state; readers on the
event loop see `snapshot`, a copy published after each commit.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from gateway.uplink.outbox.config import STREAMS
from gateway.uplink.outbox.errors import StorageError

# messages.state: 0 queued; 1 parked (rejected by the broker, kept until ops requeue it).
QUEUED: Final = 0
COUNTERS: Final = ("delivered", "expired", "dropped", "rejected", "refused", "requeued")

_SQLITE_CORRUPT: Final = 11
_SQLITE_FULL: Final = 13
_SQLITE_NOTADB: Final = 26

SCHEMA: Final = """
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


class DiskFull(Exception):
    """SQLITE_FULL inside a transaction (internal to the writer)."""


class Corrupt(Exception):
    """SQLITE_CORRUPT / SQLITE_NOTADB inside a transaction (internal to the writer)."""


def is_corrupt(err: sqlite3.Error) -> bool:
    """Whether SQLite says the file is damaged or not a database."""
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return int(code) & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(err)
    return "malformed" in text or "not a database" in text


def is_full(err: sqlite3.Error) -> bool:
    """Whether SQLite says the disk (or the file's page limit) is full."""
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return int(code) & 0xFF == _SQLITE_FULL
    return "full" in str(err)


@dataclass
class StreamState:
    """One stream as the database holds it: seq chain head, queued and parked rows, counters."""

    last_seq: int = 0
    last_digest: str = ""
    count: int = 0
    bytes: int = 0
    parked: int = 0
    parked_bytes: int = 0
    oldest: float | None = None
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))

    def copy(self) -> StreamState:
        clone = StreamState(**{k: v for k, v in vars(self).items() if k != "counters"})
        clone.counters = dict(self.counters)
        return clone


States = dict[str, StreamState]


def used_bytes(states: States) -> int:
    """Stored envelope bytes (queued + parked) across all streams."""
    return sum(s.bytes + s.parked_bytes for s in states.values())


def oldest(conn: sqlite3.Connection, stream: str) -> float | None:
    """Creation time of the first queued message of a stream."""
    row = conn.execute(
        "SELECT created FROM messages WHERE stream = ? AND state = 0 ORDER BY seq LIMIT 1", (stream,)
    ).fetchone()
    return None if row is None else float(row[0])


def save_streams(conn: sqlite3.Connection, rows: Iterable[tuple[str, int, str]]) -> None:
    """Write (stream, last_seq, last_digest) rows of the streams table."""
    conn.executemany(
        "INSERT OR REPLACE INTO streams (stream, last_seq, last_digest) VALUES (?, ?, ?)", list(rows)
    )


def save_counters(conn: sqlite3.Connection, work: States, streams: Iterable[str]) -> None:
    """Write every counter of the given streams."""
    conn.executemany(
        "INSERT OR REPLACE INTO counters (stream, name, value) VALUES (?, ?, ?)",
        [(s, name, work[s].counters[name]) for s in streams for name in COUNTERS],
    )


class Store:
    """The database file, its write connection and the stream state; `generation` counts replacements."""

    def __init__(self, path: Path, genesis_prev: str) -> None:
        self.path = path
        self.genesis = genesis_prev
        self.conn: sqlite3.Connection | None = None
        self.state: States = {s: StreamState() for s in STREAMS}
        self.snapshot: States = {s: StreamState() for s in STREAMS}
        # Bumped when a corrupt file is replaced: row ids of older generations mean nothing.
        self.generation = 0

    def connect(self) -> sqlite3.Connection:
        """Open the file with the outbox's settings, check it, create the schema."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            # Set only when it differs: even an unchanged setting writes, which fails on a full disk.
            if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:  # 2 = incremental
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"cannot switch {self.path} to WAL (got {mode})", path=self.path)
            conn.execute("PRAGMA synchronous = FULL")
            self._configure(conn)
            check = conn.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                raise sqlite3.DatabaseError(
                    f"database disk image is malformed: {'; '.join(str(r[0]) for r in check[:3])}"
                )
            conn.executescript(SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _configure(self, conn: sqlite3.Connection) -> None:
        """Settings beyond the standard ones; none here (gateway.uplink.outbox.testing caps the size)."""

    def load_state(self, conn: sqlite3.Connection) -> None:
        """Rebuild the stream state from the streams, messages and counters tables."""
        state = {s: StreamState() for s in STREAMS}
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
            if st_ == QUEUED:
                state[stream].count, state[stream].bytes = count, size
            else:
                state[stream].parked, state[stream].parked_bytes = count, size
        for stream, name, value in conn.execute("SELECT stream, name, value FROM counters"):
            if stream in state and name in COUNTERS:
                state[stream].counters[name] = value
        for stream in STREAMS:
            st = state[stream]
            if not st.last_digest:
                st.last_digest = self.genesis
            st.oldest = oldest(conn, stream)
        self.state = state

    def working_copy(self) -> States:
        """A copy of the state for one transaction; it replaces `state` only if the commit succeeds."""
        return {s: st.copy() for s, st in self.state.items()}

    def publish_snapshot(self) -> None:
        """Let the event loop see the current state (stats, backlog)."""
        self.snapshot = {s: st.copy() for s, st in self.state.items()}

    def count_refused(self, stream: str) -> None:
        """Count a refusal outside any transaction, persisting it if the disk lets us."""
        st = self.state[stream]
        st.counters["refused"] += 1
        conn = self.conn
        if conn is None:
            return
        with contextlib.suppress(sqlite3.Error):
            conn.execute(
                "INSERT OR REPLACE INTO counters (stream, name, value) VALUES (?, ?, ?)",
                (stream, "refused", st.counters["refused"]),
            )
        self.publish_snapshot()

    def drop_connection(self) -> None:
        """Close the write connection, ignoring errors (a corrupt file being replaced)."""
        if self.conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self.conn.close()
            self.conn = None

    def close(self) -> None:
        """Checkpoint the WAL into the file and close the write connection."""
        if self.conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.conn.close()
            self.conn = None
