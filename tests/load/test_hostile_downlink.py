"""Downlink junk through the real daemon and a real mosquitto: bounded memory, log and alerts.

5,000 junk messages (random bytes, JSON that is no JWS, forged and unknown-key JWS, a 150,000-character kid,
a 60 KB topic, 300 KB payloads) and retained junk that must not come back at every connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.uplink.keys import NodeKey
from tests.load.hostile import hostile_config, metrics, rss_bytes, socket_of
from tests.load.junk import junk
from tests.support.cloud import Cloud, write_jwk
from tests.support.daemon import DaemonProcess, running_daemon, short_tmpdir
from tests.support.mosquitto import Mosquitto

NODE = "edge-hostile"
JUNK = 5000


@pytest.fixture
def root() -> Iterator[Path]:
    path = short_tmpdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def uplink(broker: Mosquitto, jwk: Path) -> str:
    return f"""
[uplink]
broker = "{broker.url}"
cloud_keys = ["{jwk}"]
keepalive_s = 5
backoff_min_s = 0.2
backoff_max_s = 1.0
"""


async def publish_all(port: int, messages: list[tuple[str, bytes]], *, retain: bool = False) -> None:
    """Publish as a stranger with publish rights on the node's downlink topics (QoS 1)."""
    quiet = logging.getLogger("tests.load.junk_publisher")
    quiet.setLevel(logging.ERROR)  # aiomqtt warns about every publish beyond 10 in flight
    async with aiomqtt.Client(
        "127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5, max_inflight_messages=100, logger=quiet
    ) as client:
        for start in range(0, len(messages), 100):
            batch = messages[start : start + 100]
            await asyncio.gather(
                *(
                    client.publish(f"edge/{NODE}/down/{suffix}", body, qos=1, retain=retain)
                    for suffix, body in batch
                )
            )


def rejected(figures: dict[str, float]) -> dict[str, float]:
    prefix = 'edge_gateway_downlink_rejected_total{kind="'
    return {name[len(prefix) : -2]: value for name, value in figures.items() if name.startswith(prefix)}


async def settle(sock: Path, total: int, timeout: float = 120.0) -> dict[str, float]:
    """Wait until the gateway has counted `total` rejections (or they stop coming in)."""
    deadline = time.monotonic() + timeout
    last, still = -1.0, 0
    while time.monotonic() < deadline:
        counts = rejected(await metrics(sock))
        seen = sum(counts.values())
        if seen >= total:
            return counts
        still = still + 1 if seen == last else 0
        if still >= 20:
            break
        last = seen
        await asyncio.sleep(0.25)
    return rejected(await metrics(sock))


def command_alerts(cloud: Cloud, start: int = 0) -> list[dict[str, Any]]:
    return [
        u.payload["body"]
        for u in cloud.received[start:]
        if u.topic.endswith("/up/alert") and u.payload["type"] == "command_rejected"
    ]


async def online(cloud: Cloud, start: int) -> None:
    await cloud.wait_for(lambda u: u.says_online, start=start, timeout=30)


def output_bytes(daemon: DaemonProcess) -> int:
    return sum(len(line) + 1 for line in daemon.stdout_lines + daemon.stderr_lines)


async def test_junk_downlinks_cost_bounded_memory_log_and_alerts(root: Path) -> None:
    cloud_key = NodeKey.generate("cloud")
    jwk = write_jwk(cloud_key, root / "cloud.jwk")
    with Mosquitto(root / "broker") as broker:
        config = hostile_config(root, extra=uplink(broker, jwk))
        sock = socket_of(config)
        async with Cloud(broker.port, NODE, cloud_key) as cloud:
            # Retained junk waits on the broker before the gateway ever connects.
            retained = [(f"retained/{i}", b"retained junk %d" % i) for i in range(20)]
            await publish_all(broker.port, retained, retain=True)
            async with running_daemon(config) as daemon:
                await online(cloud, 0)
                messages = list(junk(cloud, JUNK))
                await asyncio.sleep(1.0)
                assert sum(rejected(await metrics(sock)).values()) == 0, "retained junk was delivered"
                rss_before, log_before = rss_bytes(daemon.proc.pid), output_bytes(daemon)
                # Over the Maximum Packet Size the gateway asked for: the broker never sends it,
                # so it is not even counted (the total below is exactly the flood).
                await publish_all(broker.port, [("config.set", bytes(1_000_000))])
                await publish_all(broker.port, messages)
                counts = await settle(sock, JUNK)
                rss_after, log_after = rss_bytes(daemon.proc.pid), output_bytes(daemon)
                # The same again: bounded memory stays where the first flood left it.
                await publish_all(broker.port, messages)
                again = await settle(sock, 2 * JUNK)
                rss_again = rss_bytes(daemon.proc.pid)
                longest = max(len(line) for line in daemon.stdout_lines + daemon.stderr_lines)
                # The link still works for the real cloud.
                ping = await cloud.send("ping", {})
                await cloud.wait_for(
                    lambda u: (
                        u.topic.endswith("/up/event")
                        and u.payload["type"] == "command_result"
                        and u.payload["body"]["id"] == ping
                    )
                )
            mark = len(cloud.received)
            # Restarted: the retained junk is not delivered again, and the last summaries go up.
            async with running_daemon(config):
                await online(cloud, mark)
                total = sum(counts.values())
                with contextlib.suppress(AssertionError):
                    await cloud.wait_for(
                        lambda _u: sum(a["count"] for a in command_alerts(cloud)) >= 2 * total
                    )
                after_restart = rejected(await metrics(sock))
            alerts = command_alerts(cloud)

    assert total == JUNK, counts
    for kind in ("malformed", "forged", "unknown_kid", "oversize"):
        assert counts.get(kind, 0) > 0, counts
    assert sum(after_restart.values()) == 0, after_restart
    assert sum(again.values()) == 2 * JUNK, again
    # Memory: what the bounded queues can hold (128 + 64 messages of at most 256 KiB) at most, and
    # no growth with more junk (the old intake grew by ~45 KB per junk message: 226 MB for 5,000).
    assert rss_after - rss_before < 64 * 1024 * 1024, (rss_before, rss_after)
    assert rss_again - rss_after < 8 * 1024 * 1024, (rss_after, rss_again)
    # Log: a few lines per kind, not two per message; no line carries the huge kid or topic.
    assert (log_after - log_before) / JUNK < 4, (log_before, log_after)
    assert longest < 4000, longest
    # Alerts: at most the first and one summary per kind, and their counts add up to the total.
    per_kind = Counter(alert["kind"] for alert in alerts)
    assert per_kind and max(per_kind.values()) <= 2, per_kind
    assert sum(alert["count"] for alert in alerts) == 2 * total, [(a["kind"], a["count"]) for a in alerts]
    assert all(len(str(alert)) < 1000 for alert in alerts), max(alerts, key=lambda a: len(str(a)))
