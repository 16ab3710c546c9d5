"""ID card + face (local verifier) works with the uplink down; the camera route returns a real JPEG."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.auth.face_service import FaceService
from tests.support.daemon import inprocess_daemon
from tests.support.mosquitto import free_port

DEVICES = """
[devices.idcard]
driver = "samv"
port = "sim://idcard"

[devices.camera]
driver = "http"
url = "sim://camera"

[devices.printer]
driver = "escpos"
port = "sim://printer"
baudrate = 115200
sim_print_time_s = 0.05
"""


def config(face_url: str) -> str:
    broker_down = f"mqtt://127.0.0.1:{free_port()}"
    return f"""
[uplink]
broker = "{broker_down}"

[auth.face]
verifier = "http"
url = "{face_url}"
timeout_s = 2
{DEVICES}
"""


async def test_camera_capture_returns_a_whole_jpeg(state_dir: Path, face_service: FaceService) -> None:
    async with inprocess_daemon(state_dir, config(face_service.url)) as gw, gw.client() as http:
        body = await (await http.post("/v1/sessions")).json()
        auth = {"Authorization": f"Bearer {body['token']}"}
        resp = await http.post(f"/v1/sessions/{body['id']}/camera/capture", headers=auth)
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "image/jpeg"
        jpeg = await resp.read()
        assert jpeg[:2] == b"\xff\xd8"
        assert jpeg[-2:] == b"\xff\xd9"
        assert int(resp.headers["X-Frame-Width"]) > 0


async def test_idcard_and_face_pass_offline_and_queue_the_transaction(
    state_dir: Path, face_service: FaceService
) -> None:
    async with inprocess_daemon(state_dir, config(face_service.url)) as gw, gw.client() as http:
        assert not gw.daemon.parts.uplink.is_online()
        body = await (await http.post("/v1/sessions")).json()
        base, auth = f"/v1/sessions/{body['id']}", {"Authorization": f"Bearer {body['token']}"}
        # The face is compared with this session's ID card photo: without the card, no capture.
        resp = await http.post(f"{base}/factors/face", headers=auth)
        assert resp.status == 409
        assert (await http.post(f"{base}/factors/idcard", headers=auth)).status == 200
        face_service.mode = "spoof"
        resp = await http.post(f"{base}/factors/face", headers=auth)
        assert resp.status == 401, "no liveness, no factor"
        face_service.mode = "match"
        resp = await http.post(f"{base}/factors/face", headers=auth)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["assurance"]["level"] == "two_factor"
        request = face_service.requests[-1]
        assert request["probe"][:2] == b"\xff\xd8", "the probe is the camera's JPEG"
        resp = await http.post(f"{base}/transactions", headers=auth, json={"service": "pension", "data": {}})
        assert resp.status == 202, await resp.text()
        assert (await resp.json())["state"] == "queued"


async def test_face_verifier_garbage_gives_clear_error_and_no_factor(
    state_dir: Path, face_service: FaceService
) -> None:
    async with inprocess_daemon(state_dir, config(face_service.url)) as gw, gw.client() as http:
        body = await (await http.post("/v1/sessions")).json()
        base, auth = f"/v1/sessions/{body['id']}", {"Authorization": f"Bearer {body['token']}"}
        assert (await http.post(f"{base}/factors/idcard", headers=auth)).status == 200
        face_service.mode = "garbage"
        resp = await http.post(f"{base}/factors/face", headers=auth)
        assert resp.status == 503
        assert resp.content_type == "application/problem+json"
        session = await (await http.get(base, headers=auth)).json()
        assert [f["kind"] for f in session["factors"]] == ["idcard"]


async def test_certificate_print_is_protected_a_receipt_is_not(
    state_dir: Path, face_service: FaceService
) -> None:
    async with inprocess_daemon(state_dir, config(face_service.url)) as gw, gw.client() as http:
        body = await (await http.post("/v1/sessions")).json()
        base, auth = f"/v1/sessions/{body['id']}", {"Authorization": f"Bearer {body['token']}"}
        printer = gw.daemon.parts.devices.named("printer").simulator
        certificate = {"lines": ["Certificate of residence"], "document": "certificate"}
        resp = await http.post(f"{base}/print", headers=auth, json=certificate)
        assert resp.status == 403
        assert (await resp.json())["type"].endswith("/policy-denied")
        resp = await http.post(f"{base}/print", headers=auth, json={"lines": ["Queue ticket 42"]})
        assert resp.status == 202, "a receipt needs no factor"
        assert (await http.post(f"{base}/factors/idcard", headers=auth)).status == 200
        assert (await http.post(f"{base}/factors/face", headers=auth)).status == 200
        resp = await http.post(f"{base}/print", headers=auth, json=certificate)
        assert resp.status == 202, await resp.text()
        job = (await resp.json())["job"]
        for _ in range(200):
            state = (await (await http.get(f"{base}/jobs/{job}", headers=auth)).json())["state"]
            if state not in ("queued", "printing"):
                break
            await asyncio.sleep(0.05)
        assert state == "done"
        texts = b"".join(printer.jobs)
        assert texts.count(b"Certificate of residence") == 1, (
            "the refused certificate never reached the printer"
        )
