"""What a kiosk app does over the API, as small awaitable steps with the status checks tests share."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

TERMINAL_JOB_STATES = frozenset({"done", "failed", "expired", "cancelled"})
RECEIPT: dict[str, Any] = {"lines": ["Residence certificate", "Ticket A-042"], "qr": "A-042", "cut": True}


@dataclass(frozen=True)
class Opened:
    """A session the test opened: its id and bearer token."""

    id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def path(self, suffix: str = "") -> str:
        return f"/v1/sessions/{self.id}{suffix}"

    def __repr__(self) -> str:
        return f"Opened(id={self.id!r}, token=<masked>)"


async def open_session(http: aiohttp.ClientSession) -> Opened:
    async with http.post("/v1/sessions") as resp:
        body = await resp.json()
        assert resp.status == 201, body
    return Opened(body["id"], body["token"])


async def end_session(http: aiohttp.ClientSession, session: Opened) -> None:
    async with http.delete(session.path(), headers=session.auth) as resp:
        assert resp.status == 204, await resp.text()


async def submit_print(
    http: aiohttp.ClientSession, session: Opened, *, deadline_s: float | None = None
) -> dict[str, Any]:
    """POST a receipt; the 202 body (the job)."""
    params = {"deadline_s": str(deadline_s)} if deadline_s is not None else None
    async with http.post(session.path("/print"), json=RECEIPT, headers=session.auth, params=params) as resp:
        body: dict[str, Any] = await resp.json(content_type=None)
        assert resp.status == 202, body
    return body


async def get_job(http: aiohttp.ClientSession, session: Opened, job: str) -> dict[str, Any]:
    async with http.get(session.path(f"/jobs/{job}"), headers=session.auth) as resp:
        body: dict[str, Any] = await resp.json(content_type=None)
        assert resp.status == 200, body
    return body


async def wait_job(
    http: aiohttp.ClientSession, session: Opened, job: str, *, timeout: float = 30.0, poll: float = 0.05
) -> dict[str, Any]:
    """Poll a job until it reaches a terminal state."""
    async with asyncio.timeout(timeout):
        while True:
            body = await get_job(http, session, job)
            if body["state"] in TERMINAL_JOB_STATES:
                return body
            await asyncio.sleep(poll)


async def status(http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get("/v1/status") as resp:
        body: dict[str, Any] = await resp.json()
        assert resp.status == 200, body
    return body


async def device_queue(http: aiohttp.ClientSession, device: str) -> dict[str, Any]:
    """The queue snapshot of one device from /v1/status."""
    for entry in (await status(http))["devices"]:
        if entry["name"] == device:
            queue: dict[str, Any] = entry["queue"]
            return queue
    raise AssertionError(f"no device {device!r} in /v1/status")


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """Re-check `check` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(0.02)


@dataclass(frozen=True)
class SseEvent:
    """One server-sent event as the kiosk sees it."""

    type: str
    data: dict[str, Any]


async def read_events(resp: aiohttp.ClientResponse, *, until: str, timeout: float = 15.0) -> list[SseEvent]:
    """Read an event stream until an event of type `until` arrives (included) or the stream ends."""
    events: list[SseEvent] = []
    kind, data = "message", ""
    async with asyncio.timeout(timeout):
        async for raw in resp.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
            elif not line and data:
                events.append(SseEvent(kind, json.loads(data)))
                if kind == until:
                    return events
                kind, data = "message", ""
    return events
