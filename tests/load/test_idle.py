"""An idle session: warned, then ended, then gone, and a human is called through the outbox."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

from tests.load.conftest import gateway, sim_devices
from tests.load.kiosk import open_session, read_events, status

IDLE_API = "session_idle_timeout_s = 2\nidle_warning_s = 1"


def _outbox_events(path: Path) -> list[dict[str, Any]]:
    """Payloads of the `event` stream's envelopes in the outbox file."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT envelope FROM messages WHERE stream = 'event' ORDER BY seq").fetchall()
    finally:
        conn.close()
    payloads = []
    for (envelope,) in rows:
        encoded = json.loads(envelope)["payload"]
        payloads.append(json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))))
    return payloads


async def test_an_idle_session_is_warned_then_ended_and_an_assist_event_goes_up(state_dir: Path) -> None:
    async with (
        gateway(state_dir, api=IDLE_API, devices=sim_devices(idcard=False)) as gw,
        gw.client() as http,
    ):
        before = (await status(http))["outbox"]["classes"]["event"]["count"]
        session = await open_session(http)
        async with http.get(session.path("/events"), headers=session.auth) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/event-stream"
            events = await read_events(resp, until="session_ended")
        kinds = [e.type for e in events]
        assert "idle_warning" in kinds, kinds
        assert kinds.index("idle_warning") < kinds.index("session_ended")
        warning = events[kinds.index("idle_warning")].data
        assert 0 < warning["ends_in_s"] <= 1
        assert events[-1].data["reason"] == "idle"

        async with http.get(session.path(), headers=session.auth) as resp:
            assert resp.status == 404
        body = await status(http)
        assert body["sessions"]["open"] == 0
        assert body["sessions"]["ended_total"] == {"idle": 1}
        assert body["outbox"]["classes"]["event"]["count"] == before + 1

        outbox_file = gw.config.state_dir / gw.config.outbox.file
    assists = [p for p in _outbox_events(outbox_file) if p["type"] == "assist"]
    assert len(assists) == 1
    assert assists[0]["body"] == {"session": session.id, "kind": "citizen", "reason": "idle_timeout"}
    assert assists[0]["stream"] == "event"
