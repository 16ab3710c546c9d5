"""Hostile input: /v1/health latency during a connection flood and a junk-downlink flood, vs none.

Run (as root, mosquitto installed): .venv/bin/python bench/hostile.py [--connections 1100]
    [--junk 5000] [--seconds 5] [--json]
One daemon (a subprocess under a 1,024 open-file limit, api.allowed_uids = [0], a real mosquitto
broker) serves all phases of the same run:
  baseline     an allowed client (root) asks /v1/health on a fresh connection every 50 ms;
  conn-flood   the same while another process, dropped to uid 65534, holds --connections idle
               connections and replaces each one the gateway closes (at most 2,000 a second);
  junk-flood   the same while --junk junk downlinks (random bytes, JSON that is no JWS, forged and
               unknown-key JWS, a 150,000-character kid, a 60,000-character topic, 300 KB payloads)
               are published to the node's downlink topics, until the gateway has counted them all;
               done twice (junk_flood_1, junk_flood_2): the second shows whether memory keeps growing.
It prints p50/p99 health latency and misses (no answer within 1 s) per phase, their ratio to the
baseline, and for the junk floods: RSS growth, log bytes per junk message, alerts sent upstream.
Targets: no misses (every answer within 1 s); log under 4 bytes per junk message; the second
junk flood grows RSS by under 1 KB per message (memory is bounded, not per message); at most 2
command_rejected alerts per rejection kind (the first, and one count when the gateway stops).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiomqtt

from gateway.uplink.keys import NodeKey
from tests.load.hostile import (
    Probe,
    flood_result,
    hostile_config,
    limit_open_files,
    metrics,
    probe_health,
    rss_bytes,
    run_flood,
    socket_of,
)
from tests.load.junk import junk
from tests.support.cloud import Cloud, write_jwk
from tests.support.daemon import DaemonProcess, running_daemon, short_tmpdir
from tests.support.mosquitto import Mosquitto

NODE = "edge-hostile"
PHASES = ("baseline", "conn_flood", "junk_flood_1", "junk_flood_2")


def figures(probe: Probe) -> dict[str, Any]:
    return {
        "answers": len(probe.latencies),
        "misses": len(probe.failures),
        "p50_ms": round(probe.percentile(0.5) * 1000, 2),
        "p99_ms": round(probe.percentile(0.99) * 1000, 2),
    }


async def publish_junk(port: int, messages: list[tuple[str, bytes]]) -> None:
    quiet = logging.getLogger("bench.junk_publisher")
    quiet.setLevel(logging.ERROR)
    async with aiomqtt.Client(
        "127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5, max_inflight_messages=100, logger=quiet
    ) as client:
        for start in range(0, len(messages), 100):
            batch = messages[start : start + 100]
            await asyncio.gather(*(client.publish(f"edge/{NODE}/down/{s}", b, qos=1) for s, b in batch))


def rejected_total(values: dict[str, float]) -> float:
    return sum(v for k, v in values.items() if k.startswith("edge_gateway_downlink_rejected_total{"))


async def junk_round(
    sock: Path, daemon: DaemonProcess, port: int, messages: list[tuple[str, bytes]], count: int
) -> dict[str, Any]:
    """Publish the junk once, probing health until the gateway has counted every message."""
    before = await metrics(sock)
    rss_before, log_before = rss_bytes(daemon.proc.pid), len(daemon.output)
    publisher = asyncio.create_task(publish_junk(port, messages))
    started = time.monotonic()
    probe = Probe()
    while time.monotonic() - started < 120:
        part = await probe_health(sock, 0.5)
        probe.latencies += part.latencies
        probe.failures += part.failures
        if publisher.done() and rejected_total(await metrics(sock)) - rejected_total(before) >= count:
            break
    await publisher
    took = time.monotonic() - started
    after = await metrics(sock)
    rss_after, log_after = rss_bytes(daemon.proc.pid), len(daemon.output)
    return {
        **figures(probe),
        "seconds": round(took, 1),
        "counted": int(rejected_total(after) - rejected_total(before)),
        "rss_before_mb": round(rss_before / 2**20, 1),
        "rss_after_mb": round(rss_after / 2**20, 1),
        "rss_growth_bytes_per_msg": round((rss_after - rss_before) / count, 1),
        "log_bytes_per_msg": round((log_after - log_before) / count, 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    root = short_tmpdir()
    cloud_key = NodeKey.generate("cloud")
    jwk = write_jwk(cloud_key, root / "cloud.jwk")
    result: dict[str, Any] = {"connections": args.connections, "junk": args.junk, "file_limit": 1024}
    with Mosquitto(root / "broker") as broker:
        extra = f'[uplink]\nbroker = "{broker.url}"\ncloud_keys = ["{jwk}"]\nkeepalive_s = 5\n'
        config = hostile_config(root, api='allowed_uids = [0]\nsocket_mode = "0666"', extra=extra)
        sock = socket_of(config)
        async with (
            Cloud(broker.port, NODE, cloud_key) as cloud,
            running_daemon(config, preexec_fn=limit_open_files(1024)) as daemon,
        ):
            await cloud.wait_for(lambda u: u.says_online, timeout=30)
            await asyncio.sleep(1.0)
            result["baseline"] = figures(await probe_health(sock, args.seconds))

            flood = await run_flood(
                sock, connections=args.connections, seconds=args.seconds + 1.5, reconnect=True
            )
            await asyncio.sleep(0.5)
            result["conn_flood"] = figures(await probe_health(sock, args.seconds))
            stats = await flood_result(flood)
            result["conn_flood"]["stranger_connections"] = stats.get("connected", 0)

            messages = list(junk(cloud, args.junk))
            rss_start = rss_bytes(daemon.proc.pid)
            for round_ in (1, 2):
                figures_ = await junk_round(sock, daemon, broker.port, messages, args.junk)
                figures_["rss_start_mb"] = round(rss_start / 2**20, 1)
                result[f"junk_flood_{round_}"] = figures_
        alerts = [
            u.payload["body"]
            for u in cloud.received
            if u.topic.endswith("/up/alert") and u.payload["type"] == "command_rejected"
        ]
        result["alerts"] = len(alerts)
        result["alerts_per_kind"] = dict(Counter(a["kind"] for a in alerts))
    base = result["baseline"]
    for name in PHASES[1:]:
        for q in ("p50_ms", "p99_ms"):
            result[name][f"{q[:3]}_ratio"] = round(result[name][q] / base[q], 2) if base[q] else None
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=1100)
    parser.add_argument("--junk", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{'phase':<14}{'answers':>9}{'misses':>8}{'p50 ms':>9}{'p99 ms':>9}{'p50 x':>8}{'p99 x':>8}")
    for phase in PHASES:
        row = result[phase]
        print(
            f"{phase:<14}{row['answers']:>9}{row['misses']:>8}{row['p50_ms']:>9}{row['p99_ms']:>9}"
            f"{row.get('p50_ratio', 1.0)!s:>8}{row.get('p99_ratio', 1.0)!s:>8}"
        )
    print(f"stranger connections made (and closed at accept): {result['conn_flood']['stranger_connections']}")
    for phase in PHASES[2:]:
        jf = result[phase]
        print(
            f"{phase}: counted {jf['counted']}/{args.junk} in {jf['seconds']} s; "
            f"RSS {jf['rss_before_mb']} -> {jf['rss_after_mb']} MB "
            f"({jf['rss_growth_bytes_per_msg']} B/msg); log {jf['log_bytes_per_msg']} B/msg"
        )
    print(f"command_rejected alerts upstream: {result['alerts']} {result['alerts_per_kind']}")
    second = result["junk_flood_2"]
    ok = (
        all(result[p]["misses"] == 0 for p in PHASES)
        and all(result[p]["log_bytes_per_msg"] < 4 for p in PHASES[2:])
        and second["rss_growth_bytes_per_msg"] < 1024
        and max(result["alerts_per_kind"].values(), default=0) <= 2
    )
    print("verdict:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
