"""Device queues through the API: fairness, backpressure, deadlines, withdrawal, devices that are down."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.load.conftest import gateway, sim_devices
from tests.load.kiosk import (
    RECEIPT,
    Opened,
    device_queue,
    end_session,
    get_job,
    open_session,
    submit_print,
    wait_job,
    wait_until,
)

HEAVY_JOBS = 20
LIGHT_SESSIONS = 20
SLOW_PRINT_S = 1.5


async def _printing(http: aiohttp.ClientSession, session: Opened, job: str) -> None:
    """Wait until `job` is on the printer (not just queued)."""

    async def on_printer() -> bool:
        return bool((await get_job(http, session, job))["state"] == "printing")

    await wait_until(on_printer, what=f"job {job} reaching the printer")


async def _read_idcard(
    http: aiohttp.ClientSession, session: Opened, *, deadline_s: float | None = None
) -> tuple[int, dict[str, Any]]:
    params = {"deadline_s": str(deadline_s)} if deadline_s is not None else None
    async with http.post(session.path("/factors/idcard"), headers=session.auth, params=params) as resp:
        return resp.status, await resp.json(content_type=None)


async def _reader_busy(http: aiohttp.ClientSession) -> bool:
    return bool((await device_queue(http, "idcard"))["busy"])


# Fairness --------------------------------------------------------------------------------------


async def test_a_session_with_20_jobs_does_not_hold_back_20_single_job_sessions(state_dir: Path) -> None:
    devices = sim_devices(print_time=0.05, idcard=False)
    async with gateway(state_dir, devices=devices) as gw, gw.client() as http:
        heavy = await open_session(http)
        light = list(await asyncio.gather(*(open_session(http) for _ in range(LIGHT_SESSIONS))))
        heavy_jobs = [(await submit_print(http, heavy))["job"] for _ in range(HEAVY_JOBS)]
        light_jobs = await asyncio.gather(*(submit_print(http, s) for s in light))

        heavy_final = [await wait_job(http, heavy, job) for job in heavy_jobs]
        light_final = [await wait_job(http, s, job["job"]) for s, job in zip(light, light_jobs, strict=True)]
        assert {j["state"] for j in heavy_final + light_final} == {"done"}

        heavy_done = sorted(j["finished_at"] for j in heavy_final)
        every_done = sorted(j["finished_at"] for j in heavy_final + light_final)
        for job in light_final:
            # The printer serves one job at a time and never idles here, so the job printing when
            # this one arrived is the first to finish after that moment; it cannot be pre-empted.
            printing = next(t for t in every_done if t > job["created_at"])
            ahead = [t for t in heavy_done if job["created_at"] < t < job["finished_at"] and t != printing]
            assert len(ahead) <= 1, (
                f"single job {job['job']} waited behind {len(ahead)} queued jobs of the heavy session"
            )
        # The heavy session still got its turns: all its jobs done, the last one after the others.
        assert heavy_done[-1] >= max(j["finished_at"] for j in light_final)


# Backpressure ----------------------------------------------------------------------------------


async def test_a_full_printer_queue_answers_429_with_retry_after(state_dir: Path) -> None:
    devices = sim_devices(print_time=SLOW_PRINT_S, printer_depth=2, idcard=False)
    async with gateway(state_dir, devices=devices) as gw, gw.client() as http:
        session = await open_session(http)
        first = await submit_print(http, session)
        await _printing(http, session, first["job"])
        for _ in range(2):
            await submit_print(http, session)

        async def two_waiting() -> bool:
            return int((await device_queue(http, "printer"))["queued"]) == 2

        await wait_until(two_waiting, what="two jobs waiting")
        async with http.post(session.path("/print"), json=RECEIPT, headers=session.auth) as resp:
            problem = await resp.json(content_type=None)
            assert resp.status == 429, problem
            assert resp.content_type == "application/problem+json"
            assert int(resp.headers["Retry-After"]) >= 1
            assert problem["type"].endswith("/queue-full")
            assert problem["device"] == "printer"
        assert (await device_queue(http, "printer"))["rejected_full"] == 1
        # The refused job was never created: the session holds the three accepted ones only.
        async with http.get(session.path(), headers=session.auth) as resp:
            assert (await resp.json())["jobs"] == 3
        await end_session(http, session)


# Deadlines -------------------------------------------------------------------------------------


async def test_a_print_behind_a_slow_job_expires_at_its_deadline(state_dir: Path) -> None:
    devices = sim_devices(print_time=SLOW_PRINT_S, idcard=False)
    async with gateway(state_dir, devices=devices) as gw, gw.client() as http:
        first_session, second_session = await open_session(http), await open_session(http)
        slow = await submit_print(http, first_session)
        await _printing(http, first_session, slow["job"])
        hurried = await submit_print(http, second_session, deadline_s=0.2)
        final = await wait_job(http, second_session, hurried["job"])
        assert final["state"] == "expired", final
        assert final["error"]
        assert (await wait_job(http, first_session, slow["job"]))["state"] == "done"
        assert (await device_queue(http, "printer"))["expired"] == 1


async def test_an_idcard_read_behind_a_busy_reader_answers_504(state_dir: Path) -> None:
    async with gateway(state_dir, devices=sim_devices()) as gw, gw.client() as http:
        holder, latecomer = await open_session(http), await open_session(http)
        reading = asyncio.create_task(_read_idcard(http, holder))
        try:
            await wait_until(lambda: _reader_busy(http), what="the reader turning busy")
            code, problem = await _read_idcard(http, latecomer, deadline_s=0.05)
            assert code == 504, problem
            assert problem["type"].endswith("/deadline-expired")
            assert problem["device"] == "idcard"
        finally:
            code, _ = await reading
        assert code == 200


async def test_a_deadline_expires_while_the_request_still_waits(state_dir: Path) -> None:
    devices = sim_devices(print_time=SLOW_PRINT_S, idcard=False)
    async with gateway(state_dir, devices=devices) as gw, gw.client() as http:
        first_session, second_session = await open_session(http), await open_session(http)
        slow = await submit_print(http, first_session)
        await _printing(http, first_session, slow["job"])
        hurried = await submit_print(http, second_session, deadline_s=0.2)
        final = await wait_job(http, second_session, hurried["job"])
        still = await get_job(http, first_session, slow["job"])
        assert final["state"] == "expired"
        assert still["state"] == "printing", "the expiry waited for the slow job to finish"
        await wait_job(http, first_session, slow["job"])


# Withdrawal -----------------------------------------------------------------------------------


async def test_a_client_that_disconnects_while_waiting_is_withdrawn_from_the_queue(state_dir: Path) -> None:
    async with gateway(state_dir, devices=sim_devices()) as gw, gw.client() as http:
        holder, leaver = await open_session(http), await open_session(http)
        reading = asyncio.create_task(_read_idcard(http, holder))
        try:
            await wait_until(lambda: _reader_busy(http), what="the reader turning busy")
            waiting = asyncio.create_task(_read_idcard(http, leaver))

            async def one_waiting() -> bool:
                return int((await device_queue(http, "idcard"))["queued"]) == 1

            await wait_until(one_waiting, what="the second read queuing")
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        finally:
            code, _ = await reading
        assert code == 200

        async def idle() -> bool:
            queue = await device_queue(http, "idcard")
            return queue["queued"] == 0 and not queue["busy"]

        await wait_until(idle, what="the reader going idle")
        queue = await device_queue(http, "idcard")
        assert queue["cancelled"] == 1, queue
        assert queue["served"] == 1, "the abandoned read still used the reader"


async def test_ending_a_session_cancels_its_queued_print(state_dir: Path) -> None:
    devices = sim_devices(print_time=SLOW_PRINT_S, idcard=False)
    async with gateway(state_dir, devices=devices) as gw, gw.client() as http:
        first_session, leaving = await open_session(http), await open_session(http)
        slow = await submit_print(http, first_session)
        await _printing(http, first_session, slow["job"])
        queued = await submit_print(http, leaving)
        registry = gw.daemon.parts.sessions
        live = registry.get(leaving.id)
        assert live is not None
        await end_session(http, leaving)

        job = live.jobs[queued["job"]]
        assert job.state == "cancelled", job
        assert job.finished_at is not None
        queue = await device_queue(http, "printer")
        assert queue["queued"] == 0 and queue["cancelled"] == 1, queue
        async with http.get(leaving.path(f"/jobs/{queued['job']}"), headers=leaving.auth) as resp:
            assert resp.status == 404
        assert (await wait_job(http, first_session, slow["job"]))["state"] == "done"
        assert (await device_queue(http, "printer"))["served"] == 1


# A device that is down -------------------------------------------------------------------------


async def test_printing_on_a_missing_printer_answers_503_at_once(state_dir: Path) -> None:
    devices = sim_devices(printer_port="/dev/ttyNOPE", idcard=False)
    async with gateway(state_dir, devices=devices) as gw, gw.client() as http:
        session = await open_session(http)
        started = time.monotonic()
        async with http.post(session.path("/print"), json=RECEIPT, headers=session.auth) as resp:
            problem = await resp.json(content_type=None)
            elapsed = time.monotonic() - started
            assert resp.status == 503, problem
            assert resp.content_type == "application/problem+json"
        assert problem["state"] == "no_device"
        assert problem["device"] == "printer"
        # "At once": well inside the 30 s queue deadline a stuck wait would take.
        assert elapsed < 1.0
        async with http.get(session.path(), headers=session.auth) as resp:
            assert (await resp.json())["jobs"] == 0
        async with http.get("/v1/devices") as resp:
            states = {d["name"]: d["state"] for d in (await resp.json())["devices"]}
        assert states == {"printer": "no_device"}
