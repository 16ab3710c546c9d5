"""Health telemetry: runtime figures sampled with psutil and sent on the `telemetry` stream."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import structlog

from gateway.cloud import CloudSink
from gateway.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

TELEMETRY_STREAM = "telemetry"
HEALTH_TYPE = "health"


def _round(value: float, digits: int = 3) -> float:
    return round(float(value), digits)


class TelemetryCollector:
    """Samples host and process figures; every call is cheap, so sampling stays on the event loop."""

    def __init__(self, state_dir: Path, loop_lag: Callable[[], float], started_at: float) -> None:
        self.state_dir = Path(state_dir)
        self._loop_lag = loop_lag
        self.started_at = started_at
        self._process = psutil.Process(os.getpid())
        # cpu_percent(interval=None) compares with the previous call: prime both counters now so
        # the first sample is a real figure, not 0.0.
        psutil.cpu_percent(interval=None)
        self._process.cpu_percent(interval=None)

    def _disk(self) -> dict[str, Any]:
        target = self.state_dir
        while not target.exists() and target != target.parent:
            target = target.parent
        usage = psutil.disk_usage(str(target))
        st = os.statvfs(target)
        return {
            "total": usage.total,
            "used": usage.used,
            "free": usage.free,
            "percent": usage.percent,
            "free_fraction": _round(usage.free / usage.total if usage.total else 0.0, 4),
            "inodes_free_fraction": _round(st.f_favail / st.f_files, 4) if st.f_files else None,
        }

    @staticmethod
    def _disk_io() -> dict[str, Any] | None:
        counters = psutil.disk_io_counters(perdisk=False)
        if counters is None:
            return None
        return {
            "read_bytes": counters.read_bytes,
            "write_bytes": counters.write_bytes,
            "read_count": counters.read_count,
            "write_count": counters.write_count,
        }

    @staticmethod
    def _net_io() -> dict[str, Any]:
        counters = psutil.net_io_counters(pernic=False)
        return {
            "bytes_sent": counters.bytes_sent,
            "bytes_recv": counters.bytes_recv,
            "packets_sent": counters.packets_sent,
            "packets_recv": counters.packets_recv,
            "errin": counters.errin,
            "errout": counters.errout,
            "dropin": counters.dropin,
            "dropout": counters.dropout,
        }

    @staticmethod
    def _temperatures() -> dict[str, float]:
        """Hottest reading per sensor chip, where the platform reports any."""
        reader = getattr(psutil, "sensors_temperatures", None)
        if reader is None:
            return {}
        try:
            sensors = reader()
        except (OSError, RuntimeError):
            return {}
        return {
            chip: _round(max(entry.current for entry in entries), 1)
            for chip, entries in sensors.items()
            if entries
        }

    def _process_figures(self) -> dict[str, Any]:
        proc = self._process
        with proc.oneshot():
            memory = proc.memory_info()
            figures: dict[str, Any] = {
                "rss": memory.rss,
                "vms": memory.vms,
                "cpu_percent": _round(proc.cpu_percent(interval=None), 1),
                "threads": proc.num_threads(),
                "fds": proc.num_fds(),
            }
        try:
            figures["open_files"] = len(proc.open_files())
        except psutil.Error:
            figures["open_files"] = None
        return figures

    def sample(self) -> dict[str, Any]:
        """One health sample: CPU, load, memory, swap, disk, I/O, temperatures, process, loop, uptime."""
        now = time.time()
        memory = psutil.virtual_memory()
        swap = psutil.swap_memory()
        load1, load5, load15 = psutil.getloadavg()
        return {
            "ts": _round(now),
            "cpu_percent": _round(psutil.cpu_percent(interval=None), 1),
            "cpu_count": psutil.cpu_count(),
            "load_avg": [_round(load1, 2), _round(load5, 2), _round(load15, 2)],
            "memory": {
                "total": memory.total,
                "available": memory.available,
                "used": memory.used,
                "percent": memory.percent,
            },
            "swap": {"total": swap.total, "used": swap.used, "percent": swap.percent},
            "disk": self._disk(),
            "disk_io": self._disk_io(),
            "net_io": self._net_io(),
            "temperatures_c": self._temperatures(),
            "process": self._process_figures(),
            "loop_lag_s": _round(self._loop_lag(), 4),
            "uptime_s": _round(max(0.0, now - self.started_at), 1),
            "system_uptime_s": _round(max(0.0, now - psutil.boot_time()), 1),
        }


class TelemetryLoop:
    """Sends a `telemetry`/`health` sample every `interval_s` (changeable live on reload)."""

    def __init__(
        self,
        collector: TelemetryCollector,
        sink: CloudSink,
        interval_s: float,
        *,
        on_sample: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.collector = collector
        self.sink = sink
        self._interval_s = interval_s
        self.sent = 0
        self.failures = 0
        self._on_sample = on_sample
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="telemetry")

    @property
    def interval_s(self) -> float:
        return self._interval_s

    @interval_s.setter
    def interval_s(self, value: float) -> None:
        """A new interval applies at once (reload, or a remedy shedding telemetry)."""
        self._interval_s = value
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            ticked = loop.time()
            await self.tick()
            # Sleep until the next tick, re-measured whenever `interval_s` is set.
            while (remaining := ticked + self.interval_s - loop.time()) > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._wake.wait()

    async def tick(self) -> None:
        """Sample once and send; a failure is logged and the next tick tries again."""
        try:
            sample = self.collector.sample()
        except (OSError, psutil.Error) as err:
            self.failures += 1
            log.warning("telemetry_sample_failed", error=str(err))
            return
        if self._on_sample is not None:
            try:
                self._on_sample(sample)
            except Exception:
                log.exception("telemetry_listener_failed")
        try:
            await self.sink.send(TELEMETRY_STREAM, HEALTH_TYPE, sample)
        except Exception as err:
            # A full or closed outbox must not stop sampling; the outbox raises its own alerts.
            self.failures += 1
            log.warning("telemetry_send_failed", error=str(err))
            return
        self.sent += 1

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
