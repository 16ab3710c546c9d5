"""A disk that lies about fsync: kill -9 the real daemon, drop the last commits of its WAL, restart.

The cloud deduplicates on (node, stream, seq): after the cut the daemon must never hand out a lost
seq again. The cloud's subscriber and the verify command see no seq with two payloads and exactly
the lost seqs as the gap, and the daemon reports those seqs (alert, /v1/status, diag).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.uplink.keys import NodeKey, load_key
from tests.gateway.test_cloud_e2e import DEVICES
from tests.gateway.test_daemon_crash import SmsService
from tests.support.cloud import Cloud, Uplink, write_jwk
from tests.support.daemon import REPO, spawn_daemon, unix_session, write_config
from tests.support.mosquitto import Mosquitto
from tests.support.walcut import cut_last_commits

NODE = "edge-test"


def last_seqs(db: Path, scratch: Path) -> dict[str, int]:
    """The streams table as SQLite would open these files now (read from a copy: no -shm left)."""
    scratch.mkdir()
    for suffix in ("", "-wal"):
        src = db.with_name(db.name + suffix)
        if src.exists():
            (scratch / (db.name + suffix)).write_bytes(src.read_bytes())
    conn = sqlite3.connect(scratch / db.name)
    try:
        return {str(s): int(q) for s, q in conn.execute("SELECT stream, last_seq FROM streams")}
    finally:
        conn.close()


async def login(http: aiohttp.ClientSession, sms: SmsService) -> tuple[str, dict[str, str]]:
    body = await (await http.post("/v1/sessions", json={})).json()
    base, auth = f"/v1/sessions/{body['id']}", {"Authorization": f"Bearer {body['token']}"}
    assert (await http.post(f"{base}/factors/idcard", headers=auth)).status == 200
    assert (await http.post(f"{base}/factors/otp/challenge", headers=auth)).status == 202
    resp = await http.post(f"{base}/factors/otp", headers=auth, json={"code": sms.code})
    assert resp.status == 200, await resp.text()
    return base, auth


async def transact(http: aiohttp.ClientSession, base: str, auth: dict[str, str], n: int) -> dict[str, Any]:
    resp = await http.post(f"{base}/transactions", headers=auth, json={"service": "s", "data": {"n": n}})
    body: dict[str, Any] = await resp.json()
    assert resp.status == 202, body
    return body


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def diag_outbox(config: Path) -> dict[str, Any]:
    run = cli("diag", "-c", str(config), "--json", "--only", "outbox")
    [check] = json.loads(run.stdout)["checks"]
    assert isinstance(check, dict)
    return check


def tx_id(uplink: Uplink) -> Any:
    return uplink.payload["body"].get("id") if "/up/tx" in uplink.topic else None


def verify_cli(envelopes: list[bytes], key: Path, scratch: Path) -> dict[str, Any]:
    """`edge-gateway verify --json` over what the cloud received."""
    lines = scratch / "received.jsonl"
    lines.write_bytes(b"".join(raw + b"\n" for raw in envelopes))
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "verify", "--json", "--key", str(key), str(lines)],
        capture_output=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    report: dict[str, Any] = json.loads(run.stdout)
    return report


@pytest.mark.parametrize("cut", [2, 5])
async def test_cut_wal_tail_never_reuses_a_seq_and_reports_the_gap(state_dir: Path, cut: int) -> None:
    sms = SmsService()
    cloud_key = NodeKey.generate("cloud")
    jwk = write_jwk(cloud_key, state_dir / "cloud.jwk")
    db = state_dir / "outbox.sqlite3"
    with Mosquitto(state_dir / "broker", persistence=True) as broker:
        extra = f"""
[uplink]
broker = "{broker.url}"
cloud_keys = ["{jwk}"]
backoff_min_s = 0.1
backoff_max_s = 0.3
{DEVICES}
# An SMS code proven online carries transactions through the outage below.
[auth.policy.transaction]
session_kinds = ["citizen"]
offline_allowed = [["idcard", "otp"]]
"""
        config = write_config(state_dir, extra, node_id=NODE)
        async with Cloud(broker.port, NODE, cloud_key, responder=sms) as cloud:
            dp = await spawn_daemon(config)
            async with unix_session(dp.socket_path) as http:
                base, auth = await login(http, sms)
                early = [await transact(http, base, auth, n) for n in range(8)]
                # Delivered traffic: the cloud has these before the fault.
                await cloud.wait_for(lambda u: tx_id(u) == early[-1]["id"])
                # The uplink goes down; the next transactions stay queued (so a lost one is a gap).
                broker.stop()
                async with asyncio.timeout(10):
                    while (await (await http.get("/v1/status")).json())["uplink"]["connected"]:
                        await asyncio.sleep(0.05)
                late = [await transact(http, base, auth, 100 + n) for n in range(cut + 2)]
                await asyncio.sleep(0.3)
            dp.signal(signal.SIGKILL)
            await dp.wait_exit()

            full = last_seqs(db, state_dir / "before")
            held = cut_last_commits(db, cut)
            assert held > cut
            after = last_seqs(db, state_dir / "after")
            lost = {s: [after.get(s, 0) + 1, q] for s, q in full.items() if q > after.get(s, 0)}
            assert lost, "the cut commits handed out seqs"

            broker.start()
            dp = await spawn_daemon(config)
            try:
                async with unix_session(dp.socket_path) as http:
                    status = await (await http.get("/v1/status")).json()
                    [incident] = status["outbox"]["incidents"]
                    assert incident["kind"] == "lost_tail" and incident["severity"] == "red"
                    assert incident["unaccounted"] == lost
                    metrics = await (await http.get("/metrics")).text()
                    expected = sum(last - first + 1 for first, last in lost.values())
                    assert f"edge_gateway_outbox_possibly_lost_messages {float(expected)}" in metrics
                    sms.code = "100001"  # a used code is never accepted twice
                    base, auth = await login(http, sms)
                    fresh = [await transact(http, base, auth, 200 + n) for n in range(3)]
                # The alert with the counts reaches the cloud, red.
                alert = await cloud.wait_for(
                    lambda u: u.stream == "alert" and u.payload["type"] == "seq_gap", timeout=20
                )
                assert alert.payload["body"]["severity"] == "red"
                assert alert.payload["body"]["unaccounted"] == lost
                await cloud.wait_for(lambda u: tx_id(u) == fresh[-1]["id"], timeout=20)
                tx_lost = range(lost["tx"][0], lost["tx"][1] + 1) if "tx" in lost else range(0)
                assert fresh[0]["seq"] > full["tx"], "new transactions continue above the mark"
                # diag (from the running daemon) names the lost seqs and fails until acknowledged.
                check = await asyncio.to_thread(diag_outbox, config)
                assert check["status"] == "fail" and "lost_tail" in check["detail"], check
                first, last = lost["tx"]
                assert (f"tx seq {first}" if first == last else f"tx seqs {first}-{last}") in check["detail"]
                assert "outbox-ack" in check["fix"]
                # Everything acknowledged and not in the cut arrived.
                got = {u.payload["body"].get("id") for u in cloud.uplinks("tx")}
                for t in early + late + fresh:
                    assert t["seq"] in tx_lost or t["id"] in got, t
            finally:
                assert await dp.stop() == 0
            envelopes = [u.raw for u in cloud.received if "/up/" in u.topic]

    # With the daemon down diag reads the journal: still there until ops acknowledge it.
    check = diag_outbox(config)
    assert check["status"] == "fail" and check["data"]["incidents"][0]["unaccounted"] == lost, check
    ack = cli("outbox-ack", "-c", str(config))
    assert ack.returncode == 0 and "acknowledged" in ack.stdout, ack.stderr
    check = diag_outbox(config)
    assert check["status"] != "fail" and "storage incident" not in check["detail"], check

    by_key: dict[tuple[str, int], set[bytes]] = {}  # (stream, seq) -> payloads
    for u in cloud.received:
        if "/up/" in u.topic:
            by_key.setdefault((u.stream, int(u.payload["seq"])), set()).add(u.raw)
    assert all(len(v) == 1 for v in by_key.values()), "no seq with two different payloads"

    key_file = state_dir / "node.jwk"
    key_file.write_text(json.dumps(load_key(state_dir / "keys" / "node.ed25519", NODE).public_jwk))
    report = verify_cli(envelopes, key_file, state_dir)
    gaps = [(p["stream"], p["seq"]) for p in report["problems"]]
    assert {p["kind"] for p in report["problems"]} <= {"gap"}, report["problems"]
    for stream, (first, last) in lost.items():
        seqs = {q for s, q in by_key if s == stream}
        assert not seqs & set(range(first, last + 1)), "a lost seq was never handed out again"
        if any(q > last for q in seqs):
            # The cloud sees exactly the lost seqs as the gap.
            assert (stream, first) in gaps, report["problems"]
            [stats] = [st for st in report["streams"] if st["stream"] == stream]
            assert stats["missing"] == last - first + 1, stats
    assert all(stream in lost and seq == lost[stream][0] for stream, seq in gaps), (gaps, lost)
