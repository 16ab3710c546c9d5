"""A key rotation made by the CLI waits in a small file until the daemon announces it on the uplink."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gateway.uplink.keys import Rotation

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
