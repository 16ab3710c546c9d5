"""Recovery: a database behind its seq mark continues above it; a corrupt one is moved aside and salvaged.

Seq continuity across a lost WAL tail, a lost or a corrupt database: before each commit that uses
a new seq, the highest seq of every stream and its envelope digest are made durable in a side
file (`<db>.seq`, see seqmark). On every open the database is compared with it: a database behind
the mark lost committed transactions (a disk that lied about fsync), so seq continues above the
mark, the hash chain from the mark's digest, and the unaccounted seqs are reported (log, red
alert, `/v1/status`, diag) as possibly lost until ops acknowledge them (incidents). A corrupt file
is moved aside and every row that still reads back (row by row around damaged pages, see salvage)
is queued again; the rows that do not are counted per stream.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import structlog

from gateway.status import IncidentReport
from gateway.uplink.envelope import EnvelopeError, peek_envelope
from gateway.uplink.outbox import incidents as journal
from gateway.uplink.outbox.config import STREAMS
from gateway.uplink.outbox.incidents import Incident
from gateway.uplink.outbox.records import OutboxAlert, Recovery
from gateway.uplink.outbox.salvage import Salvage, salvage_messages
from gateway.uplink.outbox.seqmark import Mark
from gateway.uplink.outbox.store import Store, save_streams

log = structlog.get_logger(__name__)

SeqSource = Literal["corrupt_db", "side_file", "both", "none"]


class IncidentLog:
    """Storage incidents: the journal file, plus those this process recorded (even if unsaved)."""

    def __init__(self, db: Path) -> None:
        self.path = journal.journal_path(db)
        # Recorded by this process, in order (kept even when the journal could not be written).
        self.recorded: list[Incident] = []
        self._journal: list[Incident] = []
        self._stamp = -2

    def record(self, incident: Incident) -> None:
        """Keep it in memory and append it to the journal file (a failed write is logged)."""
        self.recorded.append(incident)
        try:
            self._journal = [*journal.load(self.path), incident]
            journal.save(self.path, self._journal)
        except OSError as err:
            log.error("outbox_incident_not_saved", path=str(self.path), error=str(err))

    def open_incidents(self) -> list[IncidentReport]:
        """Incidents ops have not acknowledged yet (`edge-gateway outbox-ack`)."""
        try:
            stamp = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            stamp = -1
        if stamp != self._stamp:
            self._stamp = stamp
            self._journal = journal.load(self.path)
        ids = {i.id for i in self._journal}
        # An incident the journal could not store (a full disk) is still reported.
        pending = [i for i in self._journal if i.acknowledged_at is None]
        pending += [i for i in self.recorded if i.id not in ids]
        return [i.report() for i in pending]


def incident_alert(incident: Incident) -> OutboxAlert:
    """The alert ops get for an incident: red when messages may be lost."""
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


def continue_above_mark(store: Store, conn: sqlite3.Connection, mark: Mark | None) -> Incident | None:
    """The database is behind the seq mark (lost WAL tail, lost file): continue above it, report."""
    if mark is None:
        return None
    state = store.state
    behind = {s: mark.seqs[s] for s in STREAMS if mark.seqs.get(s, 0) > state[s].last_seq}
    if not behind:
        return None
    empty = conn.execute("SELECT 1 FROM messages LIMIT 1").fetchone() is None and not any(
        st.last_seq for st in state.values()
    )
    unaccounted = {s: [state[s].last_seq + 1, seq] for s, seq in behind.items()}
    for stream, seq in behind.items():
        state[stream].last_seq = seq
        state[stream].last_digest = mark.digests.get(stream) or store.genesis
    conn.execute("BEGIN IMMEDIATE")
    save_streams(conn, [(s, state[s].last_seq, state[s].last_digest) for s in behind])
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
        path=str(store.path),
        kind=incident.kind,
        unaccounted=unaccounted,
        possibly_lost=incident.possibly_lost,
    )
    return incident


def _utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_aside(path: Path) -> tuple[Path, list[Path]]:
    """Rename the file and its WAL and shm to `<db>.corrupt-<stamp>*` (never deleted)."""
    aside = path.with_name(f"{path.name}.corrupt-{_utc_stamp()}")
    moved: list[Path] = []
    for suffix in ("", "-wal", "-shm"):
        src = path.with_name(path.name + suffix)
        if src.exists():
            dst = aside.with_name(aside.name + suffix)
            src.rename(dst)
            moved.append(dst)
    _fsync_dir(path.parent)
    return aside, moved


def _read_streams_table(aside: Path) -> dict[str, tuple[int, str]]:
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


def _envelope_fits(stream: Any, seq: Any, envelope: Any) -> bool:
    """A salvaged row is kept only if its envelope names the row's stream and seq."""
    if stream not in STREAMS or not isinstance(seq, int) or not isinstance(envelope, bytes):
        return False
    try:
        _kid, payload = peek_envelope(envelope)
    except (EnvelopeError, ValueError):
        return False
    return payload.get("stream") == stream and payload.get("seq") == seq


@dataclass
class _SeqPlan:
    """Where each stream's seq and hash chain continue after a corrupt file, and what is unaccounted."""

    last_seq: dict[str, int]
    digests: dict[str, str]
    unaccounted: dict[str, list[int]]
    source: SeqSource


def _plan_seqs(
    tables: dict[str, tuple[int, str]], found: Salvage, mark: Mark | None, genesis: str
) -> _SeqPlan:
    """Continue above the highest of the old streams table, the mark and the salvaged rows."""
    marked = mark.seqs if mark is not None else {}
    plan = _SeqPlan({}, {}, {}, "none")
    for stream in STREAMS:
        old_seq, old_digest = tables.get(stream, (0, ""))
        reserved = marked.get(stream, 0)
        kept = max((row[1] for row in found.rows if row[0] == stream), default=0)
        plan.last_seq[stream] = max(old_seq, reserved, kept)
        # The chain continues only where the exact last envelope's digest is known.
        if old_seq >= reserved and old_digest:
            plan.digests[stream] = old_digest
        elif mark is not None and reserved >= old_seq and mark.digests.get(stream):
            plan.digests[stream] = mark.digests[stream]
        else:
            plan.digests[stream] = genesis
        if reserved > max(old_seq, kept):
            # Handed out but neither the damaged streams table nor any row knows them.
            plan.unaccounted[stream] = [max(old_seq, kept) + 1, reserved]
    if tables and any(marked.values()):
        plan.source = "both"
    elif tables:
        plan.source = "corrupt_db"
    elif any(marked.values()):
        plan.source = "side_file"
    return plan


def recover_corrupt(store: Store, error: str, mark: Mark | None) -> tuple[Recovery, Incident]:
    """Move a corrupt file aside (never delete it), start fresh with what reads back, keep seq going up."""
    store.drop_connection()
    aside, moved = _move_aside(store.path)
    tables = _read_streams_table(aside)
    found = salvage_messages(aside, _envelope_fits)
    rows = found.rows
    plan = _plan_seqs(tables, found, mark, store.genesis)
    store.conn = conn = store.connect()
    conn.execute("BEGIN IMMEDIATE")
    save_streams(conn, [(s, plan.last_seq[s], plan.digests[s]) for s in STREAMS])
    conn.executemany(
        "INSERT OR IGNORE INTO messages (stream, seq, created, expires, size, state, reason, envelope)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.execute("COMMIT")
    store.generation += 1
    store.load_state(conn)
    unusable = sum(found.unusable.values())
    recovery = Recovery(tuple(moved), error, plan.source, dict(plan.last_seq), len(rows), unusable)
    log.error(
        "outbox_corrupt_recovered",
        error=error,
        moved_to=[str(p) for p in moved],
        seq_from=plan.source,
        last_seq=plan.last_seq,
        salvaged=len(rows),
        unreadable=found.unreadable,
        unusable=found.unusable,
    )
    incident = Incident(
        "corrupt",
        f"outbox database was corrupt ({error}); moved aside, started fresh with the"
        f" {len(rows)} message(s) that read back whole",
        unaccounted=plan.unaccounted,
        unreadable=found.unreadable,
        unusable=found.unusable,
        salvaged=len(rows),
        moved_to=[str(p) for p in moved],
    )
    return recovery, incident
