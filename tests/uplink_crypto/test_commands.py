"""Downlink command verification and the persistent replay window (real SQLite files)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.uplink.commands import CommandRejected, CommandVerifier, ReplayStore
from gateway.uplink.envelope import GENESIS_PREV, Sealer
from gateway.uplink.keys import KeyRing, NodeKey, format_rfc3339

from .conftest import NODE, T0


class Clock:
    """A settable clock for the verifier."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ReplayStore]:
    with ReplayStore(tmp_path / "replay.sqlite") as replay:
        yield replay


@pytest.fixture
def verifier(cloud_ring: KeyRing, store: ReplayStore, clock: Clock) -> CommandVerifier:
    return CommandVerifier(NODE, cloud_ring, store, clock=clock)


def command(
    key: NodeKey,
    *,
    id: str = "cmd-0001",
    node: str = NODE,
    type: str = "ping",
    body: dict[str, Any] | None = None,
    exp: datetime | None = T0 + timedelta(minutes=5),
    stream: str = "down",
    extra: dict[str, Any] | None = None,
) -> bytes:
    fields: dict[str, Any] = {"id": id}
    if exp is not None:
        fields["exp"] = format_rfc3339(exp)
    fields.update(extra or {})
    return Sealer(key, node).seal(
        stream=stream,
        seq=0,
        prev=GENESIS_PREV,
        type=type,
        body=body or {},
        ts=format_rfc3339(T0),
        extra=fields,
    )


def rejected(verifier: CommandVerifier, raw: bytes) -> CommandRejected:
    with pytest.raises(CommandRejected) as info:
        verifier.verify(raw)
    return info.value


def test_valid_command_is_accepted_and_recorded(
    verifier: CommandVerifier, cloud_key: NodeKey, store: ReplayStore
) -> None:
    raw = command(cloud_key, type="config.set", body={"key": "log.level", "value": "debug"})
    cmd = verifier.verify(raw)
    assert (cmd.id, cmd.type, cmd.kid) == ("cmd-0001", "config.set", cloud_key.kid)
    assert cmd.body == {"key": "log.level", "value": "debug"}
    assert cmd.exp == T0 + timedelta(minutes=5)
    assert cmd.raw == raw
    assert "cmd-0001" in store
    assert len(store) == 1
    assert "debug" not in repr(cmd)


def test_forged_command(verifier: CommandVerifier, cloud_key: NodeKey, store: ReplayStore) -> None:
    impostor = NodeKey(NodeKey.generate("x").private_key, cloud_key.kid)
    err = rejected(verifier, command(impostor))
    assert err.kind == "forged"
    assert err.command_id is None
    assert len(store) == 0


def test_unknown_kid(verifier: CommandVerifier, store: ReplayStore) -> None:
    err = rejected(verifier, command(NodeKey.generate("cloud-other")))
    assert err.kind == "unknown_kid"
    assert len(store) == 0


def test_node_key_cannot_send_commands(verifier: CommandVerifier, node_key: NodeKey) -> None:
    assert rejected(verifier, command(node_key)).kind == "unknown_kid"


def test_expired_command(verifier: CommandVerifier, cloud_key: NodeKey, store: ReplayStore) -> None:
    err = rejected(verifier, command(cloud_key, exp=T0 - timedelta(seconds=1)))
    assert err.kind == "expired"
    assert err.command_id == "cmd-0001"
    assert "cmd-0001" not in store


def test_expiry_exactly_now_is_expired(verifier: CommandVerifier, cloud_key: NodeKey) -> None:
    assert rejected(verifier, command(cloud_key, exp=T0)).kind == "expired"


def test_absurdly_far_expiry_is_refused(
    verifier: CommandVerifier, cloud_key: NodeKey, store: ReplayStore
) -> None:
    err = rejected(verifier, command(cloud_key, exp=T0 + timedelta(days=30)))
    assert err.kind == "malformed"
    assert "ahead" in err.reason
    assert len(store) == 0


def test_wrong_node(verifier: CommandVerifier, cloud_key: NodeKey, store: ReplayStore) -> None:
    err = rejected(verifier, command(cloud_key, node="edge-002"))
    assert err.kind == "wrong_node"
    assert len(store) == 0


def test_replayed_command(verifier: CommandVerifier, cloud_key: NodeKey, store: ReplayStore) -> None:
    raw = command(cloud_key)
    verifier.verify(raw)
    err = rejected(verifier, raw)
    assert err.kind == "replayed"
    assert err.command_id == "cmd-0001"
    # Same id, freshly signed with a different body: still the same command id, still refused.
    assert rejected(verifier, command(cloud_key, body={"x": 1})).kind == "replayed"
    assert len(store) == 1


def test_replay_is_refused_after_reopening_the_store(
    tmp_path: Path, cloud_ring: KeyRing, cloud_key: NodeKey, clock: Clock
) -> None:
    path = tmp_path / "state" / "replay.sqlite"
    raw = command(cloud_key)
    with ReplayStore(path) as first:
        CommandVerifier(NODE, cloud_ring, first, clock=clock).verify(raw)
    with ReplayStore(path) as second:
        again = CommandVerifier(NODE, cloud_ring, second, clock=clock)
        assert rejected(again, raw).kind == "replayed"
        assert again.verify(command(cloud_key, id="cmd-0002")).id == "cmd-0002"


@pytest.mark.parametrize(
    "raw_factory",
    [
        lambda key: b"\x00\xffgarbage",
        lambda key: b'{"payload":"e30","protected":"e30","signature":"AA"}',
        lambda key: command(key, exp=None),
        lambda key: command(key, extra={"exp": "tomorrow"}),
        lambda key: command(key, id=""),
        lambda key: command(key, id="x" * 129),
        lambda key: command(key, stream="event"),
    ],
    ids=["garbage", "no-kid", "no-exp", "bad-exp", "empty-id", "long-id", "not-down"],
)
def test_malformed_commands(
    verifier: CommandVerifier, cloud_key: NodeKey, store: ReplayStore, raw_factory: Any
) -> None:
    assert rejected(verifier, raw_factory(cloud_key)).kind == "malformed"
    assert len(store) == 0


def test_expired_ids_are_purged_but_live_ones_kept(
    verifier: CommandVerifier, cloud_key: NodeKey, store: ReplayStore, clock: Clock
) -> None:
    verifier.verify(command(cloud_key, id="short", exp=T0 + timedelta(minutes=1)))
    verifier.verify(command(cloud_key, id="long", exp=T0 + timedelta(hours=2)))
    clock.now = T0 + timedelta(hours=1)
    verifier.verify(command(cloud_key, id="later", exp=T0 + timedelta(hours=1, minutes=5)))
    assert "short" not in store
    assert "long" in store
    assert rejected(verifier, command(cloud_key, id="long", exp=T0 + timedelta(hours=2))).kind == ("replayed")


def test_store_uses_wal_and_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "replay.sqlite"
    with ReplayStore(path) as store:
        assert store.check_and_record("a", T0 + timedelta(minutes=1), now=T0)
        sync = store._db.execute("PRAGMA synchronous").fetchone()[0]
        assert sync == 2  # FULL
    probe = sqlite3.connect(path)
    try:
        assert probe.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        probe.close()


def test_check_and_record_is_atomic_across_connections(tmp_path: Path) -> None:
    path = tmp_path / "replay.sqlite"
    stores = [ReplayStore(path) for _ in range(4)]
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(len(stores))

    def race(store: ReplayStore) -> None:
        start.wait()
        for n in range(25):
            fresh = store.check_and_record(f"id-{n}", T0 + timedelta(minutes=5), now=T0)
            with lock:
                results.append(fresh)

    threads = [threading.Thread(target=race, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert results.count(True) == 25
        assert results.count(False) == 75
        assert len(stores[0]) == 25
    finally:
        for s in stores:
            s.close()
