"""Device usage per day, and the daily roll-up sent once across restarts."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import msgspec

from gateway.cloud import MemorySink
from gateway.ops.usage import UsageReporter, UsageTracker

DAY1 = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)


class ManualClock:
    """Wall-clock seconds that the test moves forward."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta).total_seconds()


def test_rollup_figures() -> None:
    clock = ManualClock(DAY1)
    tracker = UsageTracker(clock, tz=dt.UTC, devices=["camera"])
    for n in range(1, 21):
        tracker.record("idcard", ok=n % 5 != 0, seconds=n / 10)
    tracker.record("printer", ok=True, seconds=2.0)
    rollup = tracker.rollup(DAY1.date())
    assert rollup.day == "2026-11-02"
    idcard = rollup.devices["idcard"]
    assert idcard.operations == 20
    assert idcard.failures == 4
    assert idcard.failure_rate == 0.2
    assert idcard.mean_s == 1.05
    assert idcard.p95_s == 1.9
    assert rollup.devices["printer"].p95_s == 2.0
    assert msgspec.to_builtins(rollup.devices["camera"]) == {
        "operations": 0,
        "failures": 0,
        "failure_rate": 0.0,
        "mean_s": None,
        "p95_s": None,
    }
    assert tracker.snapshot() == rollup
    clock.advance(days=1)
    tracker.record("idcard", ok=True, seconds=0.5)
    assert tracker.rollup(DAY1.date()).devices["idcard"].operations == 20
    assert tracker.snapshot().devices["idcard"].operations == 1


def test_reservoir_keeps_memory_flat() -> None:
    tracker = UsageTracker(ManualClock(DAY1), tz=dt.UTC, max_samples=100)
    for n in range(10_000):
        tracker.record("printer", ok=True, seconds=1.0 if n % 2 else 3.0)
    figures = tracker.rollup(DAY1.date()).devices["printer"]
    assert figures.operations == 10_000
    assert figures.mean_s == 2.0
    assert figures.p95_s == 3.0
    assert len(tracker.dump()["days"]["2026-11-02"]["printer"]["samples"]) == 100


async def test_daily_report_once_across_restarts(tmp_path: Path) -> None:
    clock = ManualClock(DAY1)
    sink = MemorySink()
    tracker = UsageTracker(clock, tz=dt.UTC)
    reporter = UsageReporter(tracker, sink, tmp_path)
    tracker.record("idcard", ok=True, seconds=0.4)
    tracker.record("idcard", ok=False, seconds=3.0)
    assert await reporter.report_due() == []  # the day is not over

    clock.advance(days=1)
    assert await reporter.report_due() == [DAY1.date()]
    assert await reporter.report_due() == []
    assert len(sink.messages) == 1
    stream, type_, body = sink.messages[0]
    assert (stream, type_) == ("event", "device_usage_daily")
    assert body["day"] == "2026-11-02"
    assert body["devices"]["idcard"]["operations"] == 2
    assert body["devices"]["idcard"]["failures"] == 1
    assert (tmp_path / "usage" / "last_reported").read_text().strip() == "2026-11-02"

    # Day 2 is used, saved, and the daemon restarts before midnight: nothing is resent.
    tracker.record("printer", ok=True, seconds=1.0)
    await reporter.save()
    await reporter.close()
    restarted = UsageReporter(UsageTracker(clock, tz=dt.UTC), sink, tmp_path)
    assert await restarted.report_due() == []
    restarted.tracker.record("printer", ok=True, seconds=3.0)
    await restarted.save()

    # Down over two midnights: both missed days are sent on the next start, day 2 with its counts.
    clock.advance(days=2)
    again = UsageReporter(UsageTracker(clock, tz=dt.UTC), sink, tmp_path)
    days = await again.report_due()
    assert days == [dt.date(2026, 11, 3), dt.date(2026, 11, 4)]
    day2 = sink.messages[1][2]
    assert day2["devices"]["printer"]["operations"] == 2
    assert day2["devices"]["printer"]["mean_s"] == 2.0
    assert sink.messages[2][2]["day"] == "2026-11-04"
    assert sink.messages[2][2]["devices"]["printer"]["operations"] == 0
    assert len(sink.messages) == 3


async def test_reporter_task_reports_and_saves(tmp_path: Path) -> None:
    clock = ManualClock(DAY1)
    sink = MemorySink()
    tracker = UsageTracker(clock, tz=dt.UTC)
    tracker.record("camera", ok=True, seconds=0.2)
    clock.advance(days=1)
    reporter = UsageReporter(tracker, sink, tmp_path, interval_s=0.01)
    reporter.start()
    try:
        await sink.changed.wait()
    finally:
        await reporter.close()
    assert sink.messages[0][1] == "device_usage_daily"
    saved = json.loads((tmp_path / "usage" / "usage.json").read_text())
    assert saved["since"] == "2026-11-02"
    assert "2026-11-02" not in saved["days"]
