"""The engine's durable state in `auth.sqlite`: failure counters, used TOTP steps and used codes."""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from gateway.auth.settings import LockoutSettings

log = structlog.get_logger(__name__)

T = TypeVar("T")

DB_NAME = "auth.sqlite"
SECRET_NAME = "auth.key"  # noqa: S105 - a file name, not a secret
_SECRET_BYTES = 32

_SCHEMA = """
CREATE TABLE IF NOT EXISTS failures (
    subject TEXT NOT NULL,
    authenticator TEXT NOT NULL,
    consecutive INTEGER NOT NULL,
    last_failure_at REAL NOT NULL,
    locked_until REAL NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (subject, authenticator)
);
CREATE TABLE IF NOT EXISTS totp_steps (
    staff_id TEXT PRIMARY KEY,
    last_step INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS used_codes (
    subject TEXT NOT NULL,
    digest TEXT NOT NULL,
    used_at REAL NOT NULL,
    PRIMARY KEY (subject, digest)
);
CREATE INDEX IF NOT EXISTS used_codes_at ON used_codes (used_at);
"""


@dataclass(frozen=True, slots=True)
class FailureRecord:
    """Consecutive failures of one authenticator for one subject (subject is a storage key)."""

    subject: str
    authenticator: str
    consecutive: int
    last_failure_at: float
    locked_until: float
    disabled: bool


def load_or_create_secret(path: Path) -> bytes:
    """The node-local HMAC secret for subject keys: created once (mode 0600), then reused."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        data = path.read_bytes()
        if len(data) < _SECRET_BYTES:
            raise ValueError(f"{path} is shorter than {_SECRET_BYTES} bytes") from None
        return data
    secret = secrets.token_bytes(_SECRET_BYTES)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secret)
        fh.flush()
        os.fsync(fh.fileno())
    return secret


class AuthStore:
    """SQLite (WAL, synchronous=FULL) on one worker thread, so disk syncs never block the loop."""

    def __init__(self, path: Path, secret: bytes) -> None:
        self.path = path
        self.secret = secret
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="auth-store")
        self._conn: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"AuthStore({self.path})"

    @classmethod
    async def open(cls, state_dir: Path | str) -> AuthStore:
        """Open (creating if needed) `auth.sqlite` and the subject secret in `state_dir`."""
        directory = Path(state_dir)
        secret = await asyncio.to_thread(load_or_create_secret, directory / SECRET_NAME)
        store = cls(directory / DB_NAME, secret)
        try:
            await store._run(store._connect)
        except BaseException:
            store._executor.shutdown(wait=False)
            raise
        return store

    async def close(self) -> None:
        """Close the database; further calls fail."""
        if self._conn is not None:
            await self._run(self._disconnect)
        self._executor.shutdown(wait=False)

    async def __aenter__(self) -> AuthStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    # --- worker-thread side -------------------------------------------------

    def _connect(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        self._conn = conn
        os.chmod(self.path, 0o600)

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("AuthStore is closed")
        return self._conn

    def _get_failures(self, subject: str, authenticator: str) -> FailureRecord | None:
        row = self._db.execute(
            "SELECT consecutive, last_failure_at, locked_until, disabled FROM failures"
            " WHERE subject = ? AND authenticator = ?",
            (subject, authenticator),
        ).fetchone()
        if row is None:
            return None
        return FailureRecord(subject, authenticator, row[0], row[1], row[2], bool(row[3]))

    def _add_failure(
        self, subject: str, authenticator: str, now: float, lockout: LockoutSettings
    ) -> FailureRecord:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            current = self._get_failures(subject, authenticator)
            consecutive = (current.consecutive if current else 0) + 1
            delay = lockout.delay_s(consecutive)
            disabled = (current.disabled if current else False) or lockout.disables(consecutive)
            locked_until = now + delay if delay > 0 else 0.0
            db.execute(
                "INSERT INTO failures VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (subject, authenticator) DO UPDATE SET"
                " consecutive = excluded.consecutive, last_failure_at = excluded.last_failure_at,"
                " locked_until = excluded.locked_until, disabled = excluded.disabled",
                (subject, authenticator, consecutive, now, locked_until, int(disabled)),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return FailureRecord(subject, authenticator, consecutive, now, locked_until, disabled)

    def _reset(self, subject: str, authenticator: str, only_enabled: bool) -> bool:
        sql = "DELETE FROM failures WHERE subject = ? AND authenticator = ?"
        if only_enabled:
            sql += " AND disabled = 0"
        return self._db.execute(sql, (subject, authenticator)).rowcount > 0

    def _list_disabled(self) -> list[FailureRecord]:
        rows = self._db.execute(
            "SELECT subject, authenticator, consecutive, last_failure_at, locked_until, disabled"
            " FROM failures WHERE disabled = 1 ORDER BY last_failure_at"
        ).fetchall()
        return [FailureRecord(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]

    def _claim_totp_step(self, staff_id: str, step: int) -> bool:
        cur = self._db.execute(
            "INSERT INTO totp_steps VALUES (?, ?) ON CONFLICT (staff_id) DO UPDATE"
            " SET last_step = excluded.last_step WHERE excluded.last_step > totp_steps.last_step",
            (staff_id, step),
        )
        return cur.rowcount == 1

    def _code_used(self, subject: str, digest: str, since: float) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM used_codes WHERE subject = ? AND digest = ? AND used_at >= ?",
            (subject, digest, since),
        ).fetchone()
        return row is not None

    def _claim_code(self, subject: str, digest: str, now: float, since: float) -> bool:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM used_codes WHERE used_at < ?", (since,))
            cur = db.execute("INSERT OR IGNORE INTO used_codes VALUES (?, ?, ?)", (subject, digest, now))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return cur.rowcount == 1

    # --- loop side ----------------------------------------------------------

    async def get_failures(self, subject: str, authenticator: str) -> FailureRecord | None:
        """The failure record of (subject, authenticator), if any."""
        return await self._run(self._get_failures, subject, authenticator)

    async def add_failure(
        self, subject: str, authenticator: str, *, now: float, lockout: LockoutSettings
    ) -> FailureRecord:
        """Count one more consecutive failure and set the wait/disable it earns, atomically."""
        return await self._run(self._add_failure, subject, authenticator, now, lockout)

    async def reset_failures(self, subject: str, authenticator: str) -> None:
        """A success: the consecutive count starts again (a disabled factor stays disabled)."""
        await self._run(self._reset, subject, authenticator, True)

    async def reenable(self, subject: str, authenticator: str) -> bool:
        """Ops: clear every failure of (subject, authenticator); True if there was any."""
        return await self._run(self._reset, subject, authenticator, False)

    async def list_disabled(self) -> list[FailureRecord]:
        """Every disabled (subject, authenticator), oldest failure first (for diag)."""
        return await self._run(self._list_disabled)

    async def claim_totp_step(self, staff_id: str, step: int) -> bool:
        """Record `step` as used if it is later than the last used one; False means a replay."""
        return await self._run(self._claim_totp_step, staff_id, step)

    async def code_used(self, subject: str, digest: str, *, since: float) -> bool:
        """Whether this code digest was accepted for the subject at or after `since`."""
        return await self._run(self._code_used, subject, digest, since)

    async def claim_code(self, subject: str, digest: str, *, now: float, since: float) -> bool:
        """Record a code as used (forgetting codes used before `since`); False means a replay."""
        return await self._run(self._claim_code, subject, digest, now, since)
