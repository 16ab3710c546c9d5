"""`edge-gateway dev-cloud` as a user runs it: a real mosquitto, a real daemon, the CLI as a process."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from drivers.idcard.identity import sample_card
from gateway.uplink.envelope import GENESIS_PREV, Sealer
from gateway.uplink.keys import NodeKey, b64url_decode, b64url_encode, init_key
from tests.support.daemon import REPO, DaemonProcess, InProcessDaemon, inprocess_daemon, spawn_daemon
from tests.support.mosquitto import Mosquitto

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


@pytest.fixture
def broker(state_dir: Path) -> Iterator[Mosquitto]:
    with Mosquitto(state_dir / "broker") as mosq:
        yield mosq


def feed_events(dp: DaemonProcess) -> list[dict[str, Any]]:
    """The dev cloud's JSON lines so far."""
    events = []
    for line in dp.stdout_lines:
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


async def wait_event(dp: DaemonProcess, match: Any, timeout: float = 15.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            for event in feed_events(dp):
                if match(event):
                    return event
            if dp.proc.returncode is not None:
                raise AssertionError(f"dev-cloud exited:\n{dp.output}")
            await asyncio.sleep(0.05)


async def run_cli(*args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def setup(
    state_dir: Path, broker: Mosquitto
) -> AsyncIterator[tuple[DaemonProcess, InProcessDaemon, Path]]:
    """The dev cloud trusting the node's key, and the daemon trusting the dev cloud's key."""
    cloud_dir = state_dir / "cloud"
    node_key = init_key(state_dir / "keys" / "node.ed25519", NODE)
    node_jwk = state_dir / "node.jwk"
    node_jwk.write_text(json.dumps(node_key.public_jwk))
    dev = await spawn_daemon(
        None,
        args=[
            "dev-cloud",
            "--broker",
            broker.url,
            "--state-dir",
            str(cloud_dir),
            "--node-key",
            str(node_jwk),
            "--json",
        ],
        wait_ready=False,
    )
    try:
        await wait_event(dev, lambda e: e["event"] == "broker" and "topics" in e)
        uplink = f"""
[uplink]
broker = "{broker.url}"
cloud_keys = ["{cloud_dir / "cloud.jwk"}"]
keepalive_s = 5
backoff_min_s = 0.2
backoff_max_s = 1.0
{DEVICES}
"""
        async with inprocess_daemon(state_dir, uplink) as gw:
            await wait_event(dev, lambda e: e["event"] == "presence" and e["state"] == "online")
            yield dev, gw, cloud_dir
    finally:
        await dev.stop()


async def test_live_verification_and_otp_round_trip(
    setup: tuple[DaemonProcess, InProcessDaemon, Path],
) -> None:
    dev, gw, _cloud_dir = setup
    async with gw.client() as http:
        resp = await http.post("/v1/sessions", json={"kind": "citizen"})
        session = await resp.json()
        base, auth = f"/v1/sessions/{session['id']}", {"Authorization": f"Bearer {session['token']}"}
        assert (await http.post(f"{base}/factors/idcard", headers=auth)).status == 200
        resp = await http.post(f"{base}/factors/otp/challenge", headers=auth)
        assert resp.status == 202, await resp.text()
        # The code reaches the person the way an SMS would: on the dev cloud's console.
        sms = await wait_event(dev, lambda e: e["event"] == "sms")
        assert sms["node"] == NODE and len(sms["code"]) == 6
        wrong = "000000" if sms["code"] != "000000" else "111111"
        assert (await http.post(f"{base}/factors/otp", headers=auth, json={"code": wrong})).status == 401
        resp = await http.post(f"{base}/factors/otp", headers=auth, json={"code": sms["code"]})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["assurance"]["level"] == "two_factor"
        resp = await http.post(f"{base}/transactions", headers=auth, json={"service": "pension", "data": {}})
        assert resp.status == 202, await resp.text()
        tx = await resp.json()

    shown = await wait_event(
        dev,
        lambda e: e["event"] == "uplink" and e.get("type") == "transaction" and e["body"]["id"] == tx["id"],
    )
    assert shown["verified"] is True and shown["problems"] == []
    assert shown["seq"] == tx["seq"]
    # Masked on the console: first 3 and last 4 characters of the ID number only.
    number = sample_card().id_number
    assert shown["body"]["id_number"] == number[:3] + "*" * 11 + number[-4:]
    assert number not in "\n".join(dev.stdout_lines + dev.stderr_lines)
    # Every uplink so far verified: no problem of any kind on any stream.
    uplinks = [e for e in feed_events(dev) if e["event"] == "uplink"]
    assert {e["stream"] for e in uplinks} >= {"tx", "audit"}
    assert all(e["verified"] for e in uplinks), [e for e in uplinks if not e["verified"]]


async def test_signed_ping_and_config_set_show_their_results(
    setup: tuple[DaemonProcess, InProcessDaemon, Path],
) -> None:
    dev, gw, cloud_dir = setup
    code, out, err = await run_cli(
        "dev-cloud", "send", NODE, "ping", "--broker", gw.config.uplink.broker, "--state-dir", str(cloud_dir),
        "--node-key", str(gw.config.state_dir / "node.jwk"),
    )  # fmt: skip
    assert code == 0, out + err
    result = json.loads(out)
    assert result["ok"] is True and "pong" in result and "version" in result
    # The long-running feed saw the same result arrive, verified.
    await wait_event(
        dev,
        lambda e: (
            e["event"] == "uplink" and e.get("type") == "command_result" and e["body"]["id"] == result["id"]
        ),
    )

    code, out, err = await run_cli(
        "dev-cloud", "send", NODE, "config.set", '{"values": {"api.max_sessions": 150}}',
        "--broker", gw.config.uplink.broker, "--state-dir", str(cloud_dir),
        "--node-key", str(gw.config.state_dir / "node.jwk"),
    )  # fmt: skip
    assert code == 0, out + err
    assert json.loads(out)["applied"] == ["api.max_sessions"]
    assert gw.daemon.config.api.max_sessions == 150

    # A refused command is a failure with the node's reason, exit 1.
    code, out, err = await run_cli(
        "dev-cloud", "send", NODE, "config.set", '{"values": {"uplink.broker": "mqtt://evil"}}',
        "--broker", gw.config.uplink.broker, "--state-dir", str(cloud_dir),
        "--node-key", str(gw.config.state_dir / "node.jwk"),
    )  # fmt: skip
    assert code == 1, out + err
    assert "not settable remotely" in json.loads(out)["error"]

    # Bad usage: a body that is not JSON is exit 2 with one line.
    code, out, err = await run_cli("dev-cloud", "send", NODE, "ping", "{nope", "--state-dir", str(cloud_dir))
    assert code == 2 and err.count("\n") == 1 and "JSON" in err


async def test_a_command_from_another_cloud_key_is_refused(
    setup: tuple[DaemonProcess, InProcessDaemon, Path], state_dir: Path
) -> None:
    _dev, gw, _cloud_dir = setup
    code, out, err = await run_cli(
        "dev-cloud", "send", NODE, "session.end_all", "--broker", gw.config.uplink.broker,
        "--state-dir", str(state_dir / "impostor"), "--timeout", "3",
    )  # fmt: skip
    assert code == 1, out + err
    assert "no command_result" in err
    assert gw.daemon.parts.uplink.dispatcher.rejected.get("unknown_kid") == 1


async def test_forged_tampered_and_replayed_uplinks_are_flagged(
    setup: tuple[DaemonProcess, InProcessDaemon, Path], broker: Mosquitto
) -> None:
    dev, gw, _cloud_dir = setup
    async with aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5) as attacker:
        # 1. Another key claiming to be this node.
        impostor = Sealer(NodeKey.generate(NODE), NODE)
        forged = impostor.seal(stream="tx", seq=999, prev=GENESIS_PREV, type="transaction", body={"id": "x"})
        await attacker.publish(f"edge/{NODE}/up/tx", forged, qos=1)
        await wait_event(dev, lambda e: e["event"] == "uplink" and e.get("claimed_type") == "transaction")
        # 2. A genuine envelope with its payload changed.
        genuine = gw.daemon.parts.uplink.rotation.node_key
        real = Sealer(genuine, NODE).seal(
            stream="tx", seq=5000, prev=GENESIS_PREV, type="probe", body={"n": 1}
        )
        outer = json.loads(real)
        payload = json.loads(b64url_decode(outer["payload"]))
        payload["body"] = {"n": 2}
        outer["payload"] = b64url_encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        await attacker.publish(f"edge/{NODE}/up/tx", json.dumps(outer, separators=(",", ":")), qos=1)
        # 3. A genuine envelope on another node's topic.
        await attacker.publish("edge/edge-other/up/tx", real, qos=1)

    refused = [e for e in feed_events(dev) if e["event"] == "uplink" and not e["verified"]]
    async with asyncio.timeout(10):
        while len(refused) < 3:
            await asyncio.sleep(0.05)
            refused = [e for e in feed_events(dev) if e["event"] == "uplink" and not e["verified"]]
    kinds = [[p["kind"] for p in e["problems"]] for e in refused]
    assert kinds == [["unknown_key"], ["bad_signature"], ["topic_mismatch"]]
    # The forged transaction was not acted on, and the readable feed says REFUSED.
    assert not any(e["event"] == "sms" for e in feed_events(dev))


async def test_an_unreachable_broker_is_reported_once_and_a_bad_url_is_refused(state_dir: Path) -> None:
    from tests.support.mosquitto import free_port

    closed = f"mqtt://127.0.0.1:{free_port()}"
    dev = await spawn_daemon(
        None,
        args=["dev-cloud", "--broker", closed, "--state-dir", str(state_dir / "c"), "--json"],
        wait_ready=False,
    )
    try:
        event = await wait_event(dev, lambda e: e["event"] == "broker" and "error" in e)
        assert "refused" in event["error"].lower()
        await asyncio.sleep(2.5)  # two more failed attempts: still one report
        assert len([e for e in feed_events(dev) if e["event"] == "broker"]) == 1
    finally:
        assert await dev.stop() == 0
    # The header went to stderr in --json mode; stdout holds only JSON lines.
    assert all(line.startswith("{") for line in dev.stdout_lines if line)
    assert "cloud.jwk" in "\n".join(dev.stderr_lines)

    code, out, err = await run_cli(
        "dev-cloud", "--broker", "http://nope", "--state-dir", str(state_dir / "c")
    )
    assert code == 2 and out == "" and err.count("\n") == 1 and "http://nope" in err
