"""Two hundred kiosk sessions at once through the real API: every flow completes, the 201st waits."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import aiohttp

from tests.load.conftest import gateway, sim_devices
from tests.load.kiosk import RECEIPT, Opened, wait_job

SESSIONS = 200
# Connections a kiosk fleet has open before the rush: the listen backlog only sees the rest.
WARM_CONNECTIONS = 100


async def _flow(http: aiohttp.ClientSession, session: Opened, statuses: Counter[int]) -> str:
    """Inspect the session, print a receipt, wait for it, end the session; the job's final state."""
    async with http.get(session.path(), headers=session.auth) as resp:
        statuses[resp.status] += 1
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["id"] == session.id
    async with http.post(session.path("/print"), json=RECEIPT, headers=session.auth) as resp:
        statuses[resp.status] += 1
        assert resp.status == 202, await resp.text()
        job = (await resp.json())["job"]
    final = await wait_job(http, session, job, timeout=90, poll=0.2)
    async with http.delete(session.path(), headers=session.auth) as resp:
        statuses[resp.status] += 1
        assert resp.status == 204, await resp.text()
    return str(final["state"])


async def _create(http: aiohttp.ClientSession, statuses: Counter[int]) -> Opened:
    async with http.post("/v1/sessions") as resp:
        statuses[resp.status] += 1
        body = await resp.json()
        assert resp.status == 201, body
    return Opened(body["id"], body["token"])


async def _warm(http: aiohttp.ClientSession, connections: int) -> None:
    """Open `connections` keep-alive connections, as kiosks that have been up for a while have."""

    async def health() -> None:
        async with http.get("/v1/health") as resp:
            assert resp.status == 200

    await asyncio.gather(*(health() for _ in range(connections)))


async def test_200_sessions_complete_and_the_201st_gets_503(state_dir: Path) -> None:
    devices = sim_devices(print_time=0.002, printer_depth=256, idcard=False)
    async with gateway(state_dir, devices=devices) as gw, gw.client(limit=SESSIONS + 10) as http:
        statuses: Counter[int] = Counter()
        await _warm(http, WARM_CONNECTIONS)
        sessions = await asyncio.gather(*(_create(http, statuses) for _ in range(SESSIONS)))
        assert len({s.id for s in sessions}) == SESSIONS

        async with http.post("/v1/sessions") as resp:
            problem = await resp.json(content_type=None)
            assert resp.status == 503, problem
            assert resp.content_type == "application/problem+json"
            assert int(resp.headers["Retry-After"]) >= 1
            assert problem["type"].endswith("/sessions-full")
            assert problem["limit"] == SESSIONS

        finals = await asyncio.gather(*(_flow(http, s, statuses) for s in sessions))
        assert Counter(finals) == {"done": SESSIONS}
        assert not [code for code in statuses if code >= 500], statuses

        # Every slot came back: a new session opens at once.
        async with http.post("/v1/sessions") as resp:
            assert resp.status == 201
        async with http.get("/v1/status") as resp:
            body = await resp.json()
        assert body["sessions"]["open"] == 1
        assert body["sessions"]["ended_total"]["ended_by_client"] == SESSIONS
        printer = next(d for d in body["devices"] if d["name"] == "printer")
        assert printer["queue"]["served"] == SESSIONS
        assert printer["queue"]["queued"] == 0


async def test_200_kiosks_connecting_at_the_same_moment_are_all_served(state_dir: Path) -> None:
    async with (
        gateway(state_dir, devices=sim_devices(idcard=False)) as gw,
        gw.client(limit=SESSIONS + 10) as http,
    ):
        statuses: Counter[int] = Counter()
        sessions = await asyncio.gather(
            *(_create(http, statuses) for _ in range(SESSIONS)), return_exceptions=True
        )
        failures = [repr(s) for s in sessions if isinstance(s, BaseException)]
        assert not failures, f"{len(failures)} of {SESSIONS} connections failed, e.g. {failures[0]}"
        assert statuses == {201: SESSIONS}
