"""The outbox on a really full file system (a small tmpfs filled to ENOSPC)."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from gateway.uplink.envelope import Sealer
from gateway.uplink.outbox import Outbox, OutboxFull
from tests.support.fulldisk import Ballast, small_tmpfs
from tests.uplink.helpers import until


async def test_seq_mark_that_cannot_be_written_is_a_507_and_leaves_no_temp_file(sealer: Sealer) -> None:
    with small_tmpfs("2m") as disk:
        path = disk / "o.db"
        async with Outbox(path, sealer):
            pass
        # The mark is gone (a new install's first write, a lost file) and the disk is full. Another
        # connection keeps the -wal and -shm files, so SQLite itself still opens.
        (disk / "o.db.seq").unlink()
        keeper = sqlite3.connect(path)
        keeper.execute("SELECT count(*) FROM messages").fetchone()
        ballast = Ballast(disk)
        ballast.fill()
        async with Outbox(path, sealer) as outbox:
            with pytest.raises(OutboxFull) as caught:
                await outbox.enqueue("tx", "t", {"i": 1})
            assert caught.value.reason == "disk", "the documented answer for a full store (HTTP 507)"
            assert outbox.backlog() == 0 and outbox.stats().classes["tx"].refused == 1
            assert not (disk / "o.db.seq.tmp").exists(), "no 0-byte temp file left behind"
            ballast.free()
            first = await outbox.enqueue("tx", "t", {"i": 2})
            assert first.seq == 1, "a refused message used no seq"
            assert (disk / "o.db.seq").stat().st_size == 2048
        keeper.close()


async def test_deletes_after_puback_on_a_full_disk_are_retried_when_space_returns(sealer: Sealer) -> None:
    with small_tmpfs("4m") as disk:
        ballast = Ballast(disk)
        async with Outbox(disk / "o.db", sealer) as outbox:
            for i in range(40):
                await outbox.enqueue("tx", "t", {"i": i, "pad": "p" * 500})
            items = await outbox.read_page("tx", 0, 100)
            ballast.fill()
            # The broker acknowledged them all; the deletes cannot be written now.
            await asyncio.gather(*(outbox.mark_delivered(item) for item in items))
            stats = outbox.stats()
            assert stats.awaiting_delete == 40, "kept for a retry, not forgotten"
            assert stats.classes["tx"].delivered == 0
            await asyncio.sleep(1.5)
            assert outbox.stats().awaiting_delete == 40, "still waiting while the disk is full"
            ballast.free()
            await until(lambda: outbox.stats().awaiting_delete == 0, timeout=10)
            tx = outbox.stats().classes["tx"]
            assert (tx.count, tx.delivered) == (0, 40), "no delivered message counted as backlog"
            assert outbox.backlog() == 0


async def test_a_backlog_still_reads_out_when_the_mark_cannot_be_written_at_start(sealer: Sealer) -> None:
    with small_tmpfs("2m") as disk:
        path = disk / "o.db"
        async with Outbox(path, sealer) as outbox:
            for i in range(3):
                await outbox.enqueue("audit", "a", {"i": i})
        (disk / "o.db.seq").unlink()
        keeper = sqlite3.connect(path)
        keeper.execute("SELECT count(*) FROM messages").fetchone()
        ballast = Ballast(disk)
        ballast.fill()
        try:
            async with Outbox(path, sealer) as outbox:
                assert [p.seq for p in await outbox.read_page("audit", 0, 10)] == [1, 2, 3]
                with pytest.raises(OutboxFull):
                    await outbox.enqueue("audit", "a", {})
                ballast.free()
                assert (await outbox.enqueue("audit", "a", {})).seq == 4
        finally:
            keeper.close()
