"""Every error is problem+json with the right status, and the daemon keeps serving afterwards."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from tests.support.daemon import inprocess_daemon

PROBLEM = "application/problem+json"


async def test_bad_requests_get_problems_and_service_continues(state_dir: Path) -> None:
    async with inprocess_daemon(state_dir, api_extra="max_body_bytes = 2048") as gw, gw.client() as http:
        cases = [
            (await http.get("/v1/nowhere"), 404, "not-found"),
            (await http.delete("/v1/health"), 405, "method-not-allowed"),
            (
                await http.post(
                    "/v1/sessions", data=b"{not json", headers={"Content-Type": "application/json"}
                ),
                400,
                "malformed-body",
            ),
            (
                await http.post(
                    "/v1/sessions", data=b"x" * 10_000, headers={"Content-Type": "application/json"}
                ),
                413,
                "body-too-large",
            ),
            (await http.post("/v1/sessions", json={"kind": "wizard"}), 422, "invalid-body"),
            (await http.post("/v1/sessions", json={"kind": "citizen", "extra": 1}), 422, "invalid-body"),
            (
                await http.post("/v1/sessions", data=b"kind=x", headers={"Content-Type": "text/plain"}),
                415,
                "unsupported-media-type",
            ),
            (await http.get("/v1/sessions/abc"), 401, "unauthenticated"),
            (
                await http.get("/v1/sessions/abc", headers={"Authorization": "Bearer nope"}),
                404,
                "session-not-found",
            ),
        ]
        for resp, status, kind in cases:
            assert resp.status == status, (resp.url, await resp.text())
            assert resp.content_type == PROBLEM
            body = await resp.json()
            assert body["status"] == status
            assert body["type"].endswith("/" + kind)
            assert body["title"]
        allow = cases[1][0].headers.get("Allow", "")
        assert "GET" in allow
        assert cases[7][0].headers["WWW-Authenticate"].startswith("Bearer")
        assert (await http.get("/v1/health")).status == 200


async def test_peer_uid_allow_list(state_dir: Path) -> None:
    me = os.getuid()
    async with inprocess_daemon(state_dir, api_extra=f"allowed_uids = [{me + 4242}]") as gw:
        # A uid outside the list is disconnected at accept, before its request is read (issue 14).
        reader, writer = await asyncio.open_unix_connection(str(gw.socket_path))
        async with asyncio.timeout(5):
            assert await reader.read() == b""
        writer.close()
        connections = gw.daemon.server.stats().connections
        assert connections is not None and connections.refused["peer"] == 1
    shutil.rmtree(state_dir / "log", ignore_errors=True)
    async with inprocess_daemon(state_dir, api_extra=f"allowed_uids = [{me}]") as gw, gw.client() as http:
        assert (await http.get("/v1/health")).status == 200
        # The list changes live: a connection admitted before the change is refused per request.
        config = state_dir / "gateway.toml"
        config.write_text(
            config.read_text().replace(f"allowed_uids = [{me}]", f"allowed_uids = [{me + 4242}]")
        )
        gw.daemon.reload()
        resp = await http.get("/v1/health")
        assert resp.status == 403
        assert (await resp.json())["type"].endswith("/peer-not-allowed")


async def test_sessions_full_answers_503_with_retry_after(state_dir: Path) -> None:
    async with inprocess_daemon(state_dir, api_extra="max_sessions = 2") as gw, gw.client() as http:
        for _ in range(2):
            assert (await http.post("/v1/sessions")).status == 201
        resp = await http.post("/v1/sessions")
        assert resp.status == 503
        assert int(resp.headers["Retry-After"]) >= 1
        assert (await resp.json())["type"].endswith("/sessions-full")


async def test_printer_without_print_confirmation_still_prints(state_dir: Path) -> None:
    devices = """
[devices.printer]
driver = "escpos"
port = "sim://printer"
baudrate = 115200
sim_print_time_s = 0.05
confirm_print = false
"""
    async with inprocess_daemon(state_dir, devices) as gw, gw.client() as http:
        body = await (await http.post("/v1/sessions")).json()
        base, auth = f"/v1/sessions/{body['id']}", {"Authorization": f"Bearer {body['token']}"}
        resp = await http.post(f"{base}/print", headers=auth, json={"lines": ["no confirmation"]})
        assert resp.status == 202
        job = (await resp.json())["job"]
        for _ in range(100):
            state = (await (await http.get(f"{base}/jobs/{job}", headers=auth)).json())["state"]
            if state not in ("queued", "printing"):
                break
            await asyncio.sleep(0.05)
        assert state == "done"
        simulator = gw.daemon.parts.devices.named("printer").simulator
        assert any(b"no confirmation" in job for job in simulator.jobs), "the bytes reached the printer"
