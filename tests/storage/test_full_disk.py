"""The real daemon on a really full disk (a small tmpfs filled to ENOSPC): 507 with nothing queued,
and the alerts raised meanwhile reach the cloud once space returns, raise before clear, in pairs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from gateway.uplink.keys import NodeKey
from tests.gateway.test_cloud_e2e import DEVICES
from tests.gateway.test_daemon_crash import SmsService
from tests.storage.test_wal_tail import login
from tests.support.cloud import Cloud, Uplink, write_jwk
from tests.support.daemon import spawn_daemon, unix_session, write_config
from tests.support.fulldisk import Ballast, small_tmpfs
from tests.support.mosquitto import Mosquitto

NODE = "edge-test"


async def status(http: aiohttp.ClientSession) -> dict[str, Any]:
    body: dict[str, Any] = await (await http.get("/v1/status")).json()
    return body


def alerts_of(cloud: Cloud) -> list[tuple[str, dict[str, Any]]]:
    return [(u.payload["type"], u.payload["body"]) for u in cloud.uplinks("alert")]


async def test_full_disk_507_and_alerts_delivered_in_pairs_after_space_returns(tmp_path: Path) -> None:
    sms = SmsService()
    cloud_key = NodeKey.generate("cloud")
    jwk = write_jwk(cloud_key, tmp_path / "cloud.jwk")
    with small_tmpfs("24m") as state_dir, Mosquitto(tmp_path / "broker") as broker:
        extra = f"""
[uplink]
broker = "{broker.url}"
cloud_keys = ["{jwk}"]
backoff_min_s = 0.1
backoff_max_s = 0.3

[ops]
telemetry_interval_s = 0.3
{DEVICES}
"""
        config = write_config(state_dir, extra, node_id=NODE)
        async with Cloud(broker.port, NODE, cloud_key, responder=sms) as cloud:
            dp = await spawn_daemon(config)
            try:
                async with unix_session(dp.socket_path) as http:
                    base, auth = await login(http, sms)
                    ok = await http.post(
                        f"{base}/transactions", headers=auth, json={"service": "s", "data": {}}
                    )
                    assert ok.status == 202
                    queued_before = (await status(http))["outbox"]["classes"]["tx"]
                    ballast = Ballast(state_dir)
                    ballast.fill()
                    resp = await http.post(
                        f"{base}/transactions", headers=auth, json={"service": "s", "data": {"n": 2}}
                    )
                    body = await resp.json()
                    assert resp.status == 507, body
                    assert resp.headers["Content-Type"].startswith("application/problem+json")
                    assert "nothing was queued" in body["detail"]
                    tx = (await status(http))["outbox"]["classes"]["tx"]
                    assert tx["last_seq"] == queued_before["last_seq"], "no seq used by the refusal"
                    # The engine raises disk_nearly_full while nothing can be stored.
                    async with asyncio.timeout(15):
                        while not any(
                            a["rule"] == "disk_nearly_full" for a in (await status(http))["alerts"]
                        ):
                            await asyncio.sleep(0.1)
                    await dp.wait_for_output("alert_send_failed_will_retry", timeout=15)
                    raised_meanwhile = [t for t, b in alerts_of(cloud) if b.get("rule") == "disk_nearly_full"]
                    ballast.free()

                    def paired(_u: Uplink) -> bool:
                        kinds = [(t, b.get("rule")) for t, b in alerts_of(cloud)]
                        return ("alert_cleared", "disk_nearly_full") in kinds and any(
                            t == "disk_full" for t, _ in kinds
                        )

                    await cloud.wait_for(paired, timeout=30)
                    ok = await http.post(
                        f"{base}/transactions", headers=auth, json={"service": "s", "data": {}}
                    )
                    assert ok.status == 202, await ok.text()
            finally:
                assert await dp.stop() == 0
    assert raised_meanwhile == [], "nothing could be stored while the disk was full"
    disk = [(t, b) for t, b in alerts_of(cloud) if b.get("rule") == "disk_nearly_full"]
    assert [t for t, _ in disk] == ["alert_raised", "alert_cleared"], "a raise, then its clear, once each"
    assert disk[0][1]["id"] == disk[1][1]["id"]
    full = [b for t, b in alerts_of(cloud) if t == "disk_full"]
    assert full and full[0]["stream"] in ("tx", "telemetry", "alert", "audit", "event"), json.dumps(full)
