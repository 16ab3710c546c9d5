"""The centre's figures per station ride in the daily roll-up with the devices' figures: counted on
the same day through clock steps, kept across a restart, reported once."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from gateway.cloud import MemorySink
from gateway.ops.usage import UsageReporter, UsageTracker
from tests.ops.test_usage import DAY1, ManualClock


def station_totals(sink: MemorySink, key: str) -> dict[str, int]:
    totals: dict[str, int] = {}
    for _stream, _type, body in sink.messages:
        for name, figures in body["stations"].items():
            totals[name] = totals.get(name, 0) + figures[key]
    return totals


async def test_station_figures_in_the_roll_up_through_a_clock_step_and_a_restart(tmp_path: Path) -> None:
    clock = ManualClock(DAY1)
    sink = MemorySink()
    tracker = UsageTracker(clock, tz=dt.UTC, stations=["k1", "k2"])
    reporter = UsageReporter(tracker, sink, tmp_path)
    tracker.stations.session_started("k1")
    tracker.stations.session_ended("k1", 120.0, used=True)
    tracker.stations.transaction("k1")
    tracker.stations.feedback("k1", 2, complaint=True)
    clock.advance(days=1)
    assert await reporter.report_due() == [dt.date(2026, 11, 2)]
    day1 = sink.messages[0][2]["stations"]
    assert day1["k2"]["sessions"] == 0 and day1["k2"]["complaint_rate"] == 0.0  # every station listed
    assert day1["k1"]["uses"] == 1 and day1["k1"]["mean_session_s"] == 120.0
    assert day1["k1"]["complaint_rate"] == 1.0 and sum(day1["k1"]["hourly_sessions"]) == 1

    clock.advance(days=-1)  # the clock steps back onto the reported day: counted on the open day
    tracker.stations.session_started("k2")
    tracker.stations.feedback("k2", 5, complaint=False)
    await reporter.close()  # saves the running counts

    tracker = UsageTracker(clock, tz=dt.UTC, stations=["k1", "k2"])
    reporter = UsageReporter(tracker, sink, tmp_path)
    tracker.stations.session_started("k2")  # counted before the reporter loads: not dropped
    clock.advance(days=2)
    assert await reporter.report_due() == [dt.date(2026, 11, 3)]
    assert station_totals(sink, "sessions") == {"k1": 1, "k2": 2}
    assert station_totals(sink, "rated") == {"k1": 1, "k2": 1}
    await reporter.close()
