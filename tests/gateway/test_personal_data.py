"""No ID number, name or address reaches logs, metrics, status, audit records or auth state."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from drivers.idcard.identity import sample_card
from gateway.uplink.keys import NodeKey, b64url_decode
from tests.gateway.test_cloud_e2e import DEVICES, OTP_CODE, otp_responder
from tests.support.cloud import Cloud, write_jwk
from tests.support.daemon import running_daemon, unix_session, write_config
from tests.support.mosquitto import Mosquitto

CARD = sample_card()
SECRETS = [CARD.id_number, CARD.name, CARD.address, CARD.issuer]


def envelopes_by_stream(state_dir: Path) -> dict[str, list[str]]:
    """Every stored envelope's decoded payload text, per stream."""
    found: dict[str, list[str]] = {}
    with sqlite3.connect(f"file:{state_dir / 'outbox.sqlite3'}?mode=ro", uri=True) as conn:
        for stream, raw in conn.execute("SELECT stream, envelope FROM messages"):
            outer = json.loads(raw)
            found.setdefault(stream, []).append(b64url_decode(outer["payload"]).decode())
    return found


def leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


async def test_full_flow_leaves_no_personal_data_outside_tx(state_dir: Path) -> None:
    cloud_key = NodeKey.generate("cloud")
    jwk = write_jwk(cloud_key, state_dir / "cloud.jwk")
    with Mosquitto(state_dir / "broker") as broker:
        extra = f"""
[uplink]
broker = "{broker.url}"
cloud_keys = ["{jwk}"]
{DEVICES}
"""
        config = write_config(state_dir, extra)
        async with (
            Cloud(broker.port, "edge-test", cloud_key, responder=otp_responder) as cloud,
            running_daemon(config) as dp,
            unix_session(dp.socket_path) as http,
        ):
            # The uplink connects after a short random delay (uplink.first_connect_jitter_s).
            await cloud.wait_for(lambda u: u.says_online)
            resp = await http.post("/v1/sessions", json={})
            body = await resp.json()
            sid, auth = body["id"], {"Authorization": f"Bearer {body['token']}"}
            base = f"/v1/sessions/{sid}"
            assert (await http.post(f"{base}/factors/idcard", headers=auth)).status == 200
            assert (await http.post(f"{base}/factors/otp/challenge", headers=auth)).status == 202
            assert (
                await http.post(f"{base}/factors/otp", headers=auth, json={"code": "111111"})
            ).status == 401
            assert (
                await http.post(f"{base}/factors/otp", headers=auth, json={"code": OTP_CODE})
            ).status == 200
            resp = await http.post(f"{base}/transactions", headers=auth, json={"service": "s", "data": {}})
            assert resp.status == 202
            receipt = {"lines": ["Receipt", "ok"], "qr": "https://example.invalid/r/1"}
            assert (await http.post(f"{base}/print", headers=auth, json=receipt)).status == 202
            exposed = {
                "session": await (await http.get(base, headers=auth)).text(),
                "status": await (await http.get("/v1/status")).text(),
                "devices": await (await http.get("/v1/devices")).text(),
                "metrics": await (await http.get("/metrics")).text(),
            }
            await cloud.wait_for(lambda u: u.stream == "tx" and u.payload["type"] == "transaction")
            assert (await http.delete(base, headers=auth)).status == 204
        for name, text in exposed.items():
            assert leaks(text) == [], f"{name} exposes {leaks(text)}"
        log_text = "\n".join([*dp.stdout_lines, *dp.stderr_lines])
        for log_file in (state_dir / "log").glob("gateway.jsonl*"):
            log_text += log_file.read_text()
        assert "card_present" in log_text or "factor" in log_text or "session_created" in log_text
        assert leaks(log_text) == [], f"logs expose {leaks(log_text)}"
        streams = envelopes_by_stream(state_dir) if (state_dir / "outbox.sqlite3").exists() else {}
        delivered: dict[str, list[str]] = {}
        for uplink in cloud.received:
            if "/up/" in uplink.topic:
                delivered.setdefault(uplink.stream, []).append(json.dumps(uplink.payload, ensure_ascii=False))
        for stream in set(streams) | set(delivered):
            if stream == "tx":
                continue  # the one place an ID number may travel, signed, to the cloud
            text = "\n".join([*streams.get(stream, []), *delivered.get(stream, [])])
            assert leaks(text) == [], f"stream {stream} exposes {leaks(text)}"
        audits = [json.loads(json.dumps(u.payload)) for u in cloud.uplinks("audit")]
        assert audits, "the flow was audited"
        masked = CARD.id_number[:3] + "*" * 11 + CARD.id_number[-4:]
        assert any(masked in json.dumps(a, ensure_ascii=False) for a in audits), (
            "audit names the masked subject"
        )
        auth_db = (state_dir / "auth.sqlite").read_bytes()
        assert CARD.id_number.encode() not in auth_db
