"""The outbox on real SQLite files: group commit, seq continuity, classes, full disk, corruption."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

import msgspec
import pytest

from gateway.uplink.envelope import GENESIS_PREV, Sealer, envelope_digest
from gateway.uplink.keys import KeyRing
from gateway.uplink.outbox import (
    ClassConfig,
    Enqueued,
    InvalidMessage,
    Outbox,
    OutboxAlert,
    OutboxConfig,
    OutboxError,
    OutboxFull,
    Pending,
    StorageError,
    UnknownStream,
)
from gateway.uplink.outbox.testing import SmallDiskOutbox
from gateway.uplink.verifier import verify_lines
from tests.uplink.helpers import payload_of


def stored(path: Path, stream: str | None = None) -> list[tuple[str, int, bytes]]:
    """Rows as another process would see them (a separate connection)."""
    conn = sqlite3.connect(path)
    try:
        query = "SELECT stream, seq, envelope FROM messages"
        rows = conn.execute(
            query + (" WHERE stream = ?" if stream else "") + " ORDER BY stream, seq",
            (stream,) if stream else (),
        ).fetchall()
    finally:
        conn.close()
    return [(s, q, bytes(e)) for s, q, e in rows]


async def drain(outbox: Outbox, stream: str) -> list[Pending]:
    """Mark every queued message of a stream delivered, as the publisher would on PUBACKs."""
    items = await outbox.read_page(stream, 0, 100_000)
    await asyncio.gather(*(outbox.mark_delivered(item) for item in items))
    return items


async def test_concurrent_enqueues_share_commits_and_return_after_commit(
    tmp_path: Path, sealer: Sealer
) -> None:
    path = tmp_path / "outbox.db"
    config = OutboxConfig(batch_window_ms=5)
    async with Outbox(path, sealer, config=config) as outbox:
        reader = sqlite3.connect(path)
        seen_at_return: list[bool] = []

        async def produce(i: int) -> Enqueued:
            result = await outbox.enqueue(("tx", "audit", "event")[i % 3], "test", {"i": i})
            # Another connection sees the row the moment enqueue returns: it was committed.
            row = reader.execute("SELECT seq FROM messages WHERE id = ?", (result.id,)).fetchone()
            seen_at_return.append(row == (result.seq,))
            return result

        results = await asyncio.gather(*(produce(i) for i in range(300)))
        reader.close()
        assert all(seen_at_return) and len(seen_at_return) == 300
        assert outbox.commits < 300 / 3, f"{outbox.commits} commits for 300 messages"
        for stream in ("tx", "audit", "event"):
            seqs = sorted(r.seq for r in results if r.stream == stream)
            assert seqs == list(range(1, 101))


async def test_seq_and_chain_continue_across_restarts_and_deliveries(
    tmp_path: Path, sealer: Sealer, ring: KeyRing
) -> None:
    path = tmp_path / "outbox.db"
    envelopes: list[bytes] = []
    for _ in range(3):
        async with Outbox(path, sealer) as outbox:
            for i in range(4):
                await outbox.enqueue("tx", "service_request", {"i": i})
            envelopes += [item.envelope for item in await drain(outbox, "tx")]
    assert [payload_of(e)["seq"] for e in envelopes] == list(range(1, 13))
    assert payload_of(envelopes[0])["prev"] == GENESIS_PREV
    report = verify_lines(envelopes, ring)
    assert report.ok, report.format_report()
    # Delivered rows are gone from the file; the counters remain.
    assert stored(path) == []
    async with Outbox(path, sealer) as outbox:
        assert outbox.stats().classes["tx"].delivered == 12
        assert (await outbox.enqueue("tx", "t", {})).seq == 13


async def test_critical_class_over_quota_is_refused_with_an_alert(tmp_path: Path, sealer: Sealer) -> None:
    alerts: list[OutboxAlert] = []
    config = OutboxConfig(tx=ClassConfig(priority=80, max_bytes=4000))
    async with Outbox(tmp_path / "o.db", sealer, config=config, on_alert=alerts.append) as outbox:
        accepted = 0
        with pytest.raises(OutboxFull) as caught:
            for i in range(100):
                await outbox.enqueue("tx", "service_request", {"i": i, "pad": "x" * 200})
                accepted += 1
        assert 0 < accepted < 100
        assert caught.value.stream == "tx" and caught.value.reason == "quota"
        assert isinstance(caught.value, OutboxError)
        await asyncio.sleep(0)
        assert [a.kind for a in alerts] == ["outbox_full"]
        stats = outbox.stats().classes["tx"]
        assert stats.count == accepted and stats.refused == 1 and stats.dropped == 0
        # Nothing was dropped and other classes still flow.
        assert [seq for _, seq, _ in stored(outbox.path, "tx")] == list(range(1, accepted + 1))
        assert (await outbox.enqueue("audit", "login", {"ok": True})).seq == 1
        # Delivering frees the quota; the seq continues without a hole.
        await drain(outbox, "tx")
        assert (await outbox.enqueue("tx", "service_request", {})).seq == accepted + 1


async def test_telemetry_drops_oldest_when_full_and_counts_it(tmp_path: Path, sealer: Sealer) -> None:
    path = tmp_path / "o.db"
    config = OutboxConfig(telemetry=ClassConfig(priority=10, max_bytes=5000, when_full="drop_oldest"))
    async with Outbox(path, sealer, config=config) as outbox:
        for i in range(60):
            await outbox.enqueue("telemetry", "cpu", {"i": i, "pad": "y" * 100})
        stats = outbox.stats().classes["telemetry"]
        assert stats.bytes <= 5000
        assert stats.dropped == 60 - stats.count > 0
        kept = [seq for _, seq, _ in stored(path, "telemetry")]
        assert kept == list(range(61 - stats.count, 61)), "the oldest are dropped first"
    async with Outbox(path, sealer, config=config) as outbox:
        assert outbox.stats().classes["telemetry"].dropped == stats.dropped, "counters persist"


async def test_expired_messages_are_removed_counted_and_not_sent(tmp_path: Path, sealer: Sealer) -> None:
    config = OutboxConfig(event=ClassConfig(priority=40, ttl_s=0.2, when_full="drop_oldest"))
    async with Outbox(tmp_path / "o.db", sealer, config=config) as outbox:
        for i in range(5):
            await outbox.enqueue("event", "e", {"i": i})
        await outbox.enqueue("tx", "t", {})
        await asyncio.sleep(0.3)
        pending = await outbox.read_page("event", 0, 100)
        assert len(pending) == 5 and all(p.expires is not None and p.expires <= time.time() for p in pending)
        await outbox.sweep()
        stats = outbox.stats().classes
        assert stats["event"].expired == 5 and stats["event"].count == 0
        assert stats["tx"].count == 1 and stats["tx"].expired == 0


async def test_full_disk_keeps_running_drops_telemetry_and_refuses_critical(
    tmp_path: Path, sealer: Sealer
) -> None:
    path = tmp_path / "o.db"
    alerts: list[OutboxAlert] = []
    async with SmallDiskOutbox(path, sealer, max_page_count=48, on_alert=alerts.append) as outbox:
        pad = "z" * 1500
        for i in range(200):  # far more than 48 pages hold
            await outbox.enqueue("telemetry", "cpu", {"i": i, "pad": pad})
        telemetry = outbox.stats().classes["telemetry"]
        assert telemetry.dropped > 0 and telemetry.count > 0
        # A critical message makes room by evicting telemetry, never the reverse.
        first_tx = await outbox.enqueue("tx", "service_request", {"pad": pad})
        assert first_tx.seq == 1
        accepted = 1
        with pytest.raises(OutboxFull) as caught:
            for _ in range(500):
                await outbox.enqueue("tx", "service_request", {"pad": pad})
                accepted += 1
        assert caught.value.reason == "disk"
        await asyncio.sleep(0)
        assert "disk_full" in [a.kind for a in alerts]
        assert outbox.stats().classes["telemetry"].count == 0
        assert [seq for _, seq, _ in stored(path, "tx")] == list(range(1, accepted + 1)), "no tx was dropped"
        # Telemetry has nothing of its own left to drop: refused too, daemon alive.
        with pytest.raises(OutboxFull):
            await outbox.enqueue("telemetry", "cpu", {"pad": pad})
        # Deliveries free pages and writing resumes where the seq left off.
        await drain(outbox, "tx")
        assert (await outbox.enqueue("tx", "service_request", {"pad": pad})).seq == accepted + 1


async def test_corrupt_file_is_moved_aside_and_seq_keeps_going_up(tmp_path: Path, sealer: Sealer) -> None:
    path = tmp_path / "o.db"
    async with Outbox(path, sealer) as outbox:
        for i in range(10):
            await outbox.enqueue("tx", "t", {"i": i})
    garbage = os.urandom(20_000)
    path.write_bytes(garbage)
    alerts: list[OutboxAlert] = []
    async with Outbox(path, sealer, on_alert=alerts.append) as outbox:
        [recovery] = outbox.recoveries
        assert recovery.moved_to[0].name.startswith("o.db.corrupt-")
        assert recovery.moved_to[0].read_bytes() == garbage, "the corrupt file is kept, never deleted"
        assert recovery.seq_from == "side_file"
        assert [a.kind for a in alerts] == ["corrupt_db"]
        new = await outbox.enqueue("tx", "t", {})
        assert new.seq > 10
        assert (await outbox.enqueue("audit", "a", {})).seq >= 1


async def test_malformed_pages_are_detected_and_recovered(tmp_path: Path, sealer: Sealer) -> None:
    path = tmp_path / "o.db"
    async with Outbox(path, sealer) as outbox:
        await asyncio.gather(*(outbox.enqueue("tx", "t", {"i": i, "pad": "q" * 300}) for i in range(300)))
        last = outbox.stats().classes["tx"].last_seq
    size = path.stat().st_size
    with path.open("r+b") as fh:  # keep the header, smash pages in the middle
        fh.seek(size // 2)
        fh.write(os.urandom(8192))
    async with Outbox(path, sealer) as outbox:
        assert len(outbox.recoveries) == 1
        assert all(p.exists() for p in outbox.recoveries[0].moved_to)
        assert (await outbox.enqueue("tx", "t", {})).seq > last
        # The fresh file works normally.
        assert sqlite3.connect(path).execute("PRAGMA quick_check").fetchone() == ("ok",)


async def test_messages_that_read_back_whole_are_queued_again_after_corruption(
    tmp_path: Path, sealer: Sealer
) -> None:
    path = tmp_path / "o.db"
    async with Outbox(path, sealer) as outbox:
        await asyncio.gather(*(outbox.enqueue("tx", "t", {"i": i, "pad": "q" * 300}) for i in range(300)))
        for i in range(20):
            await outbox.enqueue("audit", "a", {"i": i})
        last = outbox.stats().classes["tx"].last_seq
    original = {(stream, seq): raw for stream, seq, raw in stored(path)}
    size = path.stat().st_size
    with path.open("r+b") as fh:  # keep the header, smash pages in the middle
        fh.seek(size // 2)
        fh.write(os.urandom(8192))
    alerts: list[OutboxAlert] = []
    async with Outbox(path, sealer, on_alert=alerts.append) as outbox:
        [recovery] = outbox.recoveries
        kept = stored(path)
        assert 0 < recovery.salvaged == len(kept) < len(original), "some rows were lost, the rest came back"
        for stream, seq, raw in kept:
            assert original[(stream, seq)] == raw, f"{stream} {seq} is not the sealed bytes"
        assert outbox.backlog() == recovery.salvaged
        assert [a.fields["salvaged"] for a in alerts if a.kind == "corrupt_db"] == [recovery.salvaged]
        assert (await outbox.enqueue("tx", "t", {})).seq > last
        # Salvaged messages go out in seq order like any other.
        page = await outbox.read_page("tx", 0, 1000)
        assert [p.seq for p in page] == sorted(p.seq for p in page)


async def test_a_reader_meeting_a_damaged_page_gets_the_file_checked_and_recovered(
    tmp_path: Path, sealer: Sealer
) -> None:
    path = tmp_path / "o.db"
    config = OutboxConfig(sweep_interval_s=3600)  # no sweep comes to the rescue here
    async with Outbox(path, sealer, config=config) as outbox:
        await asyncio.gather(*(outbox.enqueue("tx", "t", {"i": i, "pad": "q" * 300}) for i in range(300)))
        with sqlite3.connect(path) as side:
            side.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        original = {seq: raw for _stream, seq, raw in stored(path, "tx")}  # (the outbox's reader stays cold)
        with path.open("r+b") as fh:
            fh.seek(path.stat().st_size // 2)
            fh.write(os.urandom(8192))
        with sqlite3.connect(path) as side:  # another write, so cached pages go stale
            side.execute("UPDATE counters SET value = value")
        with pytest.raises(StorageError, match="malformed"):
            await outbox.read_page("tx", 0, 1000)
        async with asyncio.timeout(10):
            while not outbox.recoveries:
                await asyncio.sleep(0.02)
        page = await outbox.read_page("tx", 0, 1000)
        assert 0 < len(page) == outbox.recoveries[0].salvaged < 300
        assert all(original[p.seq] == p.envelope for p in page)


async def test_lost_database_does_not_restart_seq(tmp_path: Path, sealer: Sealer) -> None:
    path = tmp_path / "o.db"
    async with Outbox(path, sealer) as outbox:
        for _ in range(5):
            await outbox.enqueue("alert", "a", {})
    path.unlink()
    async with Outbox(path, sealer) as outbox:
        assert (await outbox.enqueue("alert", "a", {})).seq > 5


async def test_bad_input_is_refused_and_the_outbox_goes_on(tmp_path: Path, sealer: Sealer) -> None:
    async with Outbox(tmp_path / "o.db", sealer) as outbox:
        with pytest.raises(UnknownStream):
            await outbox.enqueue("nope", "t", {})
        with pytest.raises(InvalidMessage):
            await outbox.enqueue("tx", "t", {"not json": {1, 2}})
        assert (await outbox.enqueue("tx", "t", {"ok": 1})).seq == 1, "a refused body used no seq"


async def test_stats_report_every_class(tmp_path: Path, sealer: Sealer) -> None:
    async with Outbox(tmp_path / "o.db", sealer) as outbox:
        await outbox.enqueue("tx", "t", {})
        await asyncio.sleep(0.02)
        stats = outbox.stats()
    assert set(stats.classes) == {"tx", "audit", "alert", "telemetry", "event"}
    tx = stats.classes["tx"]
    assert (tx.delivered, tx.expired, tx.dropped, tx.rejected, tx.refused) == (0, 0, 0, 0, 0)
    assert tx.count == 1 and tx.oldest_age_s is not None and tx.oldest_age_s > 0 and tx.bytes > 100
    assert stats.classes["audit"].oldest_age_s is None
    assert stats.delivery_rate_per_s == 0.0 and stats.last_puback is None, "nothing delivered yet"


def test_config_is_strict_and_protects_critical_classes() -> None:
    config = msgspec.convert(
        {"max_bytes": 10_000_000, "telemetry": {"priority": 5, "ttl_s": 60, "when_full": "drop_oldest"}},
        OutboxConfig,
    )
    assert config.telemetry.ttl_s == 60 and config.tx.when_full == "refuse"
    assert config.by_priority()[0] == "alert" and config.by_priority()[-1] == "telemetry"
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"bogus": 1}, OutboxConfig)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"tx": {"when_full": "drop_oldest"}}, OutboxConfig)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"inflight": 101}, OutboxConfig)


async def test_a_closed_outbox_refuses_clearly(tmp_path: Path, sealer: Sealer) -> None:
    outbox = Outbox(tmp_path / "o.db", sealer)
    with pytest.raises(OutboxError):
        await outbox.enqueue("tx", "t", {})
    await outbox.start()
    await outbox.close()
    with pytest.raises(OutboxError):
        await outbox.enqueue("tx", "t", {})
    assert not isinstance(OutboxError(), StorageError)
    assert envelope_digest(b"x")  # the default digest is the envelope module's


async def test_requeue_puts_parked_rows_back_and_survives_a_restart(tmp_path: Path, sealer: Sealer) -> None:
    path = tmp_path / "o.db"
    async with Outbox(path, sealer) as outbox:
        for i in range(3):
            await outbox.enqueue("audit", "a", {"i": i})
        await outbox.enqueue("tx", "t", {})
        for item in await outbox.read_page("audit", 0, 10):
            await outbox.mark_rejected(item, 0x87)
        assert outbox.backlog() == 1
        assert await outbox.requeue_rejected("tx") == {}, "nothing of tx was parked"
        assert await outbox.requeue_rejected("audit", seqs=[2, 9]) == {"audit": 1}
        audit = outbox.stats().classes["audit"]
        assert (audit.count, audit.parked, audit.requeued) == (1, 2, 1)
        assert [p.seq for p in await outbox.read_page("audit", 0, 10)] == [2]
        with pytest.raises(UnknownStream):
            await outbox.requeue_rejected("nope")
        with pytest.raises(ValueError, match="stream"):
            await outbox.requeue_rejected(seqs=[1])
    async with Outbox(path, sealer) as outbox:
        audit = outbox.stats().classes["audit"]
        assert (audit.count, audit.parked, audit.requeued) == (1, 2, 1)
        assert await outbox.requeue_rejected() == {"audit": 2}
        assert [p.seq for p in await outbox.read_page("audit", 0, 10)] == [1, 2, 3]
        assert outbox.backlog() == 4


def crash_copy(path: Path, dest: Path) -> Path:
    """The files as a power cut would leave them while the outbox is open (db, -wal, .seq)."""
    dest.mkdir()
    for suffix in ("", "-wal", ".seq"):
        src = path.with_name(path.name + suffix)
        if src.exists():
            (dest / (path.name + suffix)).write_bytes(src.read_bytes())
    return dest / path.name


@pytest.mark.parametrize("cut", [2, 5])
async def test_lost_wal_tail_never_reuses_a_seq_and_is_reported(
    tmp_path: Path, sealer: Sealer, ring: KeyRing, cut: int
) -> None:
    path = tmp_path / "o.db"
    sent: list[bytes] = []
    alerts: list[OutboxAlert] = []
    async with Outbox(path, sealer) as outbox:
        for i in range(12):  # one commit each
            await outbox.enqueue("tx", "t", {"i": i})
        sent += [item.envelope for item in await outbox.read_page("tx", 0, 100)]
        copy = crash_copy(path, tmp_path / "crash")
    from tests.support.walcut import cut_last_commits

    cut_last_commits(copy, cut)
    async with Outbox(copy, sealer, on_alert=alerts.append) as outbox:
        [incident] = outbox.incidents
        assert incident.kind == "lost_tail"
        assert incident.unaccounted == {"tx": [13 - cut, 12]}
        assert incident.possibly_lost == cut and incident.severity == "red"
        assert [(a.kind, a.severity) for a in alerts] == [("seq_gap", "red")]
        assert alerts[0].fields["unaccounted"] == {"tx": [13 - cut, 12]}
        stats = outbox.stats()
        assert [i.possibly_lost for i in stats.incidents or []] == [cut]
        new = await outbox.enqueue("tx", "t", {"after": True})
        assert new.seq == 13, "seq continues above the mark, never at 13 - cut"
        sent += [item.envelope for item in await outbox.read_page("tx", 12, 100)]
    # What the cloud sees: no seq twice with different bytes, and the chain unbroken (the mark
    # carried the digest of seq 12).
    report = verify_lines(sent, ring)
    assert report.ok, report.format_report()
    # A clean restart reports nothing new; the incident stays until acknowledged.
    async with Outbox(copy, sealer) as outbox:
        assert outbox.incidents == []
        assert len(outbox.stats().incidents or []) == 1
    from gateway.uplink.outbox import incidents

    assert [i.id for i in incidents.acknowledge(incidents.journal_path(copy))] == [incident.id]
    async with Outbox(copy, sealer) as outbox:
        assert outbox.stats().incidents == []


async def test_plain_crash_is_no_loss_and_no_gap(tmp_path: Path, sealer: Sealer) -> None:
    path = tmp_path / "o.db"
    async with Outbox(path, sealer) as outbox:
        for i in range(5):
            await outbox.enqueue("audit", "a", {"i": i})
        copy = crash_copy(path, tmp_path / "crash")
    async with Outbox(copy, sealer) as outbox:
        assert outbox.incidents == [] and outbox.stats().incidents == []
        assert (await outbox.enqueue("audit", "a", {})).seq == 6


async def test_an_older_releases_reservation_file_is_honoured(tmp_path: Path, sealer: Sealer) -> None:
    """The issue's case: the database says 234, the old JSON reservation file 1001."""
    path = tmp_path / "o.db"
    async with Outbox(path, sealer) as outbox:
        for i in range(4):
            await outbox.enqueue("tx", "t", {"i": i})
    (tmp_path / "o.db.seq").write_text('{"tx": 1001, "audit": 0}')
    async with Outbox(path, sealer) as outbox:
        [incident] = outbox.incidents
        assert incident.unaccounted == {"tx": [5, 1001]}
        assert (await outbox.enqueue("tx", "t", {})).seq == 1002
    async with Outbox(path, sealer) as outbox:  # converted: a normal restart reports nothing new
        assert outbox.incidents == []
        assert (await outbox.enqueue("tx", "t", {})).seq == 1003
    assert (tmp_path / "o.db.seq").stat().st_size == 2048


async def test_a_torn_mark_slot_falls_back_to_the_other(tmp_path: Path, sealer: Sealer) -> None:
    path = tmp_path / "o.db"
    async with Outbox(path, sealer) as outbox:
        for i in range(6):
            await outbox.enqueue("audit", "a", {"i": i})
    mark = tmp_path / "o.db.seq"
    raw = bytearray(mark.read_bytes())
    newest = max((0, 1), key=lambda i: int(raw[i * 1024 + 9 :].split(b'"n":')[1].split(b",")[0]))
    raw[newest * 1024 + 20 : newest * 1024 + 40] = os.urandom(20)  # a write torn mid-slot
    mark.write_bytes(bytes(raw))
    async with Outbox(path, sealer) as outbox:
        assert outbox.incidents == [], "the older slot is behind the database: nothing lost"
        assert (await outbox.enqueue("audit", "a", {})).seq == 7
