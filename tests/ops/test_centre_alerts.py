"""The plan's centre rules: complaints reach 5% of rated sessions (YELLOW); 15% of the node's devices
failed past a grace period (RED). Each raised once and cleared once, naming what is concerned."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.cloud import MemorySink
from gateway.ops.alerts import COMPLAINT_RATE, DEVICE_FAILURE_SHARE, AlertEngine
from tests.ops.test_alerts import ManualClock


@pytest.fixture
async def engine(sink: MemorySink, clock: ManualClock) -> AsyncIterator[AlertEngine]:
    engine = AlertEngine(sink, clock=clock)
    engine.start()
    yield engine
    await engine.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


def changes(sink: MemorySink, rule: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (type_, body) for stream, type_, body in sink.messages if stream == "alert" and body["rule"] == rule
    ]


async def test_complaint_rate_crossing_five_percent_raises_once_and_clears_once(
    engine: AlertEngine, sink: MemorySink
) -> None:
    for _ in range(19):
        engine.record_feedback(complaint=False)
    engine.record_feedback(complaint=True)  # 1 of 20 = 5%: at the line
    engine.record_feedback(complaint=True)  # 2 of 21: still raised, not raised again
    await engine.flush()
    raised = changes(sink, COMPLAINT_RATE)
    assert [t for t, _ in raised] == ["alert_raised"]
    assert raised[0][1]["severity"] == "yellow" and raised[0][1]["value"] >= 0.05
    for _ in range(40):  # 2 of 61 = 3.3%: above the clear line
        engine.record_feedback(complaint=False)
    await engine.flush()
    assert [t for t, _ in changes(sink, COMPLAINT_RATE)] == ["alert_raised"]
    for _ in range(10):  # 2 of 71 = 2.8%: below 3%, cleared once
        engine.record_feedback(complaint=False)
    await engine.flush()
    done = changes(sink, COMPLAINT_RATE)
    assert [t for t, _ in done] == ["alert_raised", "alert_cleared"]
    assert done[0][1]["id"] == done[1][1]["id"]


async def test_complaints_below_the_minimum_sample_raise_nothing(
    engine: AlertEngine, sink: MemorySink
) -> None:
    for _ in range(5):
        engine.record_feedback(complaint=True)
    await engine.flush()
    assert changes(sink, COMPLAINT_RATE) == []


async def test_two_of_ten_devices_failed_past_grace_raise_red_naming_stations(
    engine: AlertEngine, sink: MemorySink
) -> None:
    grace = engine.rules.share_grace_s
    devices = {f"d{i}": ("online", 1000.0) for i in range(10)}
    where = {f"d{i}": f"k{i}" for i in range(10)}
    devices["d3"] = ("no_device", grace + 1)
    devices["d7"] = ("hardware_error", grace - 5)  # still within its grace
    engine.evaluate_device_share(devices, where)
    await engine.flush()
    assert changes(sink, DEVICE_FAILURE_SHARE) == []  # 1 of 10 = 10%
    devices["d7"] = ("hardware_error", grace + 1)
    engine.evaluate_device_share(devices, where)
    engine.evaluate_device_share(devices, where)
    await engine.flush()
    raised = changes(sink, DEVICE_FAILURE_SHARE)
    assert [t for t, _ in raised] == ["alert_raised"]
    body = raised[0][1]
    assert body["severity"] == "red" and body["value"] == 0.2
    assert "d3 (k3)" in body["detail"] and "d7 (k7)" in body["detail"]
    # A user's mistake (paper out) and busy are not failures; one device back: 10% < clear line.
    devices["d3"] = ("online", 0.0)
    devices["d5"] = ("user_error", grace + 100)
    devices["d6"] = ("busy", grace + 100)
    engine.evaluate_device_share(devices, where)
    await engine.flush()
    assert changes(sink, DEVICE_FAILURE_SHARE) == raised  # 10% is not below the 10% clear line
    devices["d7"] = ("online", 0.0)
    engine.evaluate_device_share(devices, where)
    await engine.flush()
    assert [t for t, _ in changes(sink, DEVICE_FAILURE_SHARE)] == ["alert_raised", "alert_cleared"]
