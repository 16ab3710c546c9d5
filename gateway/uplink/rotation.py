"""A key rotation made by the CLI waits in a small file until the daemon announces it on the uplink."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from gateway.tasks import cancel_and_wait
from gateway.uplink.keys import (
    KeyStoreError,
    Rotation,
    format_rfc3339,
    load_previous_key,
    remove_previous_key,
)

log = structlog.get_logger(__name__)

PENDING_NAME = "rotation-pending.json"


def pending_path(state_dir: Path) -> Path:
    return state_dir / "keys" / PENDING_NAME


def write_pending_announcement(state_dir: Path, rotation: Rotation) -> Path:
    """Record the announcement body; the daemon seals it with the old key and queues it."""
    path = pending_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    doc = {"old_kid": rotation.old.kid, "body": rotation.announcement_body()}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(doc, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def read_pending_announcement(state_dir: Path) -> dict[str, Any] | None:
    path = pending_path(state_dir)
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return doc


def clear_pending_announcement(state_dir: Path) -> None:
    pending_path(state_dir).unlink(missing_ok=True)


class RetiredKeyPruner:
    """Deletes the previous node key (`<key>.prev`) once its overlap has ended.

    A retired private key kept past its validity is only a liability: envelopes it sealed are
    already stored as bytes, and nothing may sign with it again. It stays while its rotation is
    still to be announced, since that announcement is sealed by the old key.
    """

    def __init__(self, key_path: Path, node_id: str, state_dir: Path, *, max_wait_s: float = 3600.0) -> None:
        self.key_path = key_path
        self.node_id = node_id
        self.state_dir = state_dir
        self.max_wait_s = max_wait_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def prune(self, now: datetime | None = None) -> float:
        """Delete the retired key if its time has come; returns the seconds until it is worth
        looking again."""
        if read_pending_announcement(self.state_dir) is not None:
            return min(60.0, self.max_wait_s)
        try:
            retired = load_previous_key(self.key_path, self.node_id)
        except KeyStoreError as err:
            log.warning("retired_key_unreadable", error=str(err))
            return self.max_wait_s
        if retired is None:
            return self.max_wait_s
        remaining = (retired.not_after - (now or datetime.now(UTC))).total_seconds()
        if remaining > 0:
            return min(remaining, self.max_wait_s)
        remove_previous_key(self.key_path)
        log.info("retired_key_deleted", kid=retired.key.kid, not_after=format_rfc3339(retired.not_after))
        return self.max_wait_s

    def poke(self) -> None:
        """A rotation happened: look again now rather than at the next scheduled check."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retired-key-pruner")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            wait = await asyncio.to_thread(self.prune)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.05)):
                    await self._wake.wait()
