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
from collections.abc import Callable, Iterator
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


def _read_around_damage(
    page: Callable[[int], list[Row]],
    one: Callable[[int], list[Row]],
    key: int,
    end: Callable[[], int],
    failed: Callable[[int, bool], None],
) -> Iterator[list[Row]]:
    """Pages of rows in `key` column order; after a failed read, single keys until reads work again.

    `page(after)` reads the rows after a key, `one(k)` the rows of key k; `failed(k, single)` hears
    of each failed read. Single reads stop `_PAST_END` keys past `end()`.
    """
    after, careful = 0, 0
    while True:
        try:
            if careful:
                after += 1
                if after > end() + _PAST_END:
                    return
                rows = one(after)
                careful -= 1
            else:
                rows = page(after)
                if not rows:
                    return
                after = int(rows[-1][key])
        except sqlite3.Error:
            failed(after, careful > 0)
            careful = _CAREFUL
            continue
        yield rows


def _index_pages(
    conn: sqlite3.Connection, stream: str, last: int, failures: list[int]
) -> Iterator[list[Row]]:
    """One stream's (stream, seq, id) entries from the index alone, read around damaged pages."""
    query = f"SELECT stream, seq, id FROM messages INDEXED BY {_INDEX} WHERE stream = ?"  # noqa: S608

    def page(after: int) -> list[Row]:
        return conn.execute(query + " AND seq > ? ORDER BY seq LIMIT ?", (stream, after, _PAGE)).fetchall()

    def one(seq: int) -> list[Row]:
        return conn.execute(query + " AND seq = ?", (stream, seq)).fetchall()

    return _read_around_damage(page, one, 1, lambda: last, lambda seq, _single: failures.append(seq))


def _index_entries(
    conn: sqlite3.Connection, streams: dict[str, int]
) -> tuple[dict[int, tuple[str, int]], bool]:
    """(row id -> (stream, seq)) from the (stream, seq) index alone; False if part of it failed."""
    found: dict[int, tuple[str, int]] = {}
    failures: list[int] = []
    for stream, last in streams.items():
        for rows in _index_pages(conn, stream, last, failures):
            for s, q, row_id in rows:
                if isinstance(row_id, int) and isinstance(q, int):
                    found[row_id] = (str(s), q)
    return found, not failures


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


def _table_pages(conn: sqlite3.Connection, end: Callable[[], int], failed: set[int]) -> Iterator[list[Row]]:
    """Message rows by id, read around damaged pages; ids whose single read failed go in `failed`."""
    query = "SELECT id, stream, seq, created, expires, state, reason, envelope FROM messages"

    def page(after: int) -> list[Row]:
        return conn.execute(query + " WHERE id > ? ORDER BY id LIMIT ?", (after, _PAGE)).fetchall()

    def one(row_id: int) -> list[Row]:
        return conn.execute(query + " WHERE id = ?", (row_id,)).fetchall()

    def note(row_id: int, single: bool) -> None:
        if single:
            failed.add(row_id)

    return _read_around_damage(page, one, 0, end, note)


def _read_table(
    conn: sqlite3.Connection,
    names: tuple[str, ...],
    index: dict[int, tuple[str, int]],
    fits: Callable[[Any, Any, Any], bool],
    result: Salvage,
) -> tuple[set[int], set[int], int]:
    """Keep the rows that fit, count those that do not; returns (ids read, ids failed, highest id)."""
    highest = _highest_id(conn, index)
    read_ids: set[int] = set()
    failed: set[int] = set()
    # The end is read late on purpose: it moves up as higher ids read back.
    for batch in _table_pages(conn, lambda: highest, failed):  # noqa: B023
        for row_id, stream, seq, created, expires, state, reason, envelope in batch:
            read_ids.add(row_id)
            if fits(stream, seq, envelope):
                result.rows.append((stream, seq, created, expires, len(envelope), state, reason, envelope))
            else:
                label = index.get(row_id, (stream if stream in names else "?", 0))[0]
                result.unusable[label] = result.unusable.get(label, 0) + 1
            highest = max(highest, row_id)
    return read_ids, failed, highest


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
        read_ids, failed, highest = _read_table(conn, names, index, fits, result)
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
