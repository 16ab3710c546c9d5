"""The retired node key is deleted once its overlap has ended, never before its rotation is announced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.uplink.keys import init_key, load_key, previous_key_path, rotate_key
from gateway.uplink.rotation import RetiredKeyPruner, write_pending_announcement

NODE = "edge-test"
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def rotated(tmp_path: Path, overlap_s: float) -> tuple[Path, RetiredKeyPruner]:
    keys = tmp_path / "keys"
    path = keys / "node.ed25519"
    init_key(path, NODE)
    rotate_key(path, NODE, overlap_s=overlap_s, now=T0)
    return path, RetiredKeyPruner(path, NODE, tmp_path, max_wait_s=3600)


def test_kept_during_the_overlap_and_deleted_after(tmp_path: Path) -> None:
    path, pruner = rotated(tmp_path, overlap_s=600)
    prev = previous_key_path(path)
    assert pruner.prune(now=T0 + timedelta(seconds=540)) == 60
    assert prev.exists()
    assert pruner.prune(now=T0 + timedelta(seconds=601)) == 3600
    assert not prev.exists()
    assert load_key(path, NODE).kid, "the current key is untouched"
    assert pruner.prune(now=T0 + timedelta(days=1)) == 3600, "nothing left to prune"


def test_kept_while_its_rotation_is_still_to_be_announced(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    path = keys / "node.ed25519"
    init_key(path, NODE)
    rotation = rotate_key(path, NODE, overlap_s=0, now=T0)
    write_pending_announcement(tmp_path, rotation)
    pruner = RetiredKeyPruner(path, NODE, tmp_path)
    assert pruner.prune(now=T0 + timedelta(days=3)) == 60
    assert previous_key_path(path).exists(), "the announcement is sealed by the old key"


def test_an_unreadable_previous_key_is_left_for_ops(tmp_path: Path) -> None:
    path, pruner = rotated(tmp_path, overlap_s=0)
    prev = previous_key_path(path)
    prev.chmod(0o644)  # loose permissions: refused by the key store, not deleted blindly
    assert pruner.prune(now=T0 + timedelta(days=1)) == 3600
    assert prev.exists()


def test_long_overlaps_are_checked_at_least_hourly(tmp_path: Path) -> None:
    _path, pruner = rotated(tmp_path, overlap_s=7 * 86_400)
    assert pruner.prune(now=T0) == 3600
