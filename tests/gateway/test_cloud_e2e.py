"""End to end with a real broker: a citizen's two-factor transaction, signed downlinks, offline behaviour."""

from __future__ import annotations

import asyncio
import sqlite3
import ssl
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from drivers.idcard.identity import sample_card
from gateway.uplink.keys import KeyRing, NodeKey
from gateway.uplink.verifier import verify_lines
from tests.support.cloud import Cloud, Uplink, write_jwk
from tests.support.daemon import inprocess_daemon
from tests.support.mosquitto import BrokerTls, Mosquitto, free_port
from tests.uplink.tls import TestCA

NODE = "edge-test"
DEVICES = """
[devices.idcard]
driver = "samv"
port = "sim://idcard"

[devices.printer]
driver = "escpos"
port = "sim://printer"
baudrate = 115200
sim_print_time_s = 0.05
"""
OTP_CODE = "246810"


@pytest.fixture
def broker(state_dir: Path) -> Iterator[Mosquitto]:
    with Mosquitto(state_dir / "broker", persistence=True) as mosq:
        yield mosq


def otp_responder(uplink: Uplink) -> dict[str, Any] | None:
    """The cloud's SMS service: any ID number gets challenge c-1; the code is OTP_CODE."""
    payload = uplink.payload
    body = payload["body"]
    if payload["type"] == "request.otp.challenge":
        return {"id": body["id"], "result": {"challenge": "c-1", "expires_in_s": 300}}
    if payload["type"] == "request.otp.verify":
        return {"id": body["id"], "result": {"ok": body.get("code") == OTP_CODE}}
    return None


def uplink_config(broker_url: str, cloud_jwk: Path, extra: str = "") -> str:
    return f"""
[uplink]
broker = "{broker_url}"
cloud_keys = ["{cloud_jwk}"]
keepalive_s = 5
backoff_min_s = 0.2
backoff_max_s = 1.0
{extra}
{DEVICES}
"""


async def create_session(http: Any, kind: str = "citizen") -> tuple[str, dict[str, str]]:
    resp = await http.post("/v1/sessions", json={"kind": kind})
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    return body["id"], {"Authorization": f"Bearer {body['token']}"}


def outbox_rows(state_dir: Path, stream: str) -> int:
    with sqlite3.connect(f"file:{state_dir / 'outbox.sqlite3'}?mode=ro", uri=True) as conn:
        (count,) = conn.execute("SELECT count(*) FROM messages WHERE stream = ?", (stream,)).fetchone()
    return int(count)


async def test_citizen_idcard_and_sms_code_then_transaction(state_dir: Path, broker: Mosquitto) -> None:
    cloud_key = NodeKey.generate("cloud")
    jwk = write_jwk(cloud_key, state_dir / "cloud.jwk")
    async with (
        Cloud(broker.port, NODE, cloud_key, responder=otp_responder) as cloud,
        inprocess_daemon(state_dir, uplink_config(broker.url, jwk)) as gw,
        gw.client() as http,
    ):
        await cloud.wait_for(lambda u: u.says_online)
        sid, auth = await create_session(http)
        base = f"/v1/sessions/{sid}"

        # One factor is not enough: refused, and nothing reaches the tx stream.
        resp = await http.post(f"{base}/factors/idcard", headers=auth)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["assurance"]["level"] == "single"
        resp = await http.post(f"{base}/transactions", headers=auth, json={"service": "pension", "data": {}})
        assert resp.status == 403
        assert resp.content_type == "application/problem+json"

        resp = await http.post(f"{base}/factors/otp/challenge", headers=auth)
        assert resp.status == 202, await resp.text()
        resp = await http.post(f"{base}/factors/otp", headers=auth, json={"code": "000000"})
        assert resp.status == 401
        resp = await http.post(f"{base}/factors/otp", headers=auth, json={"code": OTP_CODE})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["assurance"]["level"] == "two_factor"

        resp = await http.post(
            f"{base}/transactions", headers=auth, json={"service": "pension", "data": {"month": "2026-11"}}
        )
        assert resp.status == 202, await resp.text()
        answer = await resp.json()
        assert answer["state"] in ("queued", "sent")
        tx = await cloud.wait_for(
            lambda u: (
                u.stream == "tx"
                and u.payload["type"] == "transaction"
                and u.payload["body"]["id"] == answer["id"]
            )
        )
        assert tx.payload["seq"] == answer["seq"]
        assert tx.payload["body"]["id_number"] == sample_card().id_number

        # Everything that went up verifies against the node's public key, per stream, chained.
        node_jwk = gw.daemon.parts.uplink.rotation.node_key.public_jwk
        report = verify_lines(
            [u.raw for u in cloud.received if "/up/" in u.topic], KeyRing.from_jwks([node_jwk])
        )
        assert report.ok, report.format_report()


async def test_offline_cloud_factor_answers_503_at_once(state_dir: Path) -> None:
    cloud_key = NodeKey.generate("cloud")
    jwk = write_jwk(cloud_key, state_dir / "cloud.jwk")
    closed = f"mqtt://127.0.0.1:{free_port()}"
    async with inprocess_daemon(state_dir, uplink_config(closed, jwk)) as gw, gw.client() as http:
        sid, auth = await create_session(http)
        base = f"/v1/sessions/{sid}"
        assert (await http.post(f"{base}/factors/idcard", headers=auth)).status == 200
        started = time.monotonic()
        resp = await http.post(f"{base}/factors/otp/challenge", headers=auth)
        assert resp.status == 503
        assert time.monotonic() - started < 1.0
        problem = await resp.json()
        assert problem["reason"] == "offline"
        tx_before = outbox_rows(state_dir, "tx")
        resp = await http.post(f"{base}/transactions", headers=auth, json={"service": "x", "data": {}})
        assert resp.status == 403
        assert outbox_rows(state_dir, "tx") == tx_before, "a refused transaction queues nothing"
        # The kiosk keeps working offline: sessions, devices, printing.
        resp = await http.post(f"{base}/print", headers=auth, json={"lines": ["offline receipt"]})
        assert resp.status == 202


async def test_bypass_attempts_are_refused(state_dir: Path) -> None:
    async with inprocess_daemon(state_dir, DEVICES) as gw, gw.client() as http:
        sid, auth = await create_session(http)
        other, other_auth = await create_session(http)
        body = {"service": "pension", "data": {}}
        tx_before = outbox_rows(state_dir, "tx")
        # No factor at all.
        assert (await http.post(f"/v1/sessions/{sid}/transactions", headers=auth, json=body)).status == 403
        # A factor proven in another session does not count here.
        assert (await http.post(f"/v1/sessions/{other}/factors/idcard", headers=other_auth)).status == 200
        assert (await http.post(f"/v1/sessions/{sid}/transactions", headers=auth, json=body)).status == 403
        # Another session's token cannot act on this session.
        resp = await http.post(f"/v1/sessions/{sid}/transactions", headers=other_auth, json=body)
        assert resp.status == 404
        # An ended session is gone.
        assert (await http.delete(f"/v1/sessions/{other}", headers=other_auth)).status == 204
        resp = await http.post(f"/v1/sessions/{other}/transactions", headers=other_auth, json=body)
        assert resp.status == 404
        # Citizens cannot reach technician maintenance.
        resp = await http.post(f"/v1/sessions/{sid}/maintenance/devices/printer/purge", headers=auth)
        assert resp.status == 403
        assert outbox_rows(state_dir, "tx") == tx_before


def tls_contexts(ca: TestCA) -> tuple[BrokerTls, ssl.SSLContext, Any]:
    server = ca.issue("localhost", server=True, dns=("localhost",), ips=("127.0.0.1",))
    node = ca.issue(NODE, server=False)
    cloud = ca.issue("cloud", server=False)
    ctx = ssl.create_default_context(cafile=str(ca.ca_file))
    ctx.load_cert_chain(str(cloud.cert), str(cloud.key))
    return BrokerTls(ca.ca_file, server.cert, server.key), ctx, node


@pytest.fixture
async def tls_setup(state_dir: Path) -> AsyncIterator[tuple[Mosquitto, ssl.SSLContext, str]]:
    ca = TestCA(state_dir / "pki")
    broker_tls, cloud_ctx, node_cert = tls_contexts(ca)
    with Mosquitto(state_dir / "broker", tls=broker_tls) as mosq:
        extra = (
            f'ca_file = "{ca.ca_file}"\nclient_cert = "{node_cert.cert}"\nclient_key = "{node_cert.key}"\n'
        )
        yield mosq, cloud_ctx, extra


async def test_signed_downlinks_over_mtls(
    state_dir: Path, tls_setup: tuple[Mosquitto, ssl.SSLContext, str]
) -> None:
    broker, cloud_ctx, tls_extra = tls_setup
    cloud_key = NodeKey.generate("cloud")
    jwk = write_jwk(cloud_key, state_dir / "cloud.jwk")
    url = f"mqtts://localhost:{broker.port}"
    config = uplink_config(url, jwk, tls_extra)

    def results(cloud: Cloud, command_id: str) -> list[Uplink]:
        return [
            u
            for u in cloud.uplinks("event")
            if u.payload["type"] == "command_result" and u.payload["body"]["id"] == command_id
        ]

    def rejections(cloud: Cloud, kind: str) -> list[Uplink]:
        return [
            u
            for u in cloud.uplinks("alert")
            if u.payload["type"] == "command_rejected" and u.payload["body"]["kind"] == kind
        ]

    async with Cloud(broker.port, NODE, cloud_key, tls=cloud_ctx) as cloud:
        async with inprocess_daemon(state_dir, config) as gw, gw.client() as http:
            await cloud.wait_for(lambda u: u.says_online)
            ping_id, ping_raw = cloud.command("ping", {})
            await cloud.publish("ping", ping_raw)
            result = await cloud.wait_for(lambda u: bool(results(cloud, ping_id)))
            assert result.payload["body"]["ok"] is True

            # config.set changes a live key; a key outside the allow-list is refused.
            set_id = await cloud.send("config.set", {"values": {"api.max_sessions": 150}})
            await cloud.wait_for(lambda u: bool(results(cloud, set_id)))
            assert results(cloud, set_id)[0].payload["body"]["ok"] is True
            status = await (await http.get("/v1/status")).json()
            assert status["sessions"]["max"] == 150
            bad_id = await cloud.send("config.set", {"values": {"node.id": "stolen"}})
            await cloud.wait_for(lambda u: bool(results(cloud, bad_id)))
            assert results(cloud, bad_id)[0].payload["body"]["ok"] is False

            # outbox.requeue answers how many parked messages went back (none here); a bad body fails.
            requeue_id = await cloud.send("outbox.requeue", {"stream": "audit"})
            await cloud.wait_for(lambda u: bool(results(cloud, requeue_id)))
            answer = results(cloud, requeue_id)[0].payload["body"]
            assert (answer["ok"], answer["requeued"], answer["total"]) == (True, {}, 0), answer
            bad_requeue = await cloud.send("outbox.requeue", {"seqs": [1]})
            await cloud.wait_for(lambda u: bool(results(cloud, bad_requeue)))
            answer = results(cloud, bad_requeue)[0].payload["body"]
            assert answer["ok"] is False and "stream" in answer["error"], answer

            # session.end_all ends open sessions.
            sid, auth = await create_session(http)
            end_id = await cloud.send("session.end_all", {})
            await cloud.wait_for(lambda u: bool(results(cloud, end_id)))
            assert (await http.get(f"/v1/sessions/{sid}", headers=auth)).status == 404

            # Forged, expired, wrong node, replayed: rejected with an alert, nothing runs.
            forged_id = await cloud.send("session.end_all", {}, key=NodeKey.generate("cloud"))
            await cloud.wait_for(lambda u: bool(rejections(cloud, "unknown_kid")))
            stranger = NodeKey(NodeKey.generate("x").private_key, cloud_key.kid)
            await cloud.send("ping", {}, key=stranger)
            await cloud.wait_for(lambda u: bool(rejections(cloud, "forged")))
            await cloud.send("ping", {}, exp=datetime.now(UTC) - timedelta(seconds=5))
            await cloud.wait_for(lambda u: bool(rejections(cloud, "expired")))
            await cloud.send("ping", {}, node="edge-other")
            await cloud.publish("ping", cloud.command("ping", {}, node="edge-other")[1])
            await cloud.wait_for(lambda u: bool(rejections(cloud, "wrong_node")))
            await cloud.publish("ping", ping_raw)
            await cloud.wait_for(lambda u: bool(rejections(cloud, "replayed")))
            assert not results(cloud, forged_id)

        # After a restart the replay window still holds.
        mark = len(cloud.received)
        async with inprocess_daemon(state_dir, config):
            before = len(rejections(cloud, "replayed"))
            # The gateway subscribes to its commands before it announces itself online.
            await cloud.wait_for(lambda u: u.says_online, start=mark)
            await cloud.publish("ping", ping_raw)
            await cloud.wait_for(lambda u: len(rejections(cloud, "replayed")) > before)
            assert len(results(cloud, ping_id)) == 1, "the replayed ping did not run again"


async def test_transactions_queue_while_broker_is_down_and_flow_when_back(
    state_dir: Path, broker: Mosquitto
) -> None:
    cloud_key = NodeKey.generate("cloud")
    jwk = write_jwk(cloud_key, state_dir / "cloud.jwk")
    # This centre lets an SMS code proven online carry a transaction through a short outage.
    policy = '[auth.policy.transaction]\nsession_kinds = ["citizen"]\noffline_allowed = [["idcard", "otp"]]\n'
    async with (
        Cloud(broker.port, NODE, cloud_key, responder=otp_responder) as cloud,
        inprocess_daemon(state_dir, uplink_config(broker.url, jwk) + policy) as gw,
        gw.client() as http,
    ):
        await cloud.wait_for(lambda u: u.says_online)
        sid, auth = await create_session(http)
        base = f"/v1/sessions/{sid}"
        assert (await http.post(f"{base}/factors/idcard", headers=auth)).status == 200
        assert (await http.post(f"{base}/factors/otp/challenge", headers=auth)).status == 202
        assert (await http.post(f"{base}/factors/otp", headers=auth, json={"code": OTP_CODE})).status == 200
        await broker.astop()
        async with asyncio.timeout(10):
            while gw.daemon.parts.uplink.is_online():
                await asyncio.sleep(0.05)
        ids = []
        for n in range(5):
            resp = await http.post(
                f"{base}/transactions", headers=auth, json={"service": f"s{n}", "data": {}}
            )
            assert resp.status == 202, await resp.text()
            body = await resp.json()
            assert body["state"] == "queued"
            ids.append(body["id"])
        status = await (await http.get("/v1/status")).json()
        assert status["uplink"]["connected"] is False
        await broker.astart()

        def delivered() -> set[str]:
            return {u.payload["body"].get("id") for u in cloud.uplinks("tx")}

        await cloud.wait_for(lambda _u: set(ids) <= delivered(), timeout=30)


async def test_key_rotation_by_command_and_by_cli_is_announced_and_verifiable(
    state_dir: Path, broker: Mosquitto
) -> None:
    cloud_key = NodeKey.generate("cloud")
    jwk = write_jwk(cloud_key, state_dir / "cloud.jwk")
    config = uplink_config(broker.url, jwk)
    async with Cloud(broker.port, NODE, cloud_key) as cloud:
        async with inprocess_daemon(state_dir, config) as gw, gw.client() as http:
            first_jwk = gw.daemon.parts.uplink.rotation.node_key.public_jwk
            await cloud.wait_for(lambda u: u.says_online)
            rotate_id = await cloud.send("keys.rotate", {})
            result = await cloud.wait_for(
                lambda u: u.stream == "event" and u.payload["body"].get("id") == rotate_id
            )
            new_kid = result.payload["body"]["new_kid"]
            assert new_kid != first_jwk["kid"]
            assert gw.daemon.parts.uplink.rotation.node_key.kid == new_kid
            await http.post("/v1/sessions", json={})  # something more goes up, signed by the new key
            await cloud.wait_for(lambda u: u.stream == "audit" and u.payload["type"] == "key_rotated")

        # The CLI rotates the key on disk; the running daemon picks it up on SIGHUP (here: reload()).
        async with inprocess_daemon(state_dir, config) as gw:
            cfg = str(state_dir / "gateway.toml")
            rotate = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "keys", "rotate", "-c", cfg, stdout=asyncio.subprocess.PIPE
            )
            out, _ = await rotate.communicate()
            assert rotate.returncode == 0
            assert out.startswith(b"rotated: new kid ")
            before = gw.daemon.parts.uplink.rotation.node_key.kid
            gw.daemon.reload()
            await cloud.wait_for(
                lambda u: (
                    u.stream == "audit"
                    and u.payload["type"] == "key_rotated"
                    and u.payload["body"]["old_kid"] == before
                )
            )
            assert gw.daemon.parts.uplink.rotation.node_key.kid != before

        # A cloud that trusted only the first key follows both rotations and verifies everything.
        uplinks = [u.raw for u in cloud.received if "/up/" in u.topic]
        report = verify_lines(uplinks, KeyRing.from_jwks([first_jwk]))
        assert report.ok, report.format_report()
        assert len(report.learned_kids) == 2


async def test_retired_key_file_is_deleted_when_its_overlap_ends(state_dir: Path, broker: Mosquitto) -> None:
    cloud_key = NodeKey.generate("cloud")
    jwk = write_jwk(cloud_key, state_dir / "cloud.jwk")
    config = uplink_config(broker.url, jwk, extra="key_overlap_s = 2.0")
    prev = state_dir / "keys" / "node.ed25519.prev"
    async with Cloud(broker.port, NODE, cloud_key) as cloud:
        async with inprocess_daemon(state_dir, config) as gw:
            first_jwk = gw.daemon.parts.uplink.rotation.node_key.public_jwk
            await cloud.wait_for(lambda u: u.says_online)
            await cloud.send("keys.rotate", {})
            await cloud.wait_for(lambda u: u.stream == "audit" and u.payload["type"] == "key_rotated")
            assert prev.exists(), "kept for the overlap"
            async with asyncio.timeout(10):
                while prev.exists():
                    await asyncio.sleep(0.05)
            assert (state_dir / "keys" / "node.ed25519").exists()
        uplinks = [u.raw for u in cloud.received if "/up/" in u.topic]
        report = verify_lines(uplinks, KeyRing.from_jwks([first_jwk]))
        assert report.ok, report.format_report()
