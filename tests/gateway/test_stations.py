"""Stations through the real daemon: each kiosk's own ID card reader on its own pty, a shared printer
pool, station-bound sessions, feedback and the centre's figures."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from drivers.idcard.simulator import IdCardSimulator
from drivers.printer.simulator import Paper, PrinterSimulator
from gateway.config import parse_config
from gateway.errors import ConfigError
from tests.support.daemon import DaemonProcess, running_daemon, unix_session, write_config

STATIONS = ("a", "b", "c")


@contextlib.asynccontextmanager
async def centre(
    state_dir: Path, *, uids_c: str = ""
) -> AsyncIterator[tuple[DaemonProcess, dict[str, IdCardSimulator], dict[str, PrinterSimulator]]]:
    """Three stations with their own simulated ID card readers and a pool of two printers."""
    readers = {name: IdCardSimulator(name=f"idcard_{name}", pace=False) for name in STATIONS}
    printers = {name: PrinterSimulator(name=name, pace=False, print_time=0.05) for name in ("p1", "p2")}
    paths = {name: await sim.start() for name, sim in readers.items()}
    printer_paths = {name: await sim.start() for name, sim in printers.items()}
    tables = []
    for name, path in paths.items():
        tables.append(f'[devices.idcard_{name}]\ndriver = "samv"\nport = "{path}"\n')
    for name, path in printer_paths.items():
        tables.append(f'[devices.{name}]\ndriver = "escpos"\nport = "{path}"\nbaudrate = 115200\n')
    tables.append('[pools.hall]\ndevices = ["p1", "p2"]\n')
    for name in STATIONS:
        extra = uids_c if name == "c" else ""
        tables.append(
            f'[stations.{name}]\nlabel = "Kiosk {name.upper()}"\nidcard = "idcard_{name}"\n'
            f'printer = "hall"\n{extra}\n'
        )
    config = write_config(state_dir, "\n".join(tables))
    try:
        async with running_daemon(config) as daemon:
            yield daemon, readers, printers
    finally:
        for reader in readers.values():
            await reader.stop()
        for printer in printers.values():
            await printer.stop()


async def open_session(client: aiohttp.ClientSession, station: str) -> tuple[str, dict[str, str]]:
    async with client.post("/v1/sessions", json={"station": station}) as resp:
        assert resp.status == 201, await resp.text()
        body = await resp.json()
    assert body["station"] == station
    return body["id"], {"Authorization": f"Bearer {body['token']}"}


async def wait_online(client: aiohttp.ClientSession, names: set[str]) -> None:
    for _ in range(100):
        async with client.get("/v1/devices") as resp:
            devices = {d["name"]: d for d in (await resp.json())["devices"]}
        if all(devices[n]["state"] == "online" for n in names):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"devices not online: {devices}")


async def test_a_card_at_station_b_proves_only_b_s_session(state_dir: Path) -> None:
    async with centre(state_dir) as (daemon, readers, _printers), unix_session(daemon.socket_path) as client:
        await wait_online(client, {"idcard_a", "idcard_b", "idcard_c"})
        a_id, a_auth = await open_session(client, "a")
        b_id, b_auth = await open_session(client, "b")

        async def read(session: str, auth: dict[str, str]) -> tuple[int, Any]:
            async with client.post(
                f"/v1/sessions/{session}/factors/idcard?deadline_s=2", headers=auth
            ) as resp:
                return resp.status, await resp.json(content_type=None)

        waiting_a = asyncio.create_task(read(a_id, a_auth))
        waiting_b = asyncio.create_task(read(b_id, b_auth))
        await asyncio.sleep(0.4)  # both reads are polling their own readers
        readers["b"].insert_card()
        status_b, body_b = await waiting_b
        status_a, body_a = await waiting_a
        assert status_b == 200, body_b
        assert body_b["factor"]["kind"] == "idcard"
        assert status_a == 504 and body_a["type"].endswith("/deadline-expired"), body_a
        # Only station B's reader was ever asked to read a card.
        assert readers["a"].card is None
        async with client.get(f"/v1/sessions/{a_id}", headers=a_auth) as resp:
            view_a = await resp.json()
        async with client.get(f"/v1/sessions/{b_id}", headers=b_auth) as resp:
            view_b = await resp.json()
        assert view_a["station"] == "a" and view_a["factors"] == []
        assert view_b["station"] == "b" and [f["kind"] for f in view_b["factors"]] == ["idcard"]


async def test_pool_spreads_jobs_and_keeps_printing_when_one_runs_out(state_dir: Path) -> None:
    async with centre(state_dir) as (daemon, _readers, printers), unix_session(daemon.socket_path) as client:
        await wait_online(client, {"p1", "p2"})
        sessions = [await open_session(client, name) for name in STATIONS]

        async def print_and_wait(session: str, auth: dict[str, str], n: int) -> str:
            async with client.post(
                f"/v1/sessions/{session}/print", json={"lines": [f"receipt {n}"]}, headers=auth
            ) as resp:
                assert resp.status == 202, await resp.text()
                job = (await resp.json())["job"]
            for _ in range(100):
                async with client.get(f"/v1/sessions/{session}/jobs/{job}", headers=auth) as resp:
                    state = str((await resp.json())["state"])
                if state not in ("queued", "printing"):
                    return state
                await asyncio.sleep(0.05)
            raise AssertionError("job did not finish")

        states = await asyncio.gather(
            *(print_and_wait(sid, auth, n) for n in range(2) for sid, auth in sessions)
        )
        assert states == ["done"] * 6
        assert len(printers["p1"].jobs) >= 1 and len(printers["p2"].jobs) >= 1
        assert len(printers["p1"].jobs) + len(printers["p2"].jobs) == 6

        printers["p1"].set_paper(Paper.END)
        await asyncio.sleep(0)
        for _ in range(100):
            async with client.get("/v1/devices") as resp:
                devices = {d["name"]: d for d in (await resp.json())["devices"]}
            if devices["p1"]["state"] == "user_error":
                break
            await asyncio.sleep(0.1)
        assert devices["p1"]["state"] == "user_error", devices["p1"]
        assert devices["p1"]["pool"] == "hall" and devices["p1"]["stations"] == ["a", "b", "c"]
        before = len(printers["p2"].jobs)
        states = await asyncio.gather(*(print_and_wait(sid, auth, 9) for sid, auth in sessions))
        assert states == ["done"] * 3
        assert len(printers["p2"].jobs) == before + 3

        async with client.get("/v1/stations") as resp:
            stations = {s["name"]: s for s in (await resp.json())["stations"]}
        hall = stations["a"]["devices"]["printer"]
        assert hall == {"pool": "hall", "state": "online", "online": 1, "devices": 2}
        assert stations["a"]["label"] == "Kiosk A" and stations["a"]["sessions"] == 1


async def test_station_rules_at_session_creation(state_dir: Path) -> None:
    async with (
        centre(state_dir, uids_c="uids = [4242]") as (daemon, _r, _p),
        unix_session(daemon.socket_path) as client,
    ):
        async with client.post("/v1/sessions", json={}) as resp:
            assert resp.status == 422
            assert (await resp.json())["type"].endswith("/station-required")
        async with client.post("/v1/sessions", json={"station": "zz"}) as resp:
            assert resp.status == 422
            assert (await resp.json())["type"].endswith("/unknown-station")
        # The test runs as a uid that is not 4242.
        async with client.post("/v1/sessions", json={"station": "c"}) as resp:
            assert resp.status == 403
            assert (await resp.json())["type"].endswith("/station-not-allowed")
        async with client.post("/v1/sessions", json={"station": "a"}) as resp:
            assert resp.status == 201


def _messages(state_dir: Path, stream: str) -> list[dict[str, Any]]:
    """The payloads the daemon queued on `stream`, read from its outbox file."""
    conn = sqlite3.connect(f"file:{state_dir / 'outbox.sqlite3'}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT envelope FROM messages WHERE stream = ? ORDER BY seq", (stream,)
        ).fetchall()
    finally:
        conn.close()
    payloads = []
    for (envelope,) in rows:
        payload = json.loads(envelope)["payload"]
        payloads.append(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
    return payloads


def _event_bodies(state_dir: Path, type_: str) -> list[dict[str, Any]]:
    return [m["body"] for m in _messages(state_dir, "event") if m["type"] == type_]


async def test_feedback_once_per_session_also_after_it_ended(state_dir: Path) -> None:
    async with centre(state_dir) as (daemon, _r, _p), unix_session(daemon.socket_path) as client:
        sid, auth = await open_session(client, "b")
        url = f"/v1/sessions/{sid}/feedback"
        async with client.post(
            url, json={"rating": 2, "complaint": True, "category": "wait"}, headers=auth
        ) as r:
            assert r.status == 202, await r.text()
        async with client.post(url, json={"rating": 5}, headers=auth) as resp:
            assert resp.status == 409
            assert (await resp.json())["type"].endswith("/feedback-given")
        # Free text or an out-of-range rating is refused; the token still matters.
        async with client.post(url, json={"rating": 4, "text": "my name is ..."}, headers=auth) as resp:
            assert resp.status == 422
        sid2, auth2 = await open_session(client, "a")
        async with client.post(f"/v1/sessions/{sid2}/feedback", json={"rating": 6}, headers=auth2) as resp:
            assert resp.status == 422
        async with client.post(f"/v1/sessions/{sid2}/feedback", json={"rating": 5}, headers=auth) as resp:
            assert resp.status == 404
        async with client.delete(f"/v1/sessions/{sid2}", headers=auth2) as resp:
            assert resp.status == 204
        async with client.post(f"/v1/sessions/{sid2}/feedback", json={"rating": 5}, headers=auth2) as resp:
            assert resp.status == 202, await resp.text()

        async with client.get("/v1/stations") as resp:
            stations = {s["name"]: s for s in (await resp.json())["stations"]}
        assert stations["b"]["usage"]["rated"] == 1 and stations["b"]["usage"]["complaints"] == 1
        assert stations["a"]["usage"]["rated"] == 1 and stations["a"]["usage"]["complaint_rate"] == 0.0
        assert sum(stations["a"]["usage"]["hourly_sessions"]) == 1
        async with client.get("/metrics") as resp:
            metrics = await resp.text()
        assert 'edge_gateway_station_rated_today{station="b"} 1.0' in metrics
    bodies = _event_bodies(state_dir, "feedback")
    assert bodies == [
        {"session": sid, "station": "b", "rating": 2, "complaint": True, "category": "wait"},
        {"session": sid2, "station": "a", "rating": 5, "complaint": False},
    ]


@pytest.mark.parametrize(
    ("tables", "error"),
    [
        ('[stations.k1]\nidcard = "nope"\n', "stations.k1.idcard: no device or pool named 'nope'"),
        (
            '[devices.p]\ndriver = "escpos"\nport = "sim://p"\n[stations.k1]\nidcard = "p"\n',
            "stations.k1.idcard: 'p' is a printer, not a idcard",
        ),
        (
            '[devices.p]\ndriver = "escpos"\nport = "sim://p"\n[devices.i]\ndriver = "samv"\nport = "sim://i"\n'
            '[pools.mixed]\ndevices = ["p", "i"]\n[stations.k1]\nprinter = "mixed"\n',
            "pools.mixed.devices: a pool's devices are of one kind",
        ),
        ('[pools.x]\ndevices = ["ghost"]\n', "pools.x.devices: no device named 'ghost'"),
        (
            '[devices.p]\ndriver = "escpos"\nport = "sim://p"\n[pools.x]\ndevices = ["p"]\n',
            "pools: a pool serves stations",
        ),
    ],
)
def test_config_check_names_the_station_key(tables: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error.replace("(", r"\(").replace(")", r"\)")):
        parse_config(tables, source="t.toml")


async def test_red_alert_when_two_of_ten_devices_fail_names_them_and_their_stations(state_dir: Path) -> None:
    """Ten printers at five stations on their own ptys; two are unplugged past the grace period."""
    printers = {f"p{n}": PrinterSimulator(name=f"p{n}", pace=False) for n in range(10)}
    paths = {name: await sim.start() for name, sim in printers.items()}
    tables = ["[ops]\ndevice_failure_grace_s = 0.5\n"]
    for name, path in paths.items():
        tables.append(f'[devices.{name}]\ndriver = "escpos"\nport = "{path}"\nbaudrate = 115200\n')
    for n in range(5):
        tables.append(f'[pools.pool{n}]\ndevices = ["p{2 * n}", "p{2 * n + 1}"]\n')
        tables.append(f'[stations.k{n}]\nprinter = "pool{n}"\n')
    config = write_config(state_dir, "\n".join(tables))
    try:
        async with running_daemon(config) as daemon, unix_session(daemon.socket_path) as client:
            await wait_online(client, set(printers))
            await printers["p3"].unplug()
            await printers["p6"].unplug()
            alerts: list[dict[str, Any]] = []
            for _ in range(100):
                async with client.get("/v1/status") as resp:
                    alerts = [a for a in (await resp.json())["alerts"] if a["rule"] == "device_failure_share"]
                if alerts:
                    break
                await asyncio.sleep(0.1)
            assert len(alerts) == 1, alerts
            assert alerts[0]["severity"] == "red" and alerts[0]["value"] == 0.2
            assert "p3 (k1)" in alerts[0]["detail"] and "p6 (k3)" in alerts[0]["detail"]
            await printers["p3"].replug()
            await printers["p6"].replug()
            for _ in range(100):
                async with client.get("/v1/status") as resp:
                    alerts = [a for a in (await resp.json())["alerts"] if a["rule"] == "device_failure_share"]
                if not alerts:
                    break
                await asyncio.sleep(0.1)
            assert alerts == []
    finally:
        for sim in printers.values():
            await sim.stop()
    share = [m["type"] for m in _messages(state_dir, "alert") if m["body"]["rule"] == "device_failure_share"]
    assert share == ["alert_raised", "alert_cleared"]
