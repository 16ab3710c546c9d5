"""Malformed and hostile requests get the right 4xx, and the gateway keeps serving everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from drivers.printer.job import MAX_LINE_CHARS, MAX_LINES, MAX_QR_BYTES
from tests.load.conftest import Gateway, gateway, sim_devices
from tests.load.kiosk import Opened, open_session, wait_job

MAX_BODY = 65_536
API = f"max_body_bytes = {MAX_BODY}"


@dataclass(frozen=True)
class Case:
    """One hostile request and the answer it must get."""

    name: str
    method: str
    path: str
    status: int
    problem: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    params: dict[str, str] = field(default_factory=dict)
    # Other answers that are as right (status, problem type).
    also: tuple[tuple[int, str], ...] = ()

    def accepts(self, status: int, kind: str | None) -> bool:
        if status == self.status and (self.problem is None or kind == self.problem):
            return True
        return (status, kind) in self.also


def _cases(victim: Opened, other: Opened) -> list[Case]:
    json_type = {"Content-Type": "application/json"}
    auth = {**victim.auth, **json_type}
    good = b'{"lines": ["ok"]}'

    def get(name: str, path: str, status: int, problem: str | None, headers: dict[str, str]) -> Case:
        return Case(name, "GET", path, status, problem, headers)

    def bad_body(name: str, status: int, problem: str, body: bytes) -> Case:
        return Case(name, "POST", victim.path("/print"), status, problem, auth, body)

    def invalid(name: str, payload: dict[str, Any]) -> Case:
        """A well-formed body the printer could not print: refused before anything is queued."""
        return bad_body(name, 422, "invalid-body", json.dumps(payload).encode())

    def bad_deadline(value: str) -> Case:
        params = {"deadline_s": value}
        return Case(
            f"deadline {value}", "POST", victim.path("/print"), 400, "bad-parameter", auth, good, params
        )

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    return [
        get("no token", victim.path(), 401, "unauthenticated", {}),
        get("basic auth", victim.path(), 401, "unauthenticated", {"Authorization": "Basic YWJjOmRlZg=="}),
        get("wrong token", victim.path(), 404, "session-not-found", bearer("nope")),
        get("long token", victim.path(), 404, "session-not-found", bearer("x" * 4000)),
        get("another session's token", victim.path(), 404, "session-not-found", other.auth),
        get("unknown session", "/v1/sessions/0000000000000000", 404, "session-not-found", victim.auth),
        get("path traversal", "/v1/../../etc/passwd", 404, "not-found", {}),
        get("job path traversal", victim.path("/jobs/../../x"), 404, None, victim.auth),
        bad_body("empty body", 400, "malformed-body", b""),
        bad_body("invalid JSON", 400, "malformed-body", b'{"lines": ["a"'),
        bad_body("not UTF-8", 400, "malformed-body", b"\xff\xfe\xfd"),
        # Valid JSON, but deeper than any parser recursion: "too deep" or "not an object" both do.
        Case(
            "nested 5000 deep",
            "POST",
            victim.path("/print"),
            400,
            "malformed-body",
            auth,
            b"[" * 5000 + b"]" * 5000,
            also=((422, "invalid-body"),),
        ),
        bad_body("lines not a list", 422, "invalid-body", b'{"lines": "abc"}'),
        bad_body("lines of numbers", 422, "invalid-body", b'{"lines": [1, 2]}'),
        bad_body("cut not a bool", 422, "invalid-body", b'{"lines": ["a"], "cut": "yes"}'),
        bad_body("a list body", 422, "invalid-body", b"[]"),
        bad_body("unknown field", 422, "invalid-body", b'{"lines": ["a"], "colour": "red"}'),
        bad_body("empty receipt", 422, "invalid-body", b'{"lines": []}'),
        invalid("too many lines", {"lines": ["a"] * (MAX_LINES + 1)}),
        invalid("a line too long", {"lines": ["a" * (MAX_LINE_CHARS + 1)]}),
        invalid("qr too long", {"lines": [], "qr": "q" * (MAX_QR_BYTES + 1)}),
        invalid("control characters", {"lines": ["total 5.00\x1b@\x1dV\x00"]}),
        # A lone surrogate: GB18030 cannot encode it, and I-JSON (RFC 7493) calls it malformed.
        Case(
            "lone surrogate",
            "POST",
            victim.path("/print"),
            422,
            "invalid-body",
            auth,
            b'{"lines": ["\\ud800"]}',
            also=((400, "malformed-body"),),
        ),
        bad_body("oversize body", 413, "body-too-large", b'{"lines": ["' + b"a" * MAX_BODY + b'"]}'),
        Case(
            "text/plain",
            "POST",
            victim.path("/print"),
            415,
            "unsupported-media-type",
            {**victim.auth, "Content-Type": "text/plain"},
            good,
        ),
        bad_deadline("soon"),
        bad_deadline("0"),
        bad_deadline("nan"),
        bad_deadline("1e9"),
        Case(
            "unknown session kind",
            "POST",
            "/v1/sessions",
            422,
            "invalid-body",
            json_type,
            b'{"kind": "root"}',
        ),
        Case("wrong method", "PUT", "/v1/sessions", 405, "method-not-allowed"),
    ]


@contextlib.asynccontextmanager
async def bystander(gw: Gateway) -> AsyncIterator[list[int]]:
    """Another kiosk using its session the whole time; yields the statuses it got."""
    statuses: list[int] = []
    async with gw.client() as http:
        session = await open_session(http)

        async def use() -> None:
            while True:
                async with http.get(session.path(), headers=session.auth) as resp:
                    statuses.append(resp.status)
                await asyncio.sleep(0.01)

        task = asyncio.create_task(use())
        try:
            yield statuses
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with http.get(session.path(), headers=session.auth) as resp:
            statuses.append(resp.status)


async def _send(http: aiohttp.ClientSession, case: Case) -> tuple[int, dict[str, Any] | None, str]:
    async with http.request(
        case.method, case.path, headers=case.headers, data=case.body, params=case.params
    ) as resp:
        problem = await resp.json(content_type=None) if resp.content_type.endswith("json") else None
        return resp.status, problem, resp.content_type


async def test_hostile_requests_get_the_right_4xx_and_others_are_still_served(state_dir: Path) -> None:
    devices = sim_devices(idcard=False)
    async with gateway(state_dir, api=API, devices=devices) as gw, gw.client() as http, bystander(gw) as seen:
        victim, other = await open_session(http), await open_session(http)
        wrong = []
        for case in _cases(victim, other):
            status, problem, ctype = await _send(http, case)
            kind = str(problem.get("type", "")).rsplit("/", 1)[-1] if problem else None
            if not case.accepts(status, kind):
                wrong.append(f"{case.name}: got {status} {kind}, want {case.status} {case.problem}")
            elif ctype != "application/problem+json":
                wrong.append(f"{case.name}: {ctype} instead of application/problem+json")
        assert not wrong, "\n".join(wrong)
        assert seen and set(seen) == {200}, seen
        # Nothing hostile was queued: the victim holds no jobs and can still print.
        async with http.get(victim.path(), headers=victim.auth) as resp:
            assert (await resp.json())["jobs"] == 0
        async with http.post(victim.path("/print"), json={"lines": ["ok"]}, headers=victim.auth) as resp:
            assert resp.status == 202
            assert (await wait_job(http, victim, (await resp.json())["job"]))["state"] == "done"


async def _raw_exchange(socket_path: Path, request: bytes) -> bytes:
    """Send raw bytes on a fresh connection; the status line the server answers with."""
    reader, writer = await asyncio.open_unix_connection(str(socket_path))
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_oversized_and_garbled_requests_are_refused_by_the_http_layer(state_dir: Path) -> None:
    async with gateway(state_dir, devices=sim_devices(idcard=False)) as gw, bystander(gw) as seen:
        huge_header = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100_000 + b"\r\n\r\n"
        many_headers = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n" + b"X-H: v\r\n" * 200 + b"\r\n"
        for request in (huge_header, many_headers, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"):
            line = await _raw_exchange(gw.socket_path, request)
            assert re.match(rb"HTTP/1\.[01] 4\d\d ", line), line
        line = await _raw_exchange(gw.socket_path, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert line.startswith(b"HTTP/1.1 200"), line
    assert seen and set(seen) == {200}, seen


async def test_receipt_text_the_printer_cannot_take_is_refused_before_it_is_queued(state_dir: Path) -> None:
    async with gateway(state_dir, devices=sim_devices(idcard=False)) as gw, gw.client() as http:
        victim = await open_session(http)
        # ESC @ (reset) and GS V (cut) smuggled into the text; a lone surrogate GB18030 cannot encode.
        for line, refusals in (("total 5.00\x1b@\x1dV\x00", {422}), ("\ud800", {400, 422})):
            async with http.post(victim.path("/print"), json={"lines": [line]}, headers=victim.auth) as resp:
                assert resp.status in refusals, await resp.text()
        async with http.get(victim.path(), headers=victim.auth) as resp:
            assert (await resp.json())["jobs"] == 0
        async with http.get("/v1/status") as resp:
            printer = next(d for d in (await resp.json())["devices"] if d["name"] == "printer")
        assert printer["queue"]["served"] == 0
        assert printer["queue"]["failed"] == 0
