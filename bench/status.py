"""What ops and monitoring read: `/v1/status` and `/metrics`, timed against `/v1/health` in the same run.

Run: .venv/bin/python bench/status.py [--requests 300] [--devices 8] [--json]
Starts `python -m gateway run` with simulated devices (an ID card reader and a printer per kiosk,
`--devices` in all) and a few open sessions, then asks each path `--requests` times, one after the
other, over the Unix socket. The baseline is `/v1/health` (a handler that reads almost nothing); the
ratios say what putting the whole status together costs, and what rendering it as Prometheus text
adds. Also prints the size of each answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import percentile, spawn_daemon, state_dir, stop, wait_for_socket, write_config

PATHS = ("/v1/health", "/v1/status", "/metrics")


def devices_config(count: int) -> str:
    """`count` simulated devices: ID card readers and printers, alternating."""
    parts = []
    for n in range(count):
        if n % 2 == 0:
            parts.append(
                f'[devices.idcard{n}]\ndriver = "samv"\nport = "sim://idcard{n}"\nbaudrate = 115200\n'
            )
        else:
            parts.append(
                f'[devices.printer{n}]\ndriver = "escpos"\nport = "sim://printer{n}"\nbaudrate = 115200\n'
            )
    return "\n".join(parts)


async def measure(socket_path: Path, requests: int) -> dict[str, dict[str, float]]:
    connector = aiohttp.UnixConnector(path=str(socket_path))
    async with aiohttp.ClientSession(connector=connector, base_url="http://localhost") as http:
        for _ in range(3):
            async with http.post("/v1/sessions", json={}) as resp:
                assert resp.status == 201, await resp.text()
        figures: dict[str, dict[str, float]] = {}
        for path in PATHS:
            for _ in range(20):  # warm-up
                async with http.get(path) as resp:
                    await resp.read()
            times, size = [], 0
            for _ in range(requests):
                started = time.perf_counter()
                async with http.get(path) as resp:
                    body = await resp.read()
                    assert resp.status == 200, (path, resp.status)
                times.append(time.perf_counter() - started)
                size = len(body)
            figures[path] = {
                "p50_ms": statistics.median(times) * 1000,
                "p99_ms": percentile(times, 99) * 1000,
                "bytes": float(size),
            }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with state_dir() as state:
        config = write_config(state, devices=devices_config(args.devices), log_level="warning")
        proc = spawn_daemon(config)
        try:
            wait_for_socket(state / "api.sock")
            figures = asyncio.run(measure(state / "api.sock", args.requests))
        finally:
            stop(proc)
    base = figures["/v1/health"]["p50_ms"]
    if args.json:
        print(json.dumps({"devices": args.devices, "requests": args.requests, "paths": figures}, indent=2))
        return
    print(f"{args.requests} requests per path, {args.devices} simulated devices, 3 open sessions")
    print(f"{'path':<12} {'p50 ms':>8} {'p99 ms':>8} {'bytes':>8} {'p50 vs health':>14}")
    for path, f in figures.items():
        ratio = f["p50_ms"] / base if base else float("nan")
        print(f"{path:<12} {f['p50_ms']:8.2f} {f['p99_ms']:8.2f} {int(f['bytes']):8d} {ratio:13.2f}x")


if __name__ == "__main__":
    main()
