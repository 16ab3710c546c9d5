"""Test and benchmark variants of the Outbox: a disk that fills up, a disk that is slow to commit.

Not used by the daemon; the production Outbox takes no such knobs.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from gateway.uplink.outbox.quotas import Quotas
from gateway.uplink.outbox.recovery import IncidentLog
from gateway.uplink.outbox.service import Outbox
from gateway.uplink.outbox.store import Store
from gateway.uplink.outbox.writer import Writer

__all__ = ["SlowDiskOutbox", "SmallDiskOutbox"]


class _SmallDiskStore(Store):
    def __init__(self, path: Path, genesis_prev: str, max_page_count: int) -> None:
        super().__init__(path, genesis_prev)
        self._max_page_count = max_page_count

    def _configure(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA max_page_count = {int(self._max_page_count)}")


class SmallDiskOutbox(Outbox):
    """An outbox whose file cannot grow past `max_page_count` pages: SQLITE_FULL, a full disk."""

    def __init__(self, *args: Any, max_page_count: int, **kwargs: Any) -> None:
        self._max_page_count = max_page_count
        super().__init__(*args, **kwargs)

    def _make_store(self, path: Path, genesis_prev: str) -> Store:
        return _SmallDiskStore(path, genesis_prev, self._max_page_count)


class _SlowDiskWriter(Writer):
    def __init__(self, *args: Any, commit_delay_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._commit_delay_s = commit_delay_s

    def _after_commit(self) -> None:
        if self._commit_delay_s:
            time.sleep(self._commit_delay_s)


class SlowDiskOutbox(Outbox):
    """An outbox whose every commit takes `commit_delay_s` longer: slow storage for benchmarks."""

    def __init__(self, *args: Any, commit_delay_s: float, **kwargs: Any) -> None:
        self._commit_delay_s = commit_delay_s
        super().__init__(*args, **kwargs)

    def _make_writer(self, store: Store, quotas: Quotas, incidents: IncidentLog, **kwargs: Any) -> Writer:
        return _SlowDiskWriter(store, quotas, incidents, commit_delay_s=self._commit_delay_s, **kwargs)
