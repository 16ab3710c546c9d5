"""The whole citizen flow on the embedded default, no broker: `uplink.broker = "sim://cloud"`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
import pytest

from drivers.idcard.identity import sample_card, sample_photo
from gateway.config import GatewayConfig, embedded_default_text, parse_config
from gateway.daemon import Daemon
from gateway.devcloud.simlink import SimCloudLink
from gateway.logs import mask_text
from gateway.uplink.keys import KeyRing
from gateway.uplink.verifier import verify_lines
from tests.support.daemon import DaemonProcess, short_tmpdir, spawn_daemon, unix_session

CODE = re.compile(r"\[dev-cloud\] .*SMS to the phone of (?P<to>\S+): your code is (?P<code>\d{6})")


async def start_session(http: Any) -> tuple[str, dict[str, str]]:
    resp = await http.post("/v1/sessions", json={"kind": "citizen", "station": "k1"})
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    return f"/v1/sessions/{body['id']}", {"Authorization": f"Bearer {body['token']}"}


async def wait_devices_online(http: Any) -> None:
    async with asyncio.timeout(15):
        while True:
            devices = (await (await http.get("/v1/devices")).json())["devices"]
            if devices and all(d["state"] == "online" for d in devices):
                return
            await asyncio.sleep(0.1)


async def wait_job(http: Any, base: str, auth: dict[str, str], job: str) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            state: dict[str, Any] = await (await http.get(f"{base}/jobs/{job}", headers=auth)).json()
            if state["state"] not in ("queued", "running", "printing"):
                return state
            await asyncio.sleep(0.05)


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[DaemonProcess]:
    """`edge-gateway run` with no config at all, as `make run` starts it."""
    state_home = short_tmpdir()
    env = {"XDG_STATE_HOME": str(state_home), "EDGE_GATEWAY_CONFIG": "", "HOME": str(tmp_path)}
    dp = await spawn_daemon(None, args=["run"], env=env)
    try:
        yield dp
    finally:
        assert await dp.stop() == 0


async def test_make_run_completes_the_flow_with_the_in_process_cloud(embedded: DaemonProcess) -> None:
    dp = embedded
    await dp.wait_for_output(r"\[dev-cloud\] .* edge-dev is online")
    async with unix_session(dp.socket_path) as http:
        await wait_devices_online(http)
        base, auth = await start_session(http)
        resp = await http.post(f"{base}/factors/idcard", headers=auth)
        assert resp.status == 200, await resp.text()
        resp = await http.post(f"{base}/factors/otp/challenge", headers=auth)
        assert resp.status == 202, await resp.text()
        match = CODE.search(await dp.wait_for_output(CODE.pattern))
        assert match is not None
        number = sample_card().id_number
        assert match["to"] == number[:3] + "*" * 11 + number[-4:]
        resp = await http.post(f"{base}/factors/otp", headers=auth, json={"code": match["code"]})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["assurance"]["level"] == "two_factor"

        resp = await http.post(f"{base}/transactions", headers=auth, json={"service": "pension", "data": {}})
        assert resp.status == 202, await resp.text()
        tx = await resp.json()
        # Delivered to the in-process cloud and verified there (signature, seq, chain).
        # The feed masks long digit runs in any text (card numbers), also inside a random id.
        shown_id = re.escape(mask_text(tx["id"]))
        await dp.wait_for_output(rf"\[dev-cloud\] \S+ ok edge-dev tx#{tx['seq']} transaction .*id={shown_id}")

        resp = await http.post(f"{base}/print", headers=auth, json={"lines": ["Pension request", tx["id"]]})
        assert resp.status == 202, await resp.text()
        job = await wait_job(http, base, auth, (await resp.json())["job"])
        assert job["state"] == "done", job
    # Nothing the cloud refused, and the ID number never shows unmasked.
    assert "!! " not in "\n".join(line for line in dp.stdout_lines if "[dev-cloud]" in line)
    assert sample_card().id_number not in dp.output


def embedded_config(state_dir: Path, *, face: str = "sim") -> GatewayConfig:
    """The embedded default, unchanged but for where its state lives (and the face verifier)."""
    text = embedded_default_text().replace('verifier = "sim"', f'verifier = "{face}"', 1)
    config = parse_config(text, source="<embedded default>")
    node = msgspec.structs.replace(config.node, state_dir=str(state_dir))
    return msgspec.structs.replace(config, node=node)


@pytest.fixture
async def inprocess(state_dir: Path, request: pytest.FixtureRequest) -> AsyncIterator[Daemon]:
    lines: list[str] = []
    ready = asyncio.Event()

    def announce(line: str) -> None:
        lines.append(line)
        if "listening on" in line:
            ready.set()

    face = getattr(request, "param", "sim")
    daemon = Daemon(embedded_config(state_dir, face=face), announce=announce, install_signals=False)
    task = asyncio.create_task(daemon.run())
    try:
        async with asyncio.timeout(20):
            await ready.wait()
        yield daemon
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 20)


def cloud_of(daemon: Daemon) -> SimCloudLink:
    assert isinstance(daemon.parts.uplink.link, SimCloudLink)
    return daemon.parts.uplink.link


async def test_face_flow_matching_and_not_matching_person(inprocess: Daemon) -> None:
    link = cloud_of(inprocess)
    camera = inprocess.parts.devices.named("camera_k1").simulator
    async with unix_session(inprocess.config.socket_path) as http:
        await wait_devices_online(http)
        # The card shows person A, the camera shows person B: a mismatch.
        camera.person = "B"
        base, auth = await start_session(http)
        assert (await http.post(f"{base}/factors/idcard", headers=auth)).status == 200
        resp = await http.post(f"{base}/factors/face", headers=auth)
        assert resp.status == 401, await resp.text()
        assert (await resp.json())["reason"] == "face_mismatch"

        # The same person in front of the camera as on the card: two factors, transaction goes up.
        camera.person = "A"
        resp = await http.post(f"{base}/factors/face", headers=auth)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["assurance"]["level"] == "two_factor"
        resp = await http.post(
            f"{base}/transactions", headers=auth, json={"service": "id-renewal", "data": {}}
        )
        assert resp.status == 202
        tx = await resp.json()
        received = await link.cloud.wait_for(
            lambda r: r.type == "transaction" and r.body.get("id") == tx["id"], timeout=10
        )
        assert received.verdict.verified
        assert received.body["factors"] == ["idcard", "face"]


async def test_face_flow_with_another_persons_card(inprocess: Daemon) -> None:
    camera = inprocess.parts.devices.named("camera_k1").simulator
    idcard = inprocess.parts.devices.named("idcard_k1").simulator
    idcard.auto_present = False
    idcard.insert_card(replace(sample_card(), photo=sample_photo(1)))  # a card showing person B
    async with unix_session(inprocess.config.socket_path) as http:
        await wait_devices_online(http)
        base, auth = await start_session(http)
        assert (await http.post(f"{base}/factors/idcard", headers=auth)).status == 200
        # Person A (the camera's default) in front of B's card: refused.
        resp = await http.post(f"{base}/factors/face", headers=auth)
        assert resp.status == 401 and (await resp.json())["reason"] == "face_mismatch"
        camera.person = "B"
        resp = await http.post(f"{base}/factors/face", headers=auth)
        assert resp.status == 200, await resp.text()


async def test_signed_commands_and_every_uplink_verify_in_process(inprocess: Daemon) -> None:
    link = cloud_of(inprocess)
    kids_before = link.cloud.verifier.ring.kids()
    result = await link.cloud.send(inprocess.config.node.id, "ping", {}, timeout=10)
    assert result["ok"] is True and "pong" in result
    result = await link.cloud.send(
        inprocess.config.node.id, "config.set", {"values": {"api.max_sessions": 20}}, timeout=10
    )
    assert result["applied"] == ["api.max_sessions"]
    assert inprocess.config.api.max_sessions == 20
    # A key rotation is announced by the old key; the in-process cloud learns the new one.
    result = await link.cloud.send(inprocess.config.node.id, "keys.rotate", {}, timeout=10)
    assert result["ok"] is True
    after = await link.cloud.send(inprocess.config.node.id, "ping", {}, timeout=10)
    assert after["ok"] is True
    # What the cloud received is an intact record: the batch verifier agrees with the live one.
    raws = [r.raw for r in link.cloud.received]
    assert all(r.verdict.verified or r.verdict.duplicate for r in link.cloud.received)
    # The batch verifier starts from the node's first key only and learns the rotation itself.
    first = KeyRing.from_jwks([link.cloud.verifier.ring.get(kid).jwk for kid in kids_before])  # type: ignore[union-attr]
    report = verify_lines(raws, first)
    assert report.ok, report.format_report()


@pytest.mark.parametrize("inprocess", ["cloud"], indirect=True)
async def test_face_compare_asked_of_the_in_process_cloud(inprocess: Daemon) -> None:
    """`verifier = "cloud"`: the face goes up as a signed request and the dev cloud answers it."""
    link = cloud_of(inprocess)
    camera = inprocess.parts.devices.named("camera_k1").simulator
    async with unix_session(inprocess.config.socket_path) as http:
        await wait_devices_online(http)
        base, auth = await start_session(http)
        assert (await http.post(f"{base}/factors/idcard", headers=auth)).status == 200
        camera.person = "C"
        resp = await http.post(f"{base}/factors/face", headers=auth)
        assert resp.status == 401, await resp.text()
        assert (await resp.json())["reason"] == "face_mismatch"
        camera.person = "A"
        resp = await http.post(f"{base}/factors/face", headers=auth)
        assert resp.status == 200, await resp.text()
    asked = [r for r in link.cloud.received if r.type == "request.face.compare"]
    assert len(asked) == 2 and all(r.verdict.verified for r in asked)
