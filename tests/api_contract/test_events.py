"""The event stream (kept out of fuzzing: it never ends) over the real Unix socket."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.support.daemon import REPO, inprocess_daemon

EVENTS = "/v1/sessions/{session_id}/events"


async def test_events_stream_starts_with_connected(state_dir: Path) -> None:
    doc = json.loads((REPO / "gateway" / "openapi.json").read_text())
    assert list(doc["paths"][EVENTS]["get"]["responses"]["200"]["content"]) == ["text/event-stream"]

    async with inprocess_daemon(state_dir) as gw, gw.client() as client:
        async with client.post("/v1/sessions", json={}) as resp:
            assert resp.status == 201
            session = await resp.json()
        url = f"/v1/sessions/{session['id']}/events"
        auth = {"Authorization": f"Bearer {session['token']}"}
        async with client.get(url, headers=auth) as stream:
            assert stream.status == 200
            assert stream.content_type == "text/event-stream"
            first = await asyncio.wait_for(stream.content.readline(), 5)
            assert first == b": connected\n"
            # Ending the session ends the stream with a stream_closed event.
            async with client.delete(f"/v1/sessions/{session['id']}", headers=auth) as ended:
                assert ended.status == 204
            rest = await asyncio.wait_for(stream.content.read(), 5)
        assert b"event: stream_closed" in rest

        async with client.get(url) as no_token:
            assert no_token.status == 401
            assert no_token.content_type == "application/problem+json"
            assert (await no_token.json())["type"].endswith("/unauthenticated")
        async with client.get(url, headers=auth) as ended_session:
            assert ended_session.status == 404
            assert ended_session.content_type == "application/problem+json"
