"""200 kiosk sessions over the Unix socket against the simulated devices, and a bare aiohttp baseline.

Run: .venv/bin/python bench/sessions.py [--duration 20] [--clients 200] [--get-seconds 5]
                                        [--until-complete] [--default-queues] [--json]
     .venv/bin/python bench/sessions.py --stations 20 [--per-station 10]: the centre mode
     (N stations, each with its own reader, camera and printer; see bench/stations.py)

The daemon runs as `python -m gateway run` with the embedded default's simulated peripherals at their
realistic service times: ONE ID card reader (the simulator presents a card ~0.3 s into a read; a read
takes ~0.6-1.1 s) and ONE receipt printer (0.5 s a receipt), shared by every session.

Phases, all in one client process:
 1. open: the clients connect and create their sessions all at once (200 sessions open together).
 2. GET throughput: every client loops `GET /v1/sessions/{id}` for --get-seconds; then the same client
    code hits a bare aiohttp app (its own process, answering the gateway's own session body) for the
    same time: gateway/bare is the ratio.
 3. flows: every client runs the kiosk flow (its open session; read the ID card; print a receipt and
    poll the job; GET the session; DELETE it; create the next) until --duration ends. While a client
    waits on a device, its UI polls `GET /v1/sessions/{id}` once a second, as a kiosk screen would.
 4. clean-up: outstanding device waits are abandoned, leftover sessions deleted, queues must drain.

What "zero errors at 200 sessions" means here (the fair test): all 200 sessions are open together
and every client is doing its flow against the one reader. The reader serves ~1 read/s, so in a
20 s run ~20 flows finish and ~180 clients are still, correctly, waiting in the reader's queue when
the run ends: those are reported as "unfinished (waiting on the device)", not as errors. Every
device request carries `?deadline_s=` = time left in the run + 10 s, so no deadline should expire
inside the run; a 504 would be counted on its own line as "deadline expired (device saturated)".
An error is anything else: any non-2xx answer (a 429 from a queue too small for 200 sessions, a 503,
a 5xx), a connection failure, or a print job that does not end `done`. The device queues are set
deep enough for 200 sessions (depth 256); --default-queues keeps the default depth (64) to show what
a 200-session site gets with it. --until-complete instead runs exactly one flow per client with no
time limit (~4 min with one reader): the strictest version of the test.

Non-device latency (create, get, delete, incl. the UI polls) is measured during the flow phase, i.e.
at the load a full site produces; the opening burst of 200 creates is reported on its own line, and
phase 2 (a saturating closed loop) is for throughput only.

Targets: zero errors; non-device p99 under 50 ms; GET throughput >= 0.6x bare; daemon RSS under
150 MB with 200 sessions open.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PYTHON,
    REPO,
    CpuMeter,
    NotifySocket,
    ms,
    percentile,
    spawn_daemon,
    state_dir,
    stop,
    verdict,
    wait_for_socket,
    write_config,
)

NON_DEVICE_P99_TARGET_S = 0.050
GET_RATIO_TARGET = 0.6
RSS_TARGET_MB = 150.0
DEADLINE_GRACE_S = 10.0
UI_POLL_S = 1.0
JOB_POLL_S = 0.25
# The bare app keeps aiohttp's default listen backlog (128): connect to it in two waves.
BARE_WARM_CONNECTIONS = 100
DEVICE_CALLS = frozenset({"idcard", "print"})
NON_DEVICE_CALLS = ("create", "get", "delete")
RECEIPT = {"lines": ["Residence certificate", "Ticket A-042", "Window 3"], "qr": "A-042", "cut": True}

DEEP_QUEUES = """
[devices.idcard.queue]
depth = 256
deadline_s = 600

[devices.printer.queue]
depth = 256
deadline_s = 600
"""


class CallFailed(Exception):
    """A call that got no HTTP answer (already counted)."""


@dataclass(frozen=True)
class Answer:
    """What a call got back."""

    status: int
    body: Any
    retry_after: float | None


@dataclass(frozen=True)
class Opened:
    """A session the bench holds: id and bearer token."""

    id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def path(self) -> str:
        return f"/v1/sessions/{self.id}"

    def __repr__(self) -> str:
        return f"Opened(id={self.id!r}, token=<masked>)"


@dataclass
class Recorder:
    """Latency per call kind, and every answer that is not a success."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    saturated: Counter[str] = field(default_factory=Counter)
    flows: list[float] = field(default_factory=list)
    print_jobs: list[float] = field(default_factory=list)

    async def call(
        self, kind: str, http: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
    ) -> Answer:
        started = time.perf_counter()
        try:
            async with http.request(method, path, **kwargs) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, OSError) as err:
            self.errors[f"{kind}: {type(err).__name__}"] += 1
            raise CallFailed from err
        self.latencies[kind].append(time.perf_counter() - started)
        if status >= 300:
            if status == 504 and kind in DEVICE_CALLS:
                self.saturated[kind] += 1
            else:
                self.errors[f"{kind}: HTTP {status}"] += 1
        return Answer(status, json.loads(raw) if raw else None, float(retry_after) if retry_after else None)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


async def create(rec: Recorder, http: aiohttp.ClientSession, kind: str = "create") -> Opened | None:
    try:
        answer = await rec.call(kind, http, "POST", "/v1/sessions")
    except CallFailed:
        return None
    return Opened(answer.body["id"], answer.body["token"]) if answer.status == 201 else None


async def warm(http: aiohttp.ClientSession, connections: int) -> None:
    """Open keep-alive connections, as kiosks that have been running a while have."""

    async def health() -> None:
        async with http.get("/v1/health") as resp:
            await resp.read()

    await asyncio.gather(*(health() for _ in range(connections)))


# Phase 2: GET throughput ------------------------------------------------------------------------


@dataclass
class GetRound:
    """One closed-loop GET run against one server."""

    rate: float
    latencies: list[float]
    statuses: Counter[int]
    server_cpu_percent: float

    @property
    def server_us_per_request(self) -> float:
        return self.server_cpu_percent / 100 / self.rate * 1e6 if self.rate else math.nan


async def get_round(
    http: aiohttp.ClientSession, sessions: list[Opened], seconds: float, server_pid: int
) -> GetRound:
    """Every client GETs its session as fast as it is answered, for `seconds` (after a short warm-up)."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    counting = False

    async def one_client(session: Opened, stop_at: float) -> None:
        while (now := loop.time()) < stop_at:
            async with http.get(session.path, headers=session.auth) as resp:
                await resp.read()
                statuses[resp.status] += 1
            if counting:
                latencies.append(loop.time() - now)

    await asyncio.gather(*(one_client(s, loop.time() + 0.5) for s in sessions))
    counting = True
    cpu = CpuMeter.start(server_pid)
    started = loop.time()
    await asyncio.gather(*(one_client(s, started + seconds) for s in sessions))
    elapsed = loop.time() - started
    return GetRound(len(latencies) / elapsed, latencies, statuses, cpu.percent())


@contextlib.asynccontextmanager
async def bare_server(state: Path, body: bytes) -> AsyncIterator[tuple[Path, int]]:
    """The baseline in its own process: a bare aiohttp app answering the gateway's session body."""
    body_file = state / "bare-body.json"
    body_file.write_bytes(body)
    socket_path = state / "bare.sock"
    proc = subprocess.Popen([PYTHON, __file__, "--serve-bare", str(socket_path), str(body_file)], cwd=REPO)
    try:
        await asyncio.to_thread(wait_for_socket, socket_path)
        yield socket_path, proc.pid
    finally:
        stop(proc)


def serve_bare(socket_path: str, body_file: str) -> None:
    """aiohttp answering a fixed JSON body on a Unix socket, nothing else."""
    from aiohttp import web

    body = Path(body_file).read_bytes()

    async def session(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def health(_request: web.Request) -> web.Response:
        return web.Response(body=b'{"status": "ok"}', content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/sessions/{session_id}", session)
    app.router.add_get("/v1/health", health)
    web.run_app(app, path=socket_path, print=None, access_log=None)


# Phase 3: flows ---------------------------------------------------------------------------------


@dataclass
class FlowRun:
    """Shared state of the flow phase."""

    rec: Recorder
    http: aiohttp.ClientSession
    end: float
    until_complete: bool
    open_sessions: dict[str, Opened] = field(default_factory=dict)
    in_flow: int = 0
    completed: int = 0
    failed: int = 0

    def deadline(self) -> str:
        if self.until_complete:
            return "600"
        left = self.end - asyncio.get_running_loop().time()
        return f"{min(600.0, max(1.0, left) + DEADLINE_GRACE_S):.1f}"


async def ui_poll(run: FlowRun, session: Opened) -> None:
    """The kiosk screen refreshing its session (idle countdown) while the user waits on a device."""
    await asyncio.sleep(random.uniform(0, UI_POLL_S))  # spreads the polls; not security
    while True:
        with contextlib.suppress(CallFailed):
            await run.rec.call("get", run.http, "GET", session.path, headers=session.auth)
        await asyncio.sleep(UI_POLL_S)


async def wait_print(run: FlowRun, session: Opened, job: str) -> str:
    while True:
        await asyncio.sleep(JOB_POLL_S)
        answer = await run.rec.call(
            "job", run.http, "GET", f"{session.path}/jobs/{job}", headers=session.auth
        )
        if answer.status != 200:
            return f"HTTP {answer.status}"
        if answer.body["state"] in ("done", "failed", "expired", "cancelled"):
            return str(answer.body["state"])


async def device_steps(run: FlowRun, session: Opened) -> float | None:
    """ID card, then a receipt: None if all went well, else the pause before a retry (Retry-After)."""
    rec, http, auth = run.rec, run.http, session.auth
    params = {"deadline_s": run.deadline()}
    read = await rec.call(
        "idcard", http, "POST", f"{session.path}/factors/idcard", headers=auth, params=params
    )
    if read.status != 200:
        return read.retry_after or 1.0
    params = {"deadline_s": run.deadline()}
    submitted = await rec.call(
        "print", http, "POST", f"{session.path}/print", json=RECEIPT, headers=auth, params=params
    )
    if submitted.status != 202:
        return submitted.retry_after or 1.0
    started = time.perf_counter()
    state = await wait_print(run, session, submitted.body["job"])
    if state == "done":
        rec.print_jobs.append(time.perf_counter() - started)
        return None
    if state == "expired":
        rec.saturated["print job expired"] += 1
    else:
        rec.errors[f"print job {state}"] += 1
    return 1.0


async def flow_client(run: FlowRun, first: Opened | None) -> None:
    """One kiosk: flow after flow (one flow with --until-complete), each in a new session."""
    loop = asyncio.get_running_loop()
    session = first
    while run.until_complete or loop.time() < run.end:
        started = time.perf_counter()
        if session is None:
            session = await create(run.rec, run.http)
            if session is None:
                await asyncio.sleep(1.0)  # a refused create is an error already; do not spin
                continue
        run.open_sessions[session.id] = session
        run.in_flow += 1
        poller = asyncio.create_task(ui_poll(run, session))
        pause: float | None = 1.0
        try:
            with contextlib.suppress(CallFailed):
                pause = await device_steps(run, session)
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        with contextlib.suppress(CallFailed):
            await run.rec.call("get", run.http, "GET", session.path, headers=session.auth)
            await run.rec.call("delete", run.http, "DELETE", session.path, headers=session.auth)
            run.open_sessions.pop(session.id, None)
        run.in_flow -= 1
        session = None
        if pause is None:
            run.completed += 1
            run.rec.flows.append(time.perf_counter() - started)
        else:
            run.failed += 1
            if not run.until_complete:
                await asyncio.sleep(pause)
        if run.until_complete:
            return


# Sampling the daemon ----------------------------------------------------------------------------


@dataclass
class Sampler:
    """RSS of a process every 0.2 s, labelled with the phase it was taken in."""

    process: psutil.Process
    phase: str = "start"
    samples: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    async def run(self) -> None:
        while True:
            with contextlib.suppress(psutil.Error):
                self.samples[self.phase].append(self.process.memory_info().rss / 1_048_576)
            await asyncio.sleep(0.2)

    def peak(self, *phases: str) -> float:
        values = [v for p in phases for v in self.samples.get(p, [])]
        return max(values) if values else math.nan


async def status_of(http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get("/v1/status") as resp:
        body: dict[str, Any] = await resp.json()
        return body


def queues(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d["queue"] for d in status.get("devices", [])}


async def until(check: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False


# The run ----------------------------------------------------------------------------------------


def client(socket_path: Path) -> aiohttp.ClientSession:
    connector = aiohttp.UnixConnector(path=str(socket_path), limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    return aiohttp.ClientSession(base_url="http://localhost", connector=connector, timeout=timeout)


async def measure(args: argparse.Namespace, state: Path, daemon_pid: int) -> dict[str, Any]:
    rec = Recorder()
    sampler = Sampler(psutil.Process(daemon_pid))
    sampling = asyncio.create_task(sampler.run())
    figures: dict[str, Any] = {}
    try:
        async with client(state / "api.sock") as http:
            sampler.phase = "open"  # every client connects and creates its session at the same moment
            burst = "create (opening burst)"
            opened = await asyncio.gather(*(create(rec, http, burst) for _ in range(args.clients)))
            sessions = [s for s in opened if s is not None]
            figures["opened"] = len(sessions)
            await asyncio.sleep(0.5)
            figures["rss_open_mb"] = sampler.process.memory_info().rss / 1_048_576

            sampler.phase = "get"
            async with http.get(sessions[0].path, headers=sessions[0].auth) as resp:
                session_body = await resp.read()
            gateway_rounds, bare_rounds = [], []
            async with (
                bare_server(state, session_body) as (bare_socket, bare_pid),
                client(bare_socket) as bare,
            ):
                await warm(bare, BARE_WARM_CONNECTIONS)
                # Alternate, so load from others on a shared machine hits both sides alike.
                for _ in range(args.get_rounds):
                    gateway_rounds.append(await get_round(http, sessions, args.get_seconds, daemon_pid))
                    bare_rounds.append(await get_round(bare, sessions, args.get_seconds, bare_pid))
            figures.update(gateway_rounds=gateway_rounds, bare_rounds=bare_rounds)

            sampler.phase = "flows"
            loop = asyncio.get_running_loop()
            run = FlowRun(rec, http, loop.time() + args.duration, args.until_complete)
            cpu = CpuMeter.start(daemon_pid)
            started = loop.time()
            tasks = [asyncio.create_task(flow_client(run, s)) for s in opened]
            if args.until_complete:
                await asyncio.gather(*tasks)
            else:
                await asyncio.sleep(args.duration)
            figures["flow_seconds"] = loop.time() - started
            figures["flow_cpu_percent"] = cpu.percent()
            figures["queues"] = queues(await status_of(http))
            figures["unfinished"] = run.in_flow
            figures["flows_completed"] = run.completed
            figures["flows_failed"] = run.failed
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

            sampler.phase = "cleanup"
            cleanup: Counter[int] = Counter()
            for session in list(run.open_sessions.values()):
                async with http.delete(session.path, headers=session.auth) as resp:
                    # 404: a DELETE abandoned mid-flight at the end had already ended it.
                    cleanup[resp.status] += 1

            async def drained() -> bool:
                body = await status_of(http)
                return body["sessions"]["open"] == 0 and all(
                    q["queued"] == 0 and not q["busy"] for q in queues(body).values()
                )

            figures["drained"] = await until(drained, 15)
            figures["cleanup_errors"] = {code: n for code, n in cleanup.items() if code not in (204, 404)}
    finally:
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
    figures["rss_peak_mb"] = sampler.peak("open", "get", "flows")
    figures["rec"] = rec
    return figures


def daemon_log_errors(path: Path) -> Counter[str]:
    """Error-level events in the daemon's JSON log, by event name."""
    found: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("level") in ("error", "critical"):
                found[str(entry.get("event"))] += 1
    return found


def _line(name: str, values: list[float]) -> str:
    p50, p99 = ms(percentile(values, 50)), ms(percentile(values, 99))
    return f"  {name:30} n={len(values):6}  p50 {p50:>10}  p99 {p99:>10}"


def report(args: argparse.Namespace, f: dict[str, Any], log_errors: Counter[str], exit_code: int) -> bool:
    """Print the figures and a PASS/FAIL line per target; True when every target is met."""
    rec: Recorder = f["rec"]
    lat = rec.latencies
    non_device = [v for k in NON_DEVICE_CALLS for v in lat.get(k, [])]
    gw_rounds: list[GetRound] = f["gateway_rounds"]
    bare_rounds: list[GetRound] = f["bare_rounds"]
    gw_rate = statistics.median(r.rate for r in gw_rounds)
    bare_rate = statistics.median(r.rate for r in bare_rounds)
    # Each gateway round is paired with the bare round right after it: load from others hits both.
    ratio = statistics.median(g.rate / b.rate for g, b in zip(gw_rounds, bare_rounds, strict=True))
    flows_per_s = f["flows_completed"] / f["flow_seconds"]

    print(
        f"clients {args.clients}; sessions open at once: {f['opened']}; flow phase {f['flow_seconds']:.1f} s"
    )
    print(
        f"completed flows: {f['flows_completed']} = {flows_per_s:.2f} flows/s (one ID card reader bounds it)"
    )
    print(f"failed flows (an error on the way; the kiosk retried after Retry-After): {f['flows_failed']}")
    print(f"unfinished at the end (flow started, waiting on a device, abandoned): {f['unfinished']}")
    print(f"flow time p50 {percentile(rec.flows, 50):.2f} s, p99 {percentile(rec.flows, 99):.2f} s")
    print("latency by call (flow phase):")
    for kind in (*NON_DEVICE_CALLS, "job", "idcard", "print"):
        print(_line(kind, lat.get(kind, [])))
    print(_line("print job submit->done", rec.print_jobs))
    print(_line("non-device (create/get/delete)", non_device))
    print(_line("opening burst (create)", lat.get("create (opening burst)", [])))
    for name, queue in f["queues"].items():
        print(
            f"device queue {name}: wait p50 {queue['wait_p50_s']} s, p99 {queue['wait_p99_s']} s; served "
            f"{queue['served']}, queued at end {queue['queued']}, expired {queue['expired']}, rejected_full "
            f"{queue['rejected_full']}, service estimate {queue['service_estimate_s']} s"
        )
    print(f"errors: {rec.error_count} {dict(rec.errors) if rec.errors else ''}")
    saturated = sum(rec.saturated.values())
    print(f"deadline expired (device saturated): {saturated} {dict(rec.saturated) if rec.saturated else ''}")
    print(f"clean-up: no session left and queues drained: {f['drained']}; errors {f['cleanup_errors'] or 0}")
    rss_open, rss_peak = f["rss_open_mb"], f["rss_peak_mb"]
    print(f"daemon RSS: {rss_open:.1f} MB with {f['opened']} sessions open; peak {rss_peak:.1f} MB")
    print(
        f"daemon CPU: {statistics.median(r.server_cpu_percent for r in gw_rounds):.0f}% in the GET rounds, "
        f"{f['flow_cpu_percent']:.0f}% during flows"
    )
    print(f"daemon exit code {exit_code}; error events in its log: {dict(log_errors) or 0}")
    rounds_text = f"{args.get_rounds} alternating rounds of {args.get_seconds} s"
    print(f"GET /v1/sessions/{{id}}, {args.clients} clients, {rounds_text}:")
    for label, rounds in (("gateway", gw_rounds), ("bare aiohttp", bare_rounds)):
        rates = ", ".join(f"{r.rate:.0f}" for r in rounds)
        print(
            f"  {label:13} median {statistics.median(r.rate for r in rounds):7.0f} req/s (rounds {rates}); "
            f"p50 {ms(statistics.median(percentile(r.latencies, 50) for r in rounds))}; server CPU "
            f"{statistics.median(r.server_cpu_percent for r in rounds):.0f}% = "
            f"{statistics.median(r.server_us_per_request for r in rounds):.0f} us/request"
        )
    cost = statistics.median(r.server_us_per_request for r in bare_rounds) / statistics.median(
        r.server_us_per_request for r in gw_rounds
    )
    print(f"  gateway/bare throughput ratio {ratio:.2f} (median of paired rounds)")
    print(f"  server CPU per request, bare/gateway {cost:.2f}")
    print("  (the one client process is the limit when neither server is at 100% CPU)")

    bad_gets = sum(n for r in gw_rounds for code, n in r.statuses.items() if code != 200)
    checks = {
        f"zero errors at {args.clients} sessions": rec.error_count == 0 and not bad_gets and f["drained"],
        f"non-device p99 under {NON_DEVICE_P99_TARGET_S * 1000:.0f} ms": (
            percentile(non_device, 99) < NON_DEVICE_P99_TARGET_S
        ),
        f"GET /v1/sessions/{{id}} throughput >= {GET_RATIO_TARGET}x bare": ratio >= GET_RATIO_TARGET,
        f"daemon RSS under {RSS_TARGET_MB:.0f} MB with {args.clients} sessions open": (
            f["rss_peak_mb"] < RSS_TARGET_MB
        ),
    }
    for name, ok in checks.items():
        print(f"{verdict(ok)}: {name}")
    if args.json:
        summary = {
            "flows_completed": f["flows_completed"],
            "flows_failed": f["flows_failed"],
            "flows_per_s": flows_per_s,
            "unfinished": f["unfinished"],
            "latency_s": {
                k: {"n": len(v), "p50": percentile(v, 50), "p99": percentile(v, 99)} for k, v in lat.items()
            },
            "non_device_p99_s": percentile(non_device, 99),
            "queues": f["queues"],
            "errors": dict(rec.errors),
            "saturated": dict(rec.saturated),
            "rss_open_mb": f["rss_open_mb"],
            "rss_peak_mb": f["rss_peak_mb"],
            "flow_cpu_percent": f["flow_cpu_percent"],
            "gateway_get_rate": gw_rate,
            "bare_get_rate": bare_rate,
            "ratio": ratio,
            "pass": checks,
        }
        print(json.dumps(summary))
    return all(checks.values())


def main() -> int:
    if "--stations" in sys.argv:
        # The centre mode: N stations with their own devices (bench/stations.py).
        import stations

        return stations.main(sys.argv[1:])
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of flows (default 20)")
    parser.add_argument("--clients", type=int, default=200, help="concurrent kiosk clients (default 200)")
    parser.add_argument("--get-seconds", type=float, default=3.0, help="seconds per GET round (default 3)")
    parser.add_argument("--get-rounds", type=int, default=3, help="GET rounds per server (default 3)")
    parser.add_argument("--print-time", type=float, default=0.5, help="simulated seconds per receipt")
    parser.add_argument("--until-complete", action="store_true", help="one flow per client, no time limit")
    parser.add_argument("--default-queues", action="store_true", help="keep the default queue depth (64)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--serve-bare", nargs=2, metavar=("SOCKET", "BODY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(*args.serve_bare)
        return 0

    with state_dir() as state:
        config = write_config(state, api=f"max_sessions = {args.clients}", print_time=args.print_time)
        if not args.default_queues:
            config.write_text(config.read_text() + DEEP_QUEUES)
        notify = NotifySocket(state / "notify.sock")
        proc = spawn_daemon(config, env={"NOTIFY_SOCKET": str(notify.path)})
        try:
            notify.wait_ready(timeout=30)
            figures = asyncio.run(measure(args, state, proc.pid))
        finally:
            code = stop(proc, timeout=30)
            notify.close()
        log_errors = daemon_log_errors(state / "daemon.out")
        return 0 if report(args, figures, log_errors, code) else 1


if __name__ == "__main__":
    sys.exit(main())
