"""Card reader through the daemon and real pcscd: technician staff card + TOTP, citizen SS card."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP
from structlog.testing import capture_logs

from gateway.auth.settings import decode_base32_secret
from tests.support.daemon import inprocess_daemon
from tests.support.pcsc import PcscDaemon, wait_card_state

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def staff_config(vpcd_port: int) -> str:
    return f"""
[devices.cardreader]
driver = "pcsc"
simulate = "staff"
sim_vpcd_port = {vpcd_port}

[devices.printer]
driver = "escpos"
port = "sim://printer"
baudrate = 115200

[auth.staff.tech-0001]
card_ids = ["04A1B2C3D4E5F6"]
totp_secret = "{SECRET}"
"""


def totp_now() -> str:
    totp = TOTP(decode_base32_secret(SECRET), 6, SHA1(), 30)  # noqa: S303 - RFC 6238 default, as staff apps use
    return totp.generate(int(time.time())).decode()


async def wait_online(http: aiohttp.ClientSession, name: str) -> None:
    for _ in range(100):
        devices = (await (await http.get("/v1/devices")).json())["devices"]
        if any(d["name"] == name and d["state"] == "online" for d in devices):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} never came online: {devices}")


async def test_technician_needs_staff_card_and_totp_for_maintenance(
    state_dir: Path, pcscd: PcscDaemon
) -> None:
    async with inprocess_daemon(state_dir, staff_config(pcscd.vpcd_port)) as gw, gw.client() as http:
        await wait_online(http, "cardreader")
        assert await asyncio.to_thread(wait_card_state, True, timeout=10)
        body = await (await http.post("/v1/sessions", json={"kind": "technician"})).json()
        base, auth = f"/v1/sessions/{body['id']}", {"Authorization": f"Bearer {body['token']}"}
        purge = f"{base}/maintenance/devices/printer/purge"
        assert (await http.post(purge, headers=auth)).status == 403
        resp = await http.post(f"{base}/factors/staffcard", headers=auth)
        assert resp.status == 200, await resp.text()
        assert (await http.post(purge, headers=auth)).status == 403, "one factor is not enough"
        code = totp_now()
        resp = await http.post(f"{base}/factors/totp", headers=auth, json={"code": code})
        assert resp.status == 200, await resp.text()
        resp = await http.post(purge, headers=auth)
        assert resp.status == 200, await resp.text()
        assert (await resp.json()) == {"device": "printer", "purged": 0}
        # The same TOTP value is never accepted twice.
        resp = await http.post(f"{base}/factors/totp", headers=auth, json={"code": code})
        assert resp.status == 401
    await card_gone()


@pytest.mark.parametrize("personality", ["sscard", "sscard-t0"])
async def test_citizen_reads_social_security_card(
    state_dir: Path, pcscd: PcscDaemon, personality: str
) -> None:
    config = f"""
[devices.cardreader]
driver = "pcsc"
simulate = "{personality}"
sim_vpcd_port = {pcscd.vpcd_port}
"""
    async with inprocess_daemon(state_dir, config) as gw, gw.client() as http:
        await wait_online(http, "cardreader")
        body = await (await http.post("/v1/sessions")).json()
        base, auth = f"/v1/sessions/{body['id']}", {"Authorization": f"Bearer {body['token']}"}
        with capture_logs() as logs:
            resp = await http.post(f"{base}/factors/sscard", headers=auth)
        assert resp.status == 200, await resp.text()
        factor = (await resp.json())["factor"]
        assert factor["kind"] == "sscard"
        assert "*" in factor["subject"], "the subject is shown masked"
    (read,) = [e for e in logs if e["event"] == "sscard_addressing"]
    assert read["protocol"] == ("T=0" if personality == "sscard-t0" else "T=1")
    for secret in ("11010519491231002X", "测试持卡人", "TEST00001", "110100D156"):
        assert secret not in repr(logs)
    await card_gone()


async def card_gone() -> None:
    """The daemon's virtual card left with the daemon; the next test starts with an empty reader."""
    assert await asyncio.to_thread(wait_card_state, False, timeout=10)
