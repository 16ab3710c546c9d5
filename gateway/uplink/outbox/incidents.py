"""Storage incidents of the outbox (lost WAL tail, corrupt file, lost file), kept until ops acknowledge.

The journal is `<db>.incidents`, a JSON list written atomically. The daemon appends an incident
when it opens a database that is behind its seq mark or recovers a corrupt one; `/v1/status` and
`edge-gateway diag` report every incident not yet acknowledged, and `edge-gateway outbox-ack`
marks them acknowledged (they stay in the file, with the time of acknowledgement).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog

from gateway.status import IncidentReport

log = structlog.get_logger(__name__)

Kind = Literal["lost_tail", "database_missing", "corrupt"]


@dataclass
class Incident:
    """What one storage fault cost: seqs handed out but not in the database, rows that did not read."""

    kind: Kind
    detail: str
    # Per stream, [first, last] seqs that were handed out (so possibly acknowledged and sent)
    # but are not in the database any more: the cloud may or may not have them.
    unaccounted: dict[str, list[int]] = field(default_factory=dict)
    # Per stream, stored rows (acknowledged messages) that could not be read back, and rows that
    # read back but whose envelope did not match the row ("?" when even the stream is unknown).
    unreadable: dict[str, int] = field(default_factory=dict)
    unusable: dict[str, int] = field(default_factory=dict)
    salvaged: int = 0
    moved_to: list[str] = field(default_factory=list)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    at: float = field(default_factory=time.time)
    acknowledged_at: float | None = None

    @property
    def possibly_lost(self) -> int:
        """Messages that may never reach the cloud: unaccounted seqs plus unreadable rows."""
        spans = sum(last - first + 1 for first, last in self.unaccounted.values())
        return spans + sum(self.unreadable.values())

    @property
    def severity(self) -> Literal["red", "blue"]:
        """Red when acknowledged messages may be lost, blue when everything was kept."""
        return "red" if self.possibly_lost else "blue"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "possibly_lost": self.possibly_lost, "severity": self.severity}

    def report(self) -> IncidentReport:
        """As /v1/status and diag show it."""
        return IncidentReport(
            id=self.id,
            kind=self.kind,
            detail=self.detail,
            at=self.at,
            unaccounted={stream: (first, last) for stream, (first, last) in self.unaccounted.items()},
            unreadable=dict(self.unreadable),
            unusable=dict(self.unusable),
            salvaged=self.salvaged,
            moved_to=list(self.moved_to),
            acknowledged_at=self.acknowledged_at,
            possibly_lost=self.possibly_lost,
            severity=self.severity,
        )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Incident:
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        return cls(**known)


def journal_path(db: Path) -> Path:
    return db.with_name(db.name + ".incidents")


def load(path: Path) -> list[Incident]:
    """Every incident in the journal (an unreadable journal is logged and read as empty)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return [Incident.from_dict(item) for item in raw]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError) as err:
        log.error("outbox_incidents_unreadable", path=str(path), error=str(err))
        return []


def save(path: Path, incidents: list[Incident]) -> None:
    """Write the journal atomically (temp file, fsync, rename); a failed write leaves the old one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump([i.as_dict() for i in incidents], fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def acknowledge(path: Path, *, now: float | None = None) -> list[Incident]:
    """Mark every open incident acknowledged; returns those that were open."""
    incidents = load(path)
    opened = [i for i in incidents if i.acknowledged_at is None]
    if opened:
        stamp = time.time() if now is None else now
        for incident in opened:
            incident.acknowledged_at = stamp
        save(path, incidents)
    return opened


def open_incidents(path: Path) -> list[Incident]:
    return [i for i in load(path) if i.acknowledged_at is None]
