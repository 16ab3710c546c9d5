"""Read back every message row that still reads from a corrupt outbox file (opened read-only).

Two b-trees hold each message: the table (by row id) and the UNIQUE (stream, seq) index, which
carries (stream, seq, row id) on pages of its own. The index says what should exist; the table
is read a page at a time and, where a read fails, row by row (`WHERE id = ?`) until reads work
again, so a damaged page costs only the rows on it. A row is kept only if its envelope names the
row's stream and seq (the caller's check). What the index lists but no read returned is counted
per stream as unreadable; rows the index cannot place are counted under "?".
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

_PAGE: Final = 500
# Rows read one by one after a failed page before a whole page is tried again.
_CAREFUL: Final = 32
# Bound on single lookups past the last id known to exist.
_PAST_END: Final = 2_000
_INDEX: Final = "sqlite_autoindex_messages_1"

Row = tuple[Any, ...]


@dataclass
class Salvage:
    """Rows (stream, seq, created, expires, size, state, reason, envelope) and what was lost."""

    rows: list[Row] = field(default_factory=list)
    unreadable: dict[str, int] = field(default_factory=dict)
    unusable: dict[str, int] = field(default_factory=dict)
    index_complete: bool = True


def _index_entries(
    conn: sqlite3.Connection, streams: dict[str, int]
) -> tuple[dict[int, tuple[str, int]], bool]:
    """(row id -> (stream, seq)) from the (stream, seq) index alone; False if part of it failed."""
    found: dict[int, tuple[str, int]] = {}
    complete = True
    for stream, last in streams.items():
        after, careful = 0, 0
        while True:
            try:
                if careful:
                    after += 1
                    if after > last + _PAST_END:
                        break
                    rows = conn.execute(
                        f"SELECT stream, seq, id FROM messages INDEXED BY {_INDEX}"  # noqa: S608
                        " WHERE stream = ? AND seq = ?",
                        (stream, after),
                    ).fetchall()
                    careful -= 1
                else:
                    rows = conn.execute(
                        f"SELECT stream, seq, id FROM messages INDEXED BY {_INDEX}"  # noqa: S608
                        " WHERE stream = ? AND seq > ? ORDER BY seq LIMIT ?",
                        (stream, after, _PAGE),
                    ).fetchall()
                    if not rows:
                        break
                    after = int(rows[-1][1])
            except sqlite3.Error:
                complete = False
                careful = _CAREFUL
                continue
            for s, q, row_id in rows:
                if isinstance(row_id, int) and isinstance(q, int):
                    found[row_id] = (str(s), q)
    return found, complete


def _last_seqs(conn: sqlite3.Connection, streams: tuple[str, ...]) -> dict[str, int]:
    last = dict.fromkeys(streams, 0)
    try:
        for stream, seq in conn.execute("SELECT stream, last_seq FROM streams"):
            if stream in last and isinstance(seq, int):
                last[stream] = seq
    except sqlite3.Error:
        pass
    return last


def _highest_id(conn: sqlite3.Connection, known: dict[int, tuple[str, int]]) -> int:
    best = max(known, default=0)
    for query in ("SELECT seq FROM sqlite_sequence WHERE name = 'messages'", "SELECT max(id) FROM messages"):
        try:
            row = conn.execute(query).fetchone()
        except sqlite3.Error:
            continue
        if row and isinstance(row[0], int):
            best = max(best, row[0])
    return best


def salvage_messages(
    path: Path, fits: Callable[[Any, Any, Any], bool], streams: tuple[str, ...] = ()
) -> Salvage:
    """Every row of `path` that reads back and passes `fits(stream, seq, envelope)`."""
    result = Salvage()
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return result
    try:
        try:
            conn.execute("SELECT name FROM sqlite_schema WHERE name = 'messages'").fetchall()
        except sqlite3.Error:
            return result  # not a database any more (header or schema page gone): nothing reads
        names = streams or ("tx", "audit", "alert", "telemetry", "event")
        try:
            index, result.index_complete = _index_entries(conn, _last_seqs(conn, names))
        except sqlite3.Error:
            index, result.index_complete = {}, False
        highest = _highest_id(conn, index)
        read_ids: set[int] = set()
        failed: set[int] = set()
        after, careful = 0, 0
        while True:
            try:
                if careful:
                    after += 1
                    if after > highest + _PAST_END:
                        break
                    batch = conn.execute(
                        "SELECT id, stream, seq, created, expires, state, reason, envelope"
                        " FROM messages WHERE id = ?",
                        (after,),
                    ).fetchall()
                    careful -= 1
                else:
                    batch = conn.execute(
                        "SELECT id, stream, seq, created, expires, state, reason, envelope"
                        " FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                        (after, _PAGE),
                    ).fetchall()
                    if not batch:
                        break
                    after = int(batch[-1][0])
            except sqlite3.Error:
                if careful:
                    failed.add(after)
                careful = _CAREFUL
                continue
            for row_id, stream, seq, created, expires, state, reason, envelope in batch:
                read_ids.add(row_id)
                if fits(stream, seq, envelope):
                    result.rows.append(
                        (stream, seq, created, expires, len(envelope), state, reason, envelope)
                    )
                else:
                    label = index.get(row_id, (stream if stream in names else "?", 0))[0]
                    result.unusable[label] = result.unusable.get(label, 0) + 1
                highest = max(highest, row_id)
    finally:
        conn.close()
    for row_id, (stream, _seq) in index.items():
        if row_id not in read_ids:
            result.unreadable[stream] = result.unreadable.get(stream, 0) + 1
    if not result.index_complete:
        # Failed reads the index cannot place: some may be rows already delivered (deleted).
        lost = len([i for i in failed if i not in index and i <= highest])
        if lost:
            result.unreadable["?"] = result.unreadable.get("?", 0) + lost
    return result
