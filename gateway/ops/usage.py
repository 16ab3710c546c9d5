"""Device usage per device per day (operations, failures, service times) and the daily roll-up report.

Clock steps: a day is reported once, and no count is lost. Once a day is reported its figures are
closed; an operation that the wall clock places on a reported day (the clock stepped back after a
step forward let the day be reported early) or before the first day counted is counted on the
first day still open.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec
import structlog

from gateway.cloud import CloudSink
from gateway.ops.centre import StationUsage
from gateway.status import DeviceFigures, UsageDay
from gateway.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

EVENT_STREAM: Final = "event"
DAILY_TYPE: Final = "device_usage_daily"
# Service-time samples kept per device per day for the p95 (a uniform reservoir beyond this).
MAX_SAMPLES: Final = 2000


@dataclass
class _DayFigures:
    """One device on one day."""

    operations: int = 0
    failures: int = 0
    total_s: float = 0.0
    samples: list[float] = field(default_factory=list)

    def add(self, ok: bool, seconds: float, rng: random.Random, cap: int) -> None:
        self.operations += 1
        if not ok:
            self.failures += 1
        self.total_s += seconds
        if len(self.samples) < cap:
            self.samples.append(seconds)
        else:
            slot = rng.randrange(self.operations)
            if slot < cap:
                self.samples[slot] = seconds

    def summary(self) -> DeviceFigures:
        ordered = sorted(self.samples)
        p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] if ordered else None
        return DeviceFigures(
            operations=self.operations,
            failures=self.failures,
            failure_rate=round(self.failures / self.operations, 4) if self.operations else 0.0,
            mean_s=round(self.total_s / self.operations, 4) if self.operations else None,
            p95_s=round(p95, 4) if p95 is not None else None,
        )


class UsageTracker:
    """Counts each device's completed operations per calendar day (local time unless `tz` is given)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        tz: dt.tzinfo | None = None,
        devices: Iterable[str] = (),
        stations: Iterable[str] = (),
        max_samples: int = MAX_SAMPLES,
    ) -> None:
        self._clock = clock
        self._tz = tz
        self._max_samples = max_samples
        self._rng = random.Random(0x5EED)
        self.devices: set[str] = set(devices)
        self._days: dict[dt.date, dict[str, _DayFigures]] = {}
        self.since: dt.date = self.today()
        # The first day not reported yet (set by the reporter): no count goes to an earlier day.
        self.floor: dt.date | None = None
        # Per station figures (sessions, uses, ratings, heat map) ride in the same daily roll-up,
        # counted on the same day as the devices' (the clock-step rules above apply to both).
        self.stations = StationUsage(clock, day=self.counting_day, tz=tz, stations=stations)

    def today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self._clock(), self._tz).date()

    def register(self, device: str) -> None:
        """A device that appears in every roll-up, with zeros on a day it was not used."""
        self.devices.add(device)

    def counting_day(self) -> dt.date:
        """The day a count made now goes to: today, but never before the first open day."""
        today = self.today()
        # A reported day is closed, and a clock stepped back (to 1970, say) must not make the
        # reporter send every day since.
        floor = self.floor if self.floor is not None else self.since
        if today < floor:
            log.warning("usage_clock_behind_open_day", today=str(today), counted_on=str(floor))
            return floor
        return today

    def record(self, device: str, ok: bool, seconds: float) -> None:
        """One completed operation (hooked to DeviceQueue completions)."""
        self.devices.add(device)
        day = self._days.setdefault(self.counting_day(), {})
        day.setdefault(device, _DayFigures()).add(ok, max(0.0, seconds), self._rng, self._max_samples)

    def rollup(self, day: dt.date) -> UsageDay:
        """The figures of one day: every known device, zeros where unused."""
        figures = self._days.get(day, {})
        names = sorted(self.devices | set(figures))
        return UsageDay(
            day=day.isoformat(),
            devices={name: figures.get(name, _DayFigures()).summary() for name in names},
            stations=self.stations.rollup(day),
        )

    def snapshot(self) -> UsageDay:
        """Today so far (for /v1/status)."""
        return self.rollup(self.today())

    def days(self) -> list[dt.date]:
        return sorted(self._days)

    def take_live(self) -> tuple[dict[dt.date, dict[str, _DayFigures]], dict[str, Any]]:
        """Hand over (and clear) the figures counted so far, to merge them back with `put_back`."""
        live, self._days = self._days, {}
        return live, self.stations.take_live()

    def put_back(self, taken: tuple[dict[dt.date, dict[str, _DayFigures]], dict[str, Any]]) -> None:
        """Merge figures counted in this run; a day before `floor` (reported) counts on `floor`."""
        live, stations = taken
        floor = self.floor if self.floor is not None else self.since
        self.stations.restore(stations, floor=floor)
        for day, figures in live.items():
            target = max(day, floor)
            merged = self._days.setdefault(target, {})
            for name, f in figures.items():
                into = merged.setdefault(name, _DayFigures())
                into.operations += f.operations
                into.failures += f.failures
                into.total_s += f.total_s
                into.samples.extend(f.samples[: self._max_samples - len(into.samples)])

    def forget(self, through: dt.date) -> None:
        """Drop the figures of `through` and every earlier day (once reported)."""
        for day in [d for d in self._days if d <= through]:
            del self._days[day]
        self.stations.forget(through)

    def dump(self) -> dict[str, Any]:
        """Plain data for the state file, so a restart keeps the day's counts."""
        return {
            "since": self.since.isoformat(),
            "devices": sorted(self.devices),
            "days": {
                day.isoformat(): {
                    name: {
                        "operations": f.operations,
                        "failures": f.failures,
                        "total_s": f.total_s,
                        "samples": f.samples,
                    }
                    for name, f in figures.items()
                }
                for day, figures in self._days.items()
            },
            "stations": self.stations.dump(),
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Merge a dump written by an earlier run (counts add up; the earliest `since` wins)."""
        self.since = min(self.since, dt.date.fromisoformat(data["since"]))
        self.devices.update(data.get("devices", ()))
        for day_text, figures in data.get("days", {}).items():
            day = self._days.setdefault(dt.date.fromisoformat(day_text), {})
            for name, raw in figures.items():
                f = day.setdefault(name, _DayFigures())
                f.operations += int(raw["operations"])
                f.failures += int(raw["failures"])
                f.total_s += float(raw["total_s"])
                f.samples.extend(float(s) for s in raw["samples"][: self._max_samples - len(f.samples)])
        self.stations.restore(data.get("stations", {}))


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temp file, fsync, rename: a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class UsageReporter:
    """Sends each finished day's roll-up once on the `event` stream, surviving restarts.

    The last reported day lives in `<state_dir>/usage/last_reported` and the running counts in
    `<state_dir>/usage/usage.json`, so a restart neither resends a day nor skips one.
    """

    def __init__(
        self,
        tracker: UsageTracker,
        sink: CloudSink,
        state_dir: Path,
        *,
        interval_s: float = 60.0,
    ) -> None:
        self.tracker = tracker
        self.sink = sink
        self.interval_s = interval_s
        self.directory = Path(state_dir) / "usage"
        self.marker = self.directory / "last_reported"
        self.counts_file = self.directory / "usage.json"
        self.last_reported: dt.date | None = None
        self._task: asyncio.Task[None] | None = None
        self._loaded = False

    def load(self) -> None:
        """Read the marker and merge the saved counts (once, before the first report)."""
        if self._loaded:
            return
        self._loaded = True
        # Counted before the load (this run): never dropped with the reported days below.
        live = self.tracker.take_live()
        with contextlib.suppress(FileNotFoundError):
            text = self.marker.read_text(encoding="utf-8").strip()
            try:
                self.last_reported = dt.date.fromisoformat(text)
            except ValueError:
                log.warning("usage_marker_unreadable", path=str(self.marker))
        with contextlib.suppress(FileNotFoundError):
            try:
                self.tracker.restore(json.loads(self.counts_file.read_text(encoding="utf-8")))
            except (ValueError, KeyError, TypeError) as err:
                log.warning("usage_counts_unreadable", path=str(self.counts_file), error=str(err))
        if self.last_reported is not None:
            self.tracker.forget(self.last_reported)
            self.tracker.floor = self.last_reported + dt.timedelta(days=1)
        self.tracker.put_back(live)

    def due(self) -> list[dt.date]:
        """Finished days not reported yet, oldest first."""
        today = self.tracker.today()
        first = self.tracker.since
        if self.last_reported is not None:
            first = max(first, self.last_reported + dt.timedelta(days=1))
        return [first + dt.timedelta(days=n) for n in range(max(0, (today - first).days))]

    async def report_due(self) -> list[dt.date]:
        """Send every due day; stops at the first failure so the next tick retries it."""
        self.load()
        sent = []
        for day in self.due():
            figures = self.tracker.rollup(day)
            try:
                await self.sink.send(EVENT_STREAM, DAILY_TYPE, msgspec.to_builtins(figures))
            except Exception as err:
                log.warning("usage_report_failed", day=day.isoformat(), error=str(err))
                break
            # Queued before the marker is written: a crash in between resends the day once
            # (at least once), never skips it.
            self.last_reported = day
            self.tracker.forget(day)
            self.tracker.floor = day + dt.timedelta(days=1)
            sent.append(day)
            await asyncio.to_thread(_write_atomic, self.marker, day.isoformat() + "\n")
            log.info("usage_reported", day=day.isoformat(), devices=len(figures.devices))
        return sent

    async def save(self) -> None:
        """Persist the running counts."""
        await asyncio.to_thread(_write_atomic, self.counts_file, json.dumps(self.tracker.dump()))

    def start(self) -> None:
        if self._task is None:
            self.load()
            self._task = asyncio.create_task(self._run(), name="usage-reporter")

    async def _run(self) -> None:
        while True:
            try:
                await self.report_due()
                await self.save()
            except OSError as err:
                log.warning("usage_state_write_failed", error=str(err))
            await asyncio.sleep(self.interval_s)

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self._loaded:
            try:
                await self.save()
            except OSError as err:
                log.warning("usage_state_write_failed", error=str(err))
