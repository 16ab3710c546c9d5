"""Red/yellow/blue alerts: raised once at the threshold, cleared once below it, remedies run once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.cloud import MemorySink
from gateway.ops.alerts import (
    DEVICE_FAILURE_RATE,
    DISK_NEARLY_FULL,
    LOOP_LAG,
    OUTBOX_BACKLOG,
    SESSION_ERROR_RATE,
    WATCHDOG_SLACK,
    Alert,
    AlertEngine,
    system_sample,
)
from gateway.status import SystemSample


class ManualClock:
    """Monotonic seconds that the test moves forward."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
async def engine(sink: MemorySink, clock: ManualClock) -> AsyncIterator[AlertEngine]:
    engine = AlertEngine(sink, clock=clock)
    engine.start()
    yield engine
    await engine.close()


def alerts(sink: MemorySink) -> list[tuple[str, dict[str, Any]]]:
    assert all(stream == "alert" for stream, _, _ in sink.messages)
    return [(type_, body) for _, type_, body in sink.messages]


async def test_device_failure_rate_raises_once_and_clears_once(
    engine: AlertEngine, sink: MemorySink, clock: ManualClock
) -> None:
    for _ in range(17):
        engine.record_device_op("idcard", ok=True)
        clock.now += 1
    engine.record_device_op("idcard", ok=False)
    engine.record_device_op("idcard", ok=False)
    await engine.flush()
    assert sink.messages == []  # 2 of 19: under 15%

    engine.record_device_op("idcard", ok=False)  # 3 of 20 = 15%: the threshold
    await engine.flush()
    sent = alerts(sink)
    assert [t for t, _ in sent] == ["alert_raised"]
    raised = sent[0][1]
    assert raised["severity"] == "red"
    assert raised["rule"] == DEVICE_FAILURE_RATE
    assert raised["subject"] == "idcard"
    assert raised["value"] == 0.15
    assert raised["threshold"] == 0.15
    assert set(raised) == {"id", "severity", "rule", "subject", "detail", "value", "threshold"}
    assert [a.id for a in engine.active()] == [raised["id"]]

    for _ in range(5):  # worse and worse: no repeat
        engine.record_device_op("idcard", ok=False)
    await engine.flush()
    assert len(sink.messages) == 1

    # 8 failures; the rate must fall under 10% to clear: 8/80 = 10% still holds, 8/81 clears.
    for _ in range(55):
        engine.record_device_op("idcard", ok=True)
    await engine.flush()
    assert len(sink.messages) == 1
    engine.record_device_op("idcard", ok=True)
    await engine.flush()
    sent = alerts(sink)
    assert [t for t, _ in sent] == ["alert_raised", "alert_cleared"]
    assert sent[1][1]["id"] == raised["id"]
    assert sent[1][1]["value"] < 0.10
    for _ in range(50):
        engine.record_device_op("idcard", ok=True)
    await engine.flush()
    assert len(sink.messages) == 2
    assert engine.active() == []


async def test_device_window_slides_and_needs_min_samples(
    engine: AlertEngine, sink: MemorySink, clock: ManualClock
) -> None:
    for _ in range(9):
        engine.record_device_op("printer", ok=False)
    await engine.flush()
    assert sink.messages == []  # 9 samples: under the minimum of 10
    engine.record_device_op("printer", ok=False)
    await engine.flush()
    assert [t for t, _ in alerts(sink)] == ["alert_raised"]

    clock.now += 16 * 60  # every failure leaves the 15-minute window
    engine.evaluate()
    await engine.flush()
    assert len(sink.messages) == 1  # no evidence either way: the alert stands
    for _ in range(10):
        engine.record_device_op("printer", ok=True)
    await engine.flush()
    assert [t for t, _ in alerts(sink)] == ["alert_raised", "alert_cleared"]

    # Devices are judged apart.
    for _ in range(10):
        engine.record_device_op("idcard", ok=True)
    await engine.flush()
    assert len(sink.messages) == 2


async def test_session_error_rate_is_yellow(engine: AlertEngine, sink: MemorySink) -> None:
    for _ in range(19):
        engine.record_session(ok=True)
    engine.record_session(ok=False)  # 1 of 20 = 5%
    await engine.flush()
    sent = alerts(sink)
    assert [t for t, _ in sent] == ["alert_raised"]
    assert sent[0][1]["severity"] == "yellow"
    assert sent[0][1]["rule"] == SESSION_ERROR_RATE
    for _ in range(13):  # 1 of 33 = 3.03%: still raised
        engine.record_session(ok=True)
    await engine.flush()
    assert len(sink.messages) == 1
    engine.record_session(ok=True)  # 1 of 34 = 2.9%
    await engine.flush()
    assert [t for t, _ in alerts(sink)] == ["alert_raised", "alert_cleared"]


async def test_blue_rules_with_hysteresis_and_remedies(engine: AlertEngine, sink: MemorySink) -> None:
    remedied: list[Alert] = []

    async def shed_telemetry(alert: Alert) -> None:
        remedied.append(alert)

    engine.add_remedy(DISK_NEARLY_FULL, shed_telemetry)
    engine.add_remedy(OUTBOX_BACKLOG, remedied.append)

    engine.evaluate_system(SystemSample(loop_lag_s=0.6, disk_free_fraction=0.5, watchdog_slack_s=12.0))
    engine.evaluate_system(SystemSample(loop_lag_s=0.4))  # under the raise line, over the clear line
    engine.evaluate_system(SystemSample(loop_lag_s=0.7))
    await engine.flush()
    assert [(t, b["rule"]) for t, b in alerts(sink)] == [("alert_raised", LOOP_LAG)]
    engine.evaluate_system(SystemSample(loop_lag_s=0.1))
    await engine.flush()
    assert [(t, b["rule"]) for t, b in alerts(sink)][-1] == ("alert_cleared", LOOP_LAG)

    # The free disk as a telemetry sample gives it.
    engine.evaluate_system(system_sample({"disk": {"free_fraction": 0.03}}))
    engine.evaluate_system(system_sample({"disk": {"free_fraction": 0.06}}))
    await engine.flush()
    assert [a.rule for a in remedied] == [DISK_NEARLY_FULL]
    engine.evaluate_system(SystemSample(disk_free_fraction=0.09))
    engine.evaluate_system(SystemSample(watchdog_slack_s=3.0))
    engine.evaluate_system(SystemSample(watchdog_slack_s=8.0))
    engine.evaluate_system(SystemSample(watchdog_slack_s=11.0))
    await engine.flush()
    tail = [(t, b["rule"], b["severity"]) for t, b in alerts(sink)][2:]
    assert tail == [
        ("alert_raised", DISK_NEARLY_FULL, "blue"),
        ("alert_cleared", DISK_NEARLY_FULL, "blue"),
        ("alert_raised", WATCHDOG_SLACK, "blue"),
        ("alert_cleared", WATCHDOG_SLACK, "blue"),
    ]


async def test_outbox_backlog_growing(engine: AlertEngine, sink: MemorySink) -> None:
    shed: list[str] = []
    engine.add_remedy(OUTBOX_BACKLOG, lambda alert: shed.append(alert.subject))
    for backlog in (10, 20, 30, 40, 50):  # four growths
        engine.evaluate_system(SystemSample(outbox_backlog=backlog))
    await engine.flush()
    assert sink.messages == []
    engine.evaluate_system(SystemSample(outbox_backlog=60))  # the fifth
    for backlog in (70, 80, 75):
        engine.evaluate_system(SystemSample(outbox_backlog=backlog))
    await engine.flush()
    assert [t for t, _ in alerts(sink)] == ["alert_raised"]
    assert shed == ["outbox"]
    engine.evaluate_system(SystemSample(outbox_backlog=70))  # second shrink in a row
    await engine.flush()
    assert [t for t, _ in alerts(sink)] == ["alert_raised", "alert_cleared"]


async def test_a_failing_remedy_does_not_stop_alerts(engine: AlertEngine, sink: MemorySink) -> None:
    def broken(_alert: Alert) -> None:
        raise RuntimeError("cannot reopen")

    engine.add_remedy(DEVICE_FAILURE_RATE, broken)
    for _ in range(10):
        engine.record_device_op("camera", ok=False)
    engine.evaluate_system(SystemSample(loop_lag_s=2.0))
    await engine.flush()
    assert [b["rule"] for _, b in alerts(sink)] == [DEVICE_FAILURE_RATE, LOOP_LAG]
