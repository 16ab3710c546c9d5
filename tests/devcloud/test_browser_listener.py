"""`api.http_listen`: the browser listener's guards, attacked as a hostile page or process would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError
from tests.support.daemon import InProcessDaemon, inprocess_daemon

KIOSK_APP = "http://kiosk.local:3000"
API_EXTRA = f'http_listen = "127.0.0.1:0"\nallowed_origins = ["{KIOSK_APP}"]'


@pytest.fixture
async def gw(state_dir: Any) -> AsyncIterator[InProcessDaemon]:
    async with inprocess_daemon(state_dir, api_extra=API_EXTRA) as daemon:
        yield daemon


def base(gw: InProcessDaemon) -> str:
    assert gw.daemon.running.browser is not None
    return gw.daemon.running.browser.url


def listener_tickets(gw: InProcessDaemon) -> int:
    assert gw.daemon.running.browser is not None
    return len(gw.daemon.running.browser.tickets)


async def session(http: aiohttp.ClientSession, url: str) -> tuple[str, str]:
    resp = await http.post(f"{url}/v1/sessions", json={"kind": "citizen"}, headers={"Origin": KIOSK_APP})
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    return body["id"], body["token"]


async def test_own_and_allowed_origins_are_served_with_cors_for_that_origin_only(gw: InProcessDaemon) -> None:
    url = base(gw)
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{url}/v1/health")
        assert resp.status == 200
        assert "Access-Control-Allow-Origin" not in resp.headers
        for origin in (KIOSK_APP, url, url.replace("127.0.0.1", "localhost")):
            resp = await http.get(f"{url}/v1/devices", headers={"Origin": origin})
            assert resp.status == 200, origin
            assert resp.headers["Access-Control-Allow-Origin"] == origin
            assert "Origin" in resp.headers.getall("Vary")
            assert "Access-Control-Allow-Credentials" not in resp.headers


async def test_a_foreign_origin_is_refused_and_changes_nothing(gw: InProcessDaemon) -> None:
    url = base(gw)
    async with aiohttp.ClientSession() as http:
        for origin in ("http://evil.example", "null", f"{KIOSK_APP}.evil.example", "http://kiosk.local:3001"):
            resp = await http.post(f"{url}/v1/sessions", json={"kind": "citizen"}, headers={"Origin": origin})
            assert resp.status == 403, origin
            assert resp.content_type == "application/problem+json"
            assert (await resp.json())["type"].endswith("origin-not-allowed")
            assert "Access-Control-Allow-Origin" not in resp.headers
        # An <img>/<script> from another site sends no Origin, but the browser says cross-site.
        resp = await http.get(f"{url}/v1/devices", headers={"Sec-Fetch-Site": "cross-site"})
        assert resp.status == 403
    assert gw.daemon.parts.sessions.created_total == 0


async def test_a_forged_host_is_refused(gw: InProcessDaemon) -> None:
    """DNS rebinding: the attacker's name resolves to 127.0.0.1, the Host header still says its name."""
    url = base(gw)
    port = url.rsplit(":", 1)[1]
    async with aiohttp.ClientSession() as http:
        for host in (
            f"evil.example:{port}",
            "127.0.0.1",
            f"127.0.0.1:{int(port) + 1}",
            f"localhost.evil:{port}",
        ):
            resp = await http.get(f"{url}/v1/health", headers={"Host": host})
            assert resp.status == 403, host
            assert (await resp.json())["type"].endswith("host-not-allowed")
        resp = await http.get(f"{url}/v1/health", headers={"Host": f"localhost:{port}"})
        assert resp.status == 200


async def test_preflight_is_answered_only_for_allowed_origins_methods_and_headers(
    gw: InProcessDaemon,
) -> None:
    url = base(gw)
    ok = {"Origin": KIOSK_APP, "Access-Control-Request-Method": "POST",
          "Access-Control-Request-Headers": "authorization, content-type"}  # fmt: skip
    async with aiohttp.ClientSession() as http:
        resp = await http.options(f"{url}/v1/sessions", headers=ok)
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == KIOSK_APP
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        refused = [
            {**ok, "Origin": "http://evil.example"},
            {**ok, "Access-Control-Request-Method": "PUT"},
            {**ok, "Access-Control-Request-Headers": "authorization, x-evil"},
            {k: v for k, v in ok.items() if k != "Origin"},
        ]
        for headers in refused:
            resp = await http.options(f"{url}/v1/sessions", headers=headers)
            assert resp.status in (403, 404), headers
            assert "Access-Control-Allow-Origin" not in resp.headers


async def test_only_kiosk_routes_are_served(gw: InProcessDaemon) -> None:
    url = base(gw)
    async with aiohttp.ClientSession() as http:
        for path in ("/v1/status", "/metrics", "/v1/sessions/x/maintenance/devices/printer/purge"):
            resp = await http.get(f"{url}{path}")
            assert resp.status == 404, path
        assert (await http.get(f"{url}/v1/openapi.json")).status == 200
        resp = await http.get(f"{url}/", allow_redirects=False)
        assert resp.status == 302 and resp.headers["Location"] == "/kiosk/"
        resp = await http.get(f"{url}/kiosk/")
        assert resp.status == 200 and resp.content_type == "text/html"
        assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
        resp = await http.get(f"{url}/kiosk/../default.toml")
        assert resp.status in (403, 404)
    # The Unix socket still serves everything.
    async with gw.client() as unix:
        assert (await unix.get("/v1/status")).status == 200


async def test_stream_ticket_is_single_use_and_bound_to_its_session(gw: InProcessDaemon) -> None:
    url = base(gw)
    async with aiohttp.ClientSession() as http:
        sid, token = await session(http, url)
        other, _ = await session(http, url)
        auth = {"Authorization": f"Bearer {token}", "Origin": KIOSK_APP}
        assert (await http.post(f"{url}/v1/sessions/{sid}/stream-ticket")).status == 401
        resp = await http.post(f"{url}/v1/sessions/{sid}/stream-ticket", headers=auth)
        assert resp.status == 201
        ticket = await resp.json()
        assert ticket["expires_in_s"] == 30

        # Another session's stream does not take this ticket (and the ticket is spent by trying).
        resp = await http.get(f"{url}/v1/sessions/{other}/events?ticket={ticket['ticket']}")
        assert resp.status == 401
        assert (await resp.json())["type"].endswith("invalid-ticket")

        resp = await http.post(f"{url}/v1/sessions/{sid}/stream-ticket", headers=auth)
        ticket = await resp.json()
        async with http.get(f"{url}{ticket['url']}", headers={"Origin": KIOSK_APP}) as stream:
            assert stream.status == 200
            assert stream.content_type == "text/event-stream"
            assert stream.headers["Access-Control-Allow-Origin"] == KIOSK_APP
            first = await asyncio.wait_for(stream.content.readline(), 5)
            assert first.startswith(b": connected")
            # Reused while the first stream is still open: refused.
            again = await http.get(f"{url}{ticket['url']}")
            assert again.status == 401
        assert (await http.get(f"{url}/v1/sessions/{sid}/events?ticket=made-up")).status == 401
        assert (await http.get(f"{url}/v1/sessions/{sid}/events")).status == 401
        assert listener_tickets(gw) == 0


async def test_a_flood_of_connections_is_capped_and_silent_ones_are_closed(gw: InProcessDaemon) -> None:
    listener = gw.daemon.running.browser
    assert listener is not None
    listener.max_connections = 8
    listener.first_byte_timeout_s = 0.5
    held = [await asyncio.open_connection(listener.host, listener.port) for _ in range(8)]
    await asyncio.sleep(0.05)
    reader, writer = await asyncio.open_connection(listener.host, listener.port)
    answer = await asyncio.wait_for(reader.read(), 5)
    assert answer.startswith(b"HTTP/1.1 503 ")
    writer.close()
    assert listener.refused >= 1
    # The silent ones are closed by the listener itself; then it serves again.
    for held_reader, held_writer in held:
        assert await asyncio.wait_for(held_reader.read(), 5) == b""
        held_writer.close()
    assert listener.silent_closed >= 8
    async with aiohttp.ClientSession() as http:
        assert (await http.get(f"{listener.url}/v1/health")).status == 200


def test_config_refuses_non_loopback_and_wildcards() -> None:
    for api in (
        'http_listen = "0.0.0.0:8089"',
        'http_listen = "192.168.1.5:8089"',
        'http_listen = "kiosk.example:8089"',
        'allowed_origins = ["*"]',
        'allowed_origins = ["http://kiosk.local/app"]',
        'allowed_origins = ["kiosk.local"]',
    ):
        with pytest.raises(ConfigError, match="api"):
            parse_config(f"[api]\n{api}\n", source="t.toml")
    config = parse_config('[api]\nhttp_listen = "127.0.0.1:8089"\n', source="t.toml")
    assert config.api.http_listen == "127.0.0.1:8089" and config.api.allowed_origins == []
    assert parse_config("", source="t.toml").api.http_listen == ""
