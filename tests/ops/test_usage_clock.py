"""Daily roll-ups through wall-clock steps both ways: each day reported once, no count lost."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from gateway.cloud import MemorySink
from gateway.ops.usage import UsageReporter, UsageTracker
from tests.ops.test_usage import DAY1, ManualClock


def total_operations(sink: MemorySink) -> int:
    return sum(d["operations"] for _s, _t, body in sink.messages for d in body["devices"].values())


async def test_forward_then_back_step_reports_each_day_once_and_keeps_every_count(tmp_path: Path) -> None:
    clock = ManualClock(DAY1)
    sink = MemorySink()
    tracker = UsageTracker(clock, tz=dt.UTC)
    reporter = UsageReporter(tracker, sink, tmp_path)
    recorded = 0
    for _ in range(3):
        tracker.record("idcard", ok=True, seconds=0.5)
        recorded += 1
    clock.advance(days=2)  # a wrong step forward: day 1 and day 2 look finished
    assert await reporter.report_due() == [dt.date(2026, 11, 2), dt.date(2026, 11, 3)]
    clock.advance(days=-2)  # corrected: back on day 1
    for _ in range(4):  # these happen on day 1 by the clock, but day 1 was already reported
        tracker.record("idcard", ok=False, seconds=1.0)
        recorded += 1
    await reporter.save()
    assert await reporter.report_due() == [], "nothing is reported twice"
    clock.advance(days=1)
    assert await reporter.report_due() == []
    # A restart on the way keeps the counts and the floor.
    await reporter.close()
    reporter = UsageReporter(UsageTracker(clock, tz=dt.UTC), sink, tmp_path)
    reporter.tracker.record("idcard", ok=True, seconds=0.1)
    recorded += 1
    clock.advance(days=2)  # now really past day 3
    days = await reporter.report_due()
    assert days == [dt.date(2026, 11, 4)]
    reported = [body["day"] for _s, _t, body in sink.messages]
    assert len(reported) == len(set(reported)), f"a day reported twice: {reported}"
    assert total_operations(sink) == recorded, "no count lost across the steps"
    assert sink.messages[-1][2]["devices"]["idcard"]["failures"] == 4


async def test_backward_step_alone_loses_nothing(tmp_path: Path) -> None:
    clock = ManualClock(DAY1)
    sink = MemorySink()
    tracker = UsageTracker(clock, tz=dt.UTC)
    reporter = UsageReporter(tracker, sink, tmp_path)
    tracker.record("printer", ok=True, seconds=1.0)
    clock.advance(hours=-30)  # back over midnight, before the tracker started
    tracker.record("printer", ok=True, seconds=1.0)
    assert await reporter.report_due() == []
    clock.advance(hours=30 + 24)
    await reporter.report_due()
    assert total_operations(sink) == 2
    reported = [body["day"] for _s, _t, body in sink.messages]
    assert len(reported) == len(set(reported))
