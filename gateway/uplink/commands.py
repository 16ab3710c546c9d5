"""Downlink commands: accept only cloud-signed, unexpired, first-seen commands for this node."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import structlog

from gateway.errors import GatewayError
from gateway.ratelimit import echo
from gateway.uplink.envelope import (
    BadSignature,
    EnvelopeError,
    MalformedEnvelope,
    UnknownKey,
    WrongAlgorithm,
    open_envelope,
)
from gateway.uplink.keys import KeyRing, parse_rfc3339

log = structlog.get_logger(__name__)

DOWN_STREAM: Final = "down"
MAX_ID_LENGTH: Final = 128
# A downlink message larger than this is refused before it is parsed. The largest real command
# (outbox.requeue with 10,000 seqs) is about 110 KB once signed and encoded.
MAX_DOWNLINK_BYTES: Final = 256 * 1024
DEFAULT_MAX_LIFETIME: Final = timedelta(hours=24)
# Ids are kept this long past their exp so a modest backwards clock step cannot reopen a replay.
PURGE_GRACE: Final = timedelta(minutes=10)

KINDS: Final = frozenset({"forged", "expired", "replayed", "wrong_node", "unknown_kid", "malformed"})


class CommandRejected(GatewayError):
    """A downlink command was refused; `kind` is stable for metrics and the command_result answer."""

    def __init__(self, reason: str, command_id: str | None, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown rejection kind {kind!r}")
        super().__init__(f"command rejected ({kind}): {reason}")
        self.reason = reason
        self.command_id = command_id
        self.kind = kind


@dataclass(frozen=True)
class Command:
    """A verified command, safe to execute once."""

    id: str
    type: str
    body: Mapping[str, Any] = field(repr=False)
    exp: datetime
    kid: str
    raw: bytes = field(repr=False)


class ReplayStore:
    """Accepted command ids with their expiry, in SQLite, so a replay is refused even after restart."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared under a lock, so verify() may run in a worker thread too.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise GatewayError(f"replay store {self.path}: cannot enable WAL (got {mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS accepted_commands ("
                " id TEXT PRIMARY KEY,"
                " exp REAL NOT NULL,"
                " accepted_at REAL NOT NULL"
                ") WITHOUT ROWID"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS accepted_commands_exp ON accepted_commands(exp)")
        except BaseException:
            self._db.close()
            raise

    def check_and_record(self, command_id: str, exp: datetime, *, now: datetime) -> bool:
        """Record `command_id` if unseen and return True; False if it was accepted before. Atomic."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "DELETE FROM accepted_commands WHERE exp < ?",
                    ((now - PURGE_GRACE).timestamp(),),
                )
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO accepted_commands (id, exp, accepted_at) VALUES (?, ?, ?)",
                    (command_id, exp.timestamp(), now.timestamp()),
                )
                fresh = cur.rowcount == 1
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return fresh

    def __contains__(self, command_id: object) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM accepted_commands WHERE id = ?", (command_id,)).fetchone()
        return row is not None

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM accepted_commands").fetchone()
        return int(count)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> ReplayStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CommandVerifier:
    """Turns raw downlink bytes into a `Command`, or raises `CommandRejected` with a stable kind."""

    def __init__(
        self,
        node_id: str,
        cloud_keys: KeyRing,
        replay: ReplayStore,
        *,
        clock: Callable[[], datetime] = _utcnow,
        max_lifetime: timedelta = DEFAULT_MAX_LIFETIME,
    ) -> None:
        self.node_id = node_id
        self.cloud_keys = cloud_keys
        self.replay = replay
        self._clock = clock
        self.max_lifetime = max_lifetime

    def verify(self, raw: bytes) -> Command:
        """Accept a command once: valid cloud signature, stream down, this node, unexpired, unseen.

        A rejection is only raised: the caller reports it (aggregated, see gateway.remote).
        """
        command = self._verify(raw)
        log.info("command_accepted", command_id=command.id, type=command.type, kid=command.kid)
        return command

    def _verify(self, raw: bytes) -> Command:
        now = self._clock()
        try:
            env = open_envelope(raw, self.cloud_keys, at=now)
        except UnknownKey as err:
            raise CommandRejected(echo(err, 160), None, "unknown_kid") from err
        except (BadSignature, WrongAlgorithm) as err:
            raise CommandRejected(echo(err, 160), None, "forged") from err
        except MalformedEnvelope as err:
            raise CommandRejected(echo(err, 160), None, "malformed") from err
        except EnvelopeError as err:  # pragma: no cover - every subclass is handled above
            raise CommandRejected(echo(err, 160), None, "malformed") from err

        command_id = env.payload.get("id")
        if not isinstance(command_id, str) or not command_id or len(command_id) > MAX_ID_LENGTH:
            raise CommandRejected(f"id must be a string of 1..{MAX_ID_LENGTH} chars", None, "malformed")
        if env.stream != DOWN_STREAM:
            raise CommandRejected(f"stream is {echo(env.stream)!r}, not 'down'", command_id, "malformed")
        exp_text = env.payload.get("exp")
        try:
            if not isinstance(exp_text, str):
                raise ValueError("exp is missing")
            exp = parse_rfc3339(exp_text)
        except ValueError as err:
            raise CommandRejected(f"exp: {echo(err)}", command_id, "malformed") from err
        if env.node != self.node_id:
            raise CommandRejected(
                f"addressed to node {echo(env.node)!r}, this is {self.node_id!r}", command_id, "wrong_node"
            )
        if exp <= now:
            raise CommandRejected(f"expired at {echo(exp_text)}", command_id, "expired")
        if exp - now > self.max_lifetime:
            raise CommandRejected(
                f"exp {echo(exp_text)} is more than {self.max_lifetime} ahead", command_id, "malformed"
            )
        if not self.replay.check_and_record(command_id, exp, now=now):
            raise CommandRejected("id was already accepted", command_id, "replayed")
        return Command(id=command_id, type=env.type, body=env.body, exp=exp, kid=env.kid, raw=env.raw)
