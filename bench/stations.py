"""A whole service centre on one node: N stations, each with its own simulated ID card reader, camera
and receipt printer, 10 kiosk clients per station running the citizen flow.

Run: .venv/bin/python bench/stations.py [--stations 20] [--per-station 10] [--duration 20] [--json]
     (also: bench/sessions.py --stations 20)

The citizen flow, per client, repeated until the run ends: open a session at its station; read the
ID card (the simulator presents a card ~0.3 s into the read, paced at 115200 baud); prove the face
(the station's simulated camera, compared by a local stand-in of the vendor face service); send a
transaction (two factors); print a receipt on the station's printer (0.5 s) and wait for it; give
feedback; end the session. Every device call waits its turn in that station's own queue.

Two runs in one process, same code: ONE station with --per-station clients (the baseline rate), then
--stations stations with --per-station clients each. Reported: completed flows/s against N times the
one-station rate (target >= 0.8x), non-device request p99 (create, job status, delete; target
< 50 ms), the durable writes (transaction, feedback: an fsync'd outbox commit each) on their own
line, errors (target 0), daemon CPU and RSS (target < 150 MB).

The 200 clients run in this one process, so their own timings include this process's event-loop
delay. A separate probe process (`--probe`, started by each run) asks the same non-device calls
(create, get, delete) every 50 ms on its own connection while the clients run; its p99 is the
daemon's answer time with far less of the client in it, and is reported beside the clients' own.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CpuMeter, percentile, spawn_daemon, state_dir, stop, wait_for_socket, write_config

RATIO_TARGET = 0.8
NON_DEVICE_P99_TARGET_S = 0.050
RSS_TARGET_MB = 150.0


def centre_config(stations: int, print_time: float) -> str:
    """Stations s00..sNN, each with its own reader, camera and printer on simulators."""
    parts = []
    for n in range(stations):
        s = f"s{n:02d}"
        parts.append(
            f"""
[stations.{s}]
idcard = "idcard_{s}"
camera = "camera_{s}"
printer = "printer_{s}"

[devices.idcard_{s}]
driver = "samv"
port = "sim://idcard_{s}"
baudrate = 115200
queue = {{ depth = 256, deadline_s = 120 }}

[devices.camera_{s}]
driver = "http"
url = "sim://camera_{s}"
queue = {{ depth = 256, deadline_s = 120 }}

[devices.printer_{s}]
driver = "escpos"
port = "sim://printer_{s}"
baudrate = 115200
sim_print_time_s = {print_time}
queue = {{ depth = 256, deadline_s = 120 }}
"""
        )
    return "\n".join(parts)


@dataclass
class Figures:
    flows: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    non_device: list[float] = field(default_factory=list)
    durable: list[float] = field(default_factory=list)
    flow_times: list[float] = field(default_factory=list)


@asynccontextmanager
async def face_service() -> AsyncIterator[str]:
    """A stand-in for the vendor face-compare service: always a live match."""

    async def compare(request: web.Request) -> web.Response:
        body = await request.json()
        base64.b64decode(body["probe"])
        return web.json_response({"score": 0.93, "liveness": True})

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/compare", compare)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/compare"
    finally:
        await runner.cleanup()


class Flow:
    """One kiosk client's citizen flow, timed step by step."""

    def __init__(self, http: aiohttp.ClientSession, station: str, figures: Figures, end: float) -> None:
        self.http, self.station, self.f, self.end = http, station, figures, end

    async def call(
        self, method: str, url: str, *, device: bool = False, durable: bool = False, **kwargs: Any
    ) -> Any:
        """One request; timed as non-device, durable (an outbox write, fsync'd) or device work."""
        started = time.monotonic()
        async with self.http.request(method, url, **kwargs) as resp:
            body = await resp.read()
            elapsed = time.monotonic() - started
            if durable:
                self.f.durable.append(elapsed)
            elif not device:
                self.f.non_device.append(elapsed)
            if resp.status >= 300:
                raise FlowError(f"{method} {url.split('/')[-1]} {resp.status}")
            return json.loads(body) if body and resp.content_type.endswith("json") else None

    async def once(self) -> None:
        started = time.monotonic()
        deadline = f"?deadline_s={max(5.0, self.end - time.monotonic() + 30):.0f}"
        created = await self.call("POST", "/v1/sessions", json={"station": self.station})
        sid, auth = created["id"], {"Authorization": f"Bearer {created['token']}"}
        base = f"/v1/sessions/{sid}"
        await self.call("POST", f"{base}/factors/idcard{deadline}", device=True, headers=auth)
        await self.call("POST", f"{base}/factors/face{deadline}", device=True, headers=auth)
        tx = {"service": "certificate.request", "data": {"kind": "residence"}}
        await self.call("POST", f"{base}/transactions", durable=True, headers=auth, json=tx)
        receipt = {"lines": ["社区服务中心", "Receipt"], "qr": "https://example.invalid/r/1"}
        job = await self.call("POST", f"{base}/print{deadline}", headers=auth, json=receipt)
        while True:
            state = (await self.call("GET", f"{base}/jobs/{job['job']}", headers=auth))["state"]
            if state not in ("queued", "printing"):
                break
            await asyncio.sleep(0.1)
        if state != "done":
            raise FlowError(f"print job {state}")
        await self.call("POST", f"{base}/feedback", durable=True, headers=auth, json={"rating": 5})
        await self.call("DELETE", base, headers=auth)
        self.f.flows += 1
        self.f.flow_times.append(time.monotonic() - started)

    async def run(self) -> None:
        while time.monotonic() < self.end:
            try:
                await self.once()
            except FlowError as err:
                self.f.errors[str(err)] += 1
            except (aiohttp.ClientError, TimeoutError) as err:
                self.f.errors[type(err).__name__] += 1


class FlowError(Exception):
    """A flow step answered other than success."""


async def run_centre(stations: int, per_station: int, duration: float, print_time: float) -> dict[str, Any]:
    with state_dir() as state:
        async with face_service() as face_url:
            devices = centre_config(stations, print_time) + (
                f'\n[auth.face]\nverifier = "http"\nurl = "{face_url}"\ntimeout_s = 5\n'
            )
            config = write_config(state, devices=devices, api="max_sessions = 1000")
            proc = spawn_daemon(config)
            try:
                await asyncio.to_thread(wait_for_socket, state / "api.sock", timeout=60)
                connector = aiohttp.UnixConnector(path=str(state / "api.sock"), limit=0)
                async with aiohttp.ClientSession("http://localhost", connector=connector) as http:
                    await wait_devices_online(http, stations * 3)
                    figures = Figures()
                    meter = CpuMeter.start(proc.pid)
                    started = time.monotonic()
                    end = started + duration
                    names = [f"s{n:02d}" for n in range(stations)]
                    probe = await asyncio.create_subprocess_exec(
                        sys.executable,
                        __file__,
                        "--probe",
                        str(state / "api.sock"),
                        names[0],
                        str(duration),
                        stdout=asyncio.subprocess.PIPE,
                    )
                    clients = [Flow(http, s, figures, end) for s in names for _ in range(per_station)]
                    await asyncio.gather(*(c.run() for c in clients))
                    elapsed = time.monotonic() - started
                    probed: list[float] = json.loads((await probe.communicate())[0] or b"[]")
                    cpu = meter.percent()
                    rss = psutil.Process(proc.pid).memory_info().rss / 1_048_576
            finally:
                code = await asyncio.to_thread(stop, proc)
    return {
        "stations": stations,
        "clients": stations * per_station,
        "elapsed_s": elapsed,
        "flows": figures.flows,
        "flows_per_s": figures.flows / elapsed,
        "errors": dict(figures.errors),
        "non_device_p50_ms": percentile(figures.non_device, 50) * 1000,
        "non_device_p99_ms": percentile(figures.non_device, 99) * 1000,
        "probe_n": len(probed),
        "probe_p50_ms": percentile(probed, 50) * 1000,
        "probe_p99_ms": percentile(probed, 99) * 1000,
        "durable_p50_ms": percentile(figures.durable, 50) * 1000,
        "durable_p99_ms": percentile(figures.durable, 99) * 1000,
        "flow_p50_s": percentile(figures.flow_times, 50),
        "flow_p99_s": percentile(figures.flow_times, 99),
        "daemon_cpu_pct": cpu,
        "daemon_rss_mb": rss,
        "exit_code": code,
    }


async def wait_devices_online(http: aiohttp.ClientSession, count: int) -> None:
    for _ in range(300):
        async with http.get("/v1/devices") as resp:
            devices = (await resp.json())["devices"]
        if len(devices) == count and all(d["state"] == "online" for d in devices):
            return
        await asyncio.sleep(0.1)
    raise SystemExit("the simulated devices did not come online")


def report(one: dict[str, Any], many: dict[str, Any]) -> bool:
    expected = one["flows_per_s"] * many["stations"]
    ratio = many["flows_per_s"] / expected if expected else 0.0
    errors = sum(many["errors"].values()) + sum(one["errors"].values())
    for f in (one, many):
        print(
            f"{f['stations']:3d} station(s), {f['clients']:4d} clients: {f['flows']:5d} flows in "
            f"{f['elapsed_s']:.1f} s = {f['flows_per_s']:.2f} flows/s; flow p50 {f['flow_p50_s']:.2f} s "
            f"p99 {f['flow_p99_s']:.2f} s; non-device p50 {f['non_device_p50_ms']:.1f} ms "
            f"p99 {f['non_device_p99_ms']:.1f} ms (probe process: p50 {f['probe_p50_ms']:.1f} ms "
            f"p99 {f['probe_p99_ms']:.1f} ms over {f['probe_n']} calls); "
            f"outbox writes (transaction, feedback) p50 "
            f"{f['durable_p50_ms']:.1f} ms p99 {f['durable_p99_ms']:.1f} ms; "
            f"daemon CPU {f['daemon_cpu_pct']:.0f}% RSS {f['daemon_rss_mb']:.0f} MB; "
            f"errors {f['errors'] or 0}"
        )
    checks = [
        (f"flows/s vs {many['stations']} x one station: {ratio:.2f}x", ratio >= RATIO_TARGET),
        (
            f"non-device p99 {many['non_device_p99_ms']:.1f} ms (< {NON_DEVICE_P99_TARGET_S * 1000:.0f})",
            many["non_device_p99_ms"] < NON_DEVICE_P99_TARGET_S * 1000,
        ),
        (
            f"non-device p99 from the probe process {many['probe_p99_ms']:.1f} ms "
            f"(< {NON_DEVICE_P99_TARGET_S * 1000:.0f})",
            many["probe_p99_ms"] < NON_DEVICE_P99_TARGET_S * 1000,
        ),
        (f"errors {errors} (0)", errors == 0),
        (
            f"daemon RSS {many['daemon_rss_mb']:.0f} MB (< {RSS_TARGET_MB:.0f})",
            many["daemon_rss_mb"] < RSS_TARGET_MB,
        ),
    ]
    for text, ok in checks:
        print(f"  [{'ok' if ok else 'MISS'}] {text}")
    return all(ok for _, ok in checks)


async def probe(socket_path: str, station: str, seconds: float) -> list[float]:
    """Create, get and delete a session every 50 ms for `seconds`: each call's latency."""
    connector = aiohttp.UnixConnector(path=socket_path)
    latencies: list[float] = []
    end = time.monotonic() + seconds
    async with aiohttp.ClientSession("http://localhost", connector=connector) as http:

        async def timed(method: str, url: str, **kwargs: Any) -> Any:
            started = time.monotonic()
            async with http.request(method, url, **kwargs) as resp:
                body = await resp.read()
            latencies.append(time.monotonic() - started)
            return json.loads(body) if resp.content_type.endswith("json") else None

        while time.monotonic() < end:
            created = await timed("POST", "/v1/sessions", json={"station": station})
            auth = {"Authorization": f"Bearer {created['token']}"}
            await timed("GET", f"/v1/sessions/{created['id']}", headers=auth)
            await timed("DELETE", f"/v1/sessions/{created['id']}", headers=auth)
            await asyncio.sleep(0.05)
    return latencies


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["--probe"]:
        socket_path, station, seconds = sys.argv[2:5]
        print(json.dumps(asyncio.run(probe(socket_path, station, float(seconds)))))
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--stations", type=int, default=20)
    parser.add_argument("--per-station", type=int, default=10)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--print-time", type=float, default=0.5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    one = asyncio.run(run_centre(1, args.per_station, args.duration, args.print_time))
    many = asyncio.run(run_centre(args.stations, args.per_station, args.duration, args.print_time))
    met = report(one, many)
    if args.json:
        print(json.dumps({"one_station": one, "centre": many}))
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
