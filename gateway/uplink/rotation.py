"""A key rotation made by the CLI waits in a small file until the daemon announces it on the uplink."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gateway.tasks import cancel_and_wait
from gateway.uplink.envelope import Sealer
from gateway.uplink.keys import (
    KeyStoreError,
    NodeKey,
    Rotation,
    format_rfc3339,
    load_previous_key,
    remove_previous_key,
    rotate_key,
)

if TYPE_CHECKING:  # the CLI imports this module for `keys rotate`; it needs no outbox
    from gateway.cloud import CloudSink
    from gateway.uplink.sink import SwitchableSealer

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


class RotationAnnouncer:
    """Holds the node's signing key and announces each rotation on the uplink, sealed by the old key."""

    def __init__(
        self,
        node_key: NodeKey,
        *,
        node_id: str,
        key_path: Path,
        state_dir: Path,
        overlap_s: float,
        sealer: SwitchableSealer,
        cloud: CloudSink,
        pruner: RetiredKeyPruner,
        load_key: Callable[[], NodeKey],
    ) -> None:
        self.node_key = node_key
        self._node_id = node_id
        self._key_path = key_path
        self._state_dir = state_dir
        self._overlap_s = overlap_s
        self._sealer = sealer
        self._cloud = cloud
        self._pruner = pruner
        self._load_key = load_key

    def has_pending(self) -> bool:
        """Whether a `keys rotate` from the CLI still waits to be announced."""
        return read_pending_announcement(self._state_dir) is not None

    async def announce_pending(self, *, reload_key: bool = False) -> None:
        """A `keys rotate` from the CLI is announced here (at start or SIGHUP), sealed by the old key."""
        pending = read_pending_announcement(self._state_dir)
        if pending is None:
            return
        if reload_key:
            self.node_key = self._load_key()
        retired = load_previous_key(self._key_path, self._node_id)
        if retired is None or retired.key.kid != pending.get("old_kid"):
            log.error("rotation_announcement_dropped", reason="previous key missing or different")
            clear_pending_announcement(self._state_dir)
            return
        await self.announce(retired.key, self.node_key, pending["body"])
        clear_pending_announcement(self._state_dir)
        self._pruner.poke()

    async def announce(self, old: NodeKey, new: NodeKey, body: dict[str, Any]) -> None:
        """Queue `key_rotated` sealed by `old`; then seal with `new` (unless another key took over)."""
        current = self._sealer.current
        self._sealer.current = Sealer(old, self._node_id)
        try:
            await self._cloud.send("audit", "key_rotated", body)
        finally:
            self._sealer.current = Sealer(new, self._node_id) if current.kid == old.kid else current
        log.info("key_rotation_announced", old_kid=old.kid, new_kid=new.kid)

    async def rotate(self) -> dict[str, Any]:
        """`keys.rotate`: a new signing key now, announced sealed by the old one."""
        rotation = await asyncio.to_thread(
            rotate_key, self._key_path, self._node_id, overlap_s=self._overlap_s
        )
        await self.announce(rotation.old, rotation.new, rotation.announcement_body())
        self.node_key = rotation.new
        self._pruner.poke()
        return {"new_kid": rotation.new.kid, "old_kid": rotation.old.kid}
