"""kill -9 the real daemon while kiosk clients queue transactions: every 2xx is delivered, same bytes."""

from __future__ import annotations

import asyncio
import json
import random
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.uplink.keys import KeyRing, NodeKey
from gateway.uplink.verifier import verify_lines
from tests.gateway.test_cloud_e2e import DEVICES
from tests.support.cloud import Cloud, Uplink, write_jwk
from tests.support.daemon import spawn_daemon, unix_session, write_config
from tests.support.mosquitto import Mosquitto

ROUNDS = 20
CLIENTS = 3


async def produce(http: aiohttp.ClientSession, base: str, auth: dict[str, str], acked: list[str]) -> None:
    """Queue transactions until the daemon dies; remember every id answered 202."""
    n = 0
    while True:
        n += 1
        try:
            resp = await http.post(
                f"{base}/transactions", headers=auth, json={"service": "s", "data": {"n": n}}
            )
            body = await resp.json()
        except (aiohttp.ClientError, ConnectionError, json.JSONDecodeError):
            return
        assert resp.status == 202, body
        acked.append(body["id"])


class SmsService:
    """The cloud's SMS codes: a new code per round, since a used code is never accepted twice."""

    def __init__(self) -> None:
        self.code = "100000"

    def __call__(self, uplink: Uplink) -> dict[str, Any] | None:
        payload = uplink.payload
        body = payload["body"]
        if payload["type"] == "request.otp.challenge":
            return {"id": body["id"], "result": {"challenge": "c", "expires_in_s": 300}}
        if payload["type"] == "request.otp.verify":
            return {"id": body["id"], "result": {"ok": body.get("code") == self.code}}
        return None


async def wait_device_online(http: aiohttp.ClientSession, name: str) -> None:
    for _ in range(200):
        devices = (await (await http.get("/v1/devices")).json())["devices"]
        if any(d["name"] == name and d["state"] == "online" for d in devices):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} did not come online: {devices}")


# Several daemon starts, kills and a full drain: about 35 s on a quiet machine, more on a cold one.
@pytest.mark.timeout(300)
async def test_kill_9_loses_no_acknowledged_transaction(state_dir: Path) -> None:
    rng = random.Random(467)
    sms = SmsService()
    cloud_key = NodeKey.generate("cloud")
    jwk = write_jwk(cloud_key, state_dir / "cloud.jwk")
    acked: list[str] = []
    with Mosquitto(state_dir / "broker", persistence=True) as broker:
        extra = f"""
[uplink]
broker = "{broker.url}"
cloud_keys = ["{jwk}"]
backoff_min_s = 0.2
backoff_max_s = 0.5
{DEVICES}
"""
        config = write_config(state_dir, extra)
        async with Cloud(broker.port, "edge-test", cloud_key, responder=sms) as cloud:
            node_jwk: dict[str, str] | None = None
            for round_no in range(ROUNDS):
                sms.code = f"{100000 + round_no:06d}"
                dp = await spawn_daemon(config)
                async with unix_session(dp.socket_path) as http:
                    # "listening" comes before the reader has answered its first status check.
                    await wait_device_online(http, "idcard")
                    body = await (await http.post("/v1/sessions", json={})).json()
                    base, auth = f"/v1/sessions/{body['id']}", {"Authorization": f"Bearer {body['token']}"}
                    assert (await http.post(f"{base}/factors/idcard", headers=auth)).status == 200
                    assert (await http.post(f"{base}/factors/otp/challenge", headers=auth)).status == 202
                    resp = await http.post(f"{base}/factors/otp", headers=auth, json={"code": sms.code})
                    assert resp.status == 200
                    producers = [
                        asyncio.create_task(produce(http, base, auth, acked)) for _ in range(CLIENTS)
                    ]
                    await asyncio.sleep(rng.uniform(0.05, 0.6))
                    dp.signal(signal.SIGKILL)
                    await dp.wait_exit()
                    await asyncio.gather(*producers)
                if node_jwk is None:
                    from gateway.uplink.keys import load_key

                    node_jwk = load_key(state_dir / "keys" / "node.ed25519", "edge-test").public_jwk
            assert len(acked) > ROUNDS, "clients got transactions acknowledged in the rounds"

            # A last, clean run drains whatever the killed ones left behind.
            dp = await spawn_daemon(config)
            try:
                # Each uplink is looked at once, as it arrives (a predicate that decoded every
                # envelope again for each new one made this wait quadratic in the traffic).
                wanted = set(acked)
                seen_ids: set[str] = set()

                def all_delivered(uplink: Uplink) -> bool:
                    if uplink.stream == "tx":
                        payload = uplink.payload
                        if payload["type"] == "transaction":
                            seen_ids.add(payload["body"]["id"])
                    return wanted <= seen_ids

                await cloud.wait_for(all_delivered, timeout=60)
            finally:
                assert await dp.stop() == 0

        delivered = {
            u.payload["body"]["id"] for u in cloud.uplinks("tx") if u.payload["type"] == "transaction"
        }
        lost = set(acked) - delivered
        assert lost == set()
        by_seq: dict[int, set[bytes]] = {}
        for uplink in cloud.uplinks("tx"):
            by_seq.setdefault(uplink.payload["seq"], set()).add(uplink.raw)
        assert all(len(versions) == 1 for versions in by_seq.values()), "a resend is the same bytes"
        assert node_jwk is not None
        report = verify_lines([u.raw for u in cloud.uplinks("tx")], KeyRing.from_jwks([node_jwk]))
        assert report.ok, report.format_report()
