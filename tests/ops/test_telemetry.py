"""Health telemetry: real psutil figures, sent on the telemetry stream every interval."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from gateway.cloud import MemorySink, Queued
from gateway.ops.telemetry import TelemetryCollector, TelemetryLoop

FIGURES = (
    "cpu_percent",
    "load_avg",
    "memory",
    "swap",
    "disk",
    "disk_io",
    "net_io",
    "temperatures_c",
    "process",
    "loop_lag_s",
    "uptime_s",
    "system_uptime_s",
)


def test_sample_has_the_runtime_figures(tmp_path: Path) -> None:
    started = time.time() - 12.0
    collector = TelemetryCollector(tmp_path, lambda: 0.0421, started)
    sample = collector.sample()
    assert set(FIGURES) <= set(sample)
    assert 0.0 <= sample["cpu_percent"] <= 100.0
    assert len(sample["load_avg"]) == 3
    assert sample["memory"]["total"] == psutil.virtual_memory().total
    assert 0 < sample["disk"]["free_fraction"] <= 1
    assert sample["disk"]["total"] > 0
    assert sample["net_io"]["bytes_recv"] >= 0
    proc = sample["process"]
    assert proc["rss"] > 0
    # One more open file shows up in both counts.
    with (tmp_path / "held-open").open("w"):
        held = collector.sample()["process"]
    assert held["open_files"] == proc["open_files"] + 1
    assert held["fds"] >= proc["fds"] + 1
    assert sample["loop_lag_s"] == 0.0421
    assert 12.0 <= sample["uptime_s"] < 60.0
    assert sample["system_uptime_s"] > 0
    if hasattr(psutil, "sensors_temperatures") and psutil.sensors_temperatures():
        assert sample["temperatures_c"]


def test_state_dir_may_not_exist_yet(tmp_path: Path) -> None:
    collector = TelemetryCollector(tmp_path / "later" / "state", lambda: 0.0, time.time())
    assert collector.sample()["disk"]["total"] > 0


async def test_loop_sends_health_every_interval(tmp_path: Path) -> None:
    sink = MemorySink()
    seen: list[dict[str, Any]] = []
    loop = TelemetryLoop(
        TelemetryCollector(tmp_path, lambda: 0.0, time.time()), sink, 0.05, on_sample=seen.append
    )
    loop.start()
    try:
        async with asyncio.timeout(10):
            while len(sink.messages) < 3:
                sink.changed.clear()
                await sink.changed.wait()
    finally:
        await loop.close()
    assert {(stream, type_) for stream, type_, _ in sink.messages} == {("telemetry", "health")}
    assert sink.messages[0][2]["process"]["rss"] > 0
    assert len(seen) >= 3
    assert loop.sent == len(sink.messages)


class RefusingSink:
    """A sink whose storage is full: every send fails, as a full outbox does."""

    def __init__(self) -> None:
        self.attempts = 0

    async def send(self, stream: str, type: str, body: Mapping[str, Any]) -> Queued:
        self.attempts += 1
        raise OSError(28, "No space left on device")


async def test_loop_survives_a_failing_sink(tmp_path: Path) -> None:
    sink = RefusingSink()
    loop = TelemetryLoop(TelemetryCollector(tmp_path, lambda: 0.0, time.time()), sink, 0.02)
    loop.start()
    try:
        async with asyncio.timeout(10):
            while sink.attempts < 3:
                await asyncio.sleep(0.02)
    finally:
        await loop.close()
    assert loop.failures >= 3
    assert loop.sent == 0


async def test_interval_change_applies_at_once(tmp_path: Path) -> None:
    sink = MemorySink()
    loop = TelemetryLoop(TelemetryCollector(tmp_path, lambda: 0.0, time.time()), sink, 3600.0)
    loop.start()
    try:
        async with asyncio.timeout(10):
            while not sink.messages:
                sink.changed.clear()
                await sink.changed.wait()
            loop.interval_s = 0.02  # as a reload hook sets it
            while len(sink.messages) < 3:
                sink.changed.clear()
                await sink.changed.wait()
    finally:
        await loop.close()
    assert len(sink.messages) >= 3
