"""What goes in and out of the outbox: committed and pending messages, alerts, recoveries."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol


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
