"""Suite-wide fixtures: fail any test that leaves asyncio tasks running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """A test must end every task it started; a leftover task is a bug in the code or the test."""
    before = set(asyncio.all_tasks())
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() if t not in before and t is not current and not t.done()]
    if leaked:
        for task in leaked:
            task.cancel()
        await asyncio.gather(*leaked, return_exceptions=True)
        pytest.fail(f"test left {len(leaked)} task(s) running: {[t.get_coro() for t in leaked]}")
