"""Salvage of a corrupt outbox file: every row that reads back one by one is queued again and
delivered; what does not read is counted per stream in the incident (red: acknowledged messages
were lost), the alert, /v1/status and diag."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

import pytest

from gateway.ops.diag import Verdict, incident_verdict
from gateway.uplink.envelope import Sealer
from gateway.uplink.mqtt import LinkSettings, MqttLink
from gateway.uplink.outbox import Outbox, OutboxAlert
from gateway.uplink.publisher import Publisher
from tests.support.mosquitto import BrokerFactory
from tests.uplink.conftest import NODE
from tests.uplink.helpers import Collector, payload_of

STREAMS = ("tx", "audit", "event")


def damage_leaf_pages(path: Path, count: int, seed: int, name: str = "messages") -> list[int]:
    """Overwrite `count` leaf pages of a b-tree (the messages table) with random bytes (file closed)."""
    conn = sqlite3.connect(path)
    try:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        leaves = [
            row[0]
            for row in conn.execute(
                "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno", (name,)
            )
        ]
    finally:
        conn.close()
    rng = random.Random(seed)
    middle = leaves[len(leaves) // 4 : -len(leaves) // 4]
    chosen = sorted(rng.sample(middle, count))
    with path.open("r+b") as fh:
        for page in chosen:
            fh.seek((page - 1) * page_size)
            fh.write(rng.randbytes(page_size))
    return chosen


def readable_one_by_one(path: Path) -> dict[tuple[str, int], bytes]:
    """The oracle: every row that a plain `WHERE id = ?` still reads, whatever else fails."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    found: dict[tuple[str, int], bytes] = {}
    try:
        for row_id in range(1, 5000):
            try:
                row = conn.execute(
                    "SELECT stream, seq, envelope FROM messages WHERE id = ?", (row_id,)
                ).fetchone()
            except sqlite3.Error:
                continue
            if row is not None and isinstance(row[2], bytes):
                found[(row[0], row[1])] = row[2]
    finally:
        conn.close()
    return found


@pytest.mark.parametrize("pages", [1, 2, 4])
async def test_salvage_delivers_every_readable_row_and_counts_the_rest(
    tmp_path: Path, sealer: Sealer, make_broker: BrokerFactory, pages: int
) -> None:
    path = tmp_path / "o.db"
    async with Outbox(path, sealer) as outbox:
        await asyncio.gather(
            *(outbox.enqueue(STREAMS[i % 3], "t", {"i": i, "pad": "q" * 300}) for i in range(600))
        )
    original = {}
    with sqlite3.connect(path) as conn:
        for stream, seq, raw in conn.execute("SELECT stream, seq, envelope FROM messages"):
            original[(stream, seq)] = bytes(raw)
    damage_leaf_pages(path, pages, seed=pages)
    oracle = {key: raw for key, raw in readable_one_by_one(path).items() if original.get(key) == raw}
    assert len(original) - len(oracle) >= pages, "each damaged page cost rows"

    broker = make_broker()
    alerts: list[OutboxAlert] = []
    async with (
        Collector("127.0.0.1", broker.port) as cloud,
        Outbox(path, sealer, on_alert=alerts.append) as outbox,
    ):
        [incident] = outbox.incidents
        assert incident.kind == "corrupt"
        assert incident.salvaged == len(oracle), "every row that reads back one by one is kept"
        lost_by_stream: dict[str, int] = {}
        for stream, _seq in original.keys() - oracle.keys():
            lost_by_stream[stream] = lost_by_stream.get(stream, 0) + 1
        assert incident.unreadable == lost_by_stream, "what did not read is counted per stream"
        assert incident.severity == "red" and incident.possibly_lost == len(original) - len(oracle)
        [alert] = [a for a in alerts if a.kind == "corrupt_db"]
        assert alert.severity == "red" and alert.fields["unreadable"] == lost_by_stream
        [reported] = outbox.stats().incidents or []
        assert reported.unreadable == lost_by_stream and reported.salvaged == len(oracle)
        verdict, detail, _fix = incident_verdict([reported], Verdict.PASS, "", None)
        assert verdict is Verdict.FAIL and "unreadable" in detail

        publisher = Publisher(outbox, NODE)
        async with MqttLink(LinkSettings(broker.url), NODE, workers=[publisher.run]):
            await cloud.wait_for(lambda: len(cloud.envelopes()) >= len(oracle), timeout=30)
    delivered = {}
    for raw in cloud.envelopes():
        payload = payload_of(raw)
        delivered[(payload["stream"], payload["seq"])] = raw
    assert delivered == oracle, "exactly the readable rows, as the sealed bytes"


async def test_a_damaged_index_page_loses_nothing_and_the_recovery_is_blue(
    tmp_path: Path, sealer: Sealer
) -> None:
    path = tmp_path / "o.db"
    async with Outbox(path, sealer) as outbox:
        await asyncio.gather(
            *(outbox.enqueue(STREAMS[i % 3], "t", {"i": i, "pad": "q" * 300}) for i in range(600))
        )
    damage_leaf_pages(path, 1, seed=9, name="sqlite_autoindex_messages_1")
    alerts: list[OutboxAlert] = []
    async with Outbox(path, sealer, on_alert=alerts.append) as outbox:
        [incident] = outbox.incidents
        assert incident.kind == "corrupt" and incident.salvaged == 600
        assert incident.possibly_lost == 0 and incident.severity == "blue"
        assert [a.severity for a in alerts if a.kind == "corrupt_db"] == ["blue"]
        assert outbox.backlog() == 600
