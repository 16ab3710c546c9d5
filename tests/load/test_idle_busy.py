"""A session waiting on a device is not idle: its pending requests count as activity."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.load.conftest import gateway, sim_devices
from tests.load.kiosk import get_job, open_session, status, submit_print

IDLE_API = "session_idle_timeout_s = 1\nidle_warning_s = 0.5"


async def test_pending_device_requests_keep_a_session_alive_then_idle_ends_it(state_dir: Path) -> None:
    async with (
        gateway(state_dir, api=IDLE_API, devices=sim_devices(idcard=False, print_time=1.2)) as gw,
        gw.client() as http,
    ):
        session = await open_session(http)
        # Two prints of 1.2 s each: 2.4 s of device work, more than twice the idle timeout,
        # during which the kiosk sends nothing.
        jobs = [await submit_print(http, session, deadline_s=10) for _ in range(2)]
        await asyncio.sleep(1.8)
        assert (await status(http))["sessions"]["open"] == 1, "a session with a queued print is not idle"
        async with asyncio.timeout(10):
            while True:
                states = [(await get_job(http, session, j["job"]))["state"] for j in jobs]
                if all(s in ("done", "failed", "cancelled", "expired") for s in states):
                    break
                await asyncio.sleep(0.1)
        assert states == ["done", "done"], "nothing was cancelled by the idle timeout"
        # With nothing pending any more, the idle rule ends it as before.
        async with asyncio.timeout(5):
            while (await status(http))["sessions"]["open"]:
                await asyncio.sleep(0.1)
        assert (await status(http))["sessions"]["ended_total"] == {"idle": 1}
