"""Alerts and usage roll-ups fed by device operations, sessions and system samples, with their remedies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import structlog

from drivers.base import DeviceEvent, UserActionNeeded
from gateway.cloud import CloudSink
from gateway.config import GatewayConfig
from gateway.devices import DeviceManager
from gateway.ops.alerts import (
    DEVICE_FAILURE_RATE,
    FAILED_STATES,
    OUTBOX_BACKLOG,
    Alert,
    AlertEngine,
    AlertRules,
    system_sample,
)
from gateway.ops.telemetry import TelemetryCollector, TelemetryLoop
from gateway.ops.usage import UsageReporter, UsageTracker
from gateway.sessions import Session, SessionRegistry
from gateway.stations import StationMap

log = structlog.get_logger(__name__)


class Supervision:
    """The red/yellow/blue alert engine, telemetry and usage reports, wired to devices and sessions."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        cloud: CloudSink,
        devices: DeviceManager,
        stations: StationMap,
        sessions: SessionRegistry,
        usage: UsageTracker,
        loop_lag: Callable[[], float],
        started_at: float,
        outbox_backlog: Callable[[], int],
        watchdog_slack: Callable[[], float | None],
        reset_device: Callable[[str], Awaitable[dict[str, Any]]],
    ) -> None:
        self._devices = devices
        self._stations = stations
        self._sessions = sessions
        self.usage = usage
        self._outbox_backlog = outbox_backlog
        self._loop_lag = loop_lag
        self._watchdog_slack = watchdog_slack
        self._reset_device = reset_device
        self.reporter = UsageReporter(usage, cloud, config.state_dir)
        lag = config.ops.loop_lag_warn_s
        self.alerts = AlertEngine(
            cloud,
            rules=AlertRules(
                loop_lag_raise_s=lag,
                loop_lag_clear_s=lag / 2,
                share_grace_s=config.ops.device_failure_grace_s,
            ),
        )
        collector = TelemetryCollector(config.state_dir, loop_lag, started_at)
        self.telemetry = TelemetryLoop(
            collector, cloud, config.ops.telemetry_interval_s, on_sample=self._judge_system
        )
        # One pending re-judgement of the device-failure share (when a failed device's grace ends).
        self._share_timer: asyncio.TimerHandle | None = None

    def start(self, stack: AsyncExitStack) -> None:
        """Start reporting and judging; everything stops in reverse through `stack`."""
        self.reporter.start()
        stack.push_async_callback(self.reporter.close)
        self.alerts.start()
        stack.push_async_callback(self.alerts.close)
        self.alerts.add_remedy(DEVICE_FAILURE_RATE, self._reopen_failing_device)
        self.alerts.add_remedy(OUTBOX_BACKLOG, self._shed_telemetry)
        for managed in self._devices.devices.values():
            managed.queue.on_complete.append(self._device_op_done)
        self._sessions.on_end(lambda session, _reason: self.alerts.record_session(session.errors == 0))
        self._sessions.on_create(lambda session: self.usage.stations.session_started(session.station))
        self._sessions.on_end(self._station_session_ended)
        self._devices.subscribe(self._device_share_event)
        self._judge_device_share()
        stack.callback(self._cancel_share_timer)
        self.telemetry.start()
        stack.push_async_callback(self.telemetry.close)

    def configure(self, config: GatewayConfig) -> None:
        """Live reload: the telemetry interval."""
        self.telemetry.interval_s = config.ops.telemetry_interval_s

    def record_feedback(self, station: str, rating: int, complaint: bool) -> None:
        self.usage.stations.feedback(station, rating, complaint)
        self.alerts.record_feedback(complaint)

    def _device_op_done(self, device: str, seconds: float, error: BaseException | None) -> None:
        # A user's mistake (no card, paper out) is not the device failing.
        ok = error is None or isinstance(error, UserActionNeeded)
        self.usage.record(device, ok, seconds)
        self.alerts.record_device_op(device, ok)

    def _station_session_ended(self, session: Session, _reason: str) -> None:
        seconds = time.time() - session.created_at
        self.usage.stations.session_ended(session.station, seconds, used=session.used)
        for _ in range(session.transactions):
            self.usage.stations.transaction(session.station)

    def _device_share_event(self, event: DeviceEvent) -> None:
        # A change between working states (online, busy, a user's mistake) leaves the failed set
        # and its ages as they were: only a change into, out of or between failure states counts.
        if event.kind == "state" and (
            event.data.get("state") in FAILED_STATES or event.data.get("previous") in FAILED_STATES
        ):
            self._judge_device_share()

    def _judge_device_share(self) -> None:
        """RED share rule now, and again once a newly failed device's grace period has passed."""
        now = time.time()
        states = {
            name: (m.device.status.state.value, now - m.device.status.since)
            for name, m in self._devices.devices.items()
        }
        where = {name: ", ".join(self._stations.stations_using(name)) for name in states}
        self.alerts.evaluate_device_share(states, where)
        grace = self.alerts.rules.share_grace_s
        pending = [grace - age for state, age in states.values() if state in FAILED_STATES and age < grace]
        self._cancel_share_timer()
        if pending:
            loop = asyncio.get_running_loop()
            self._share_timer = loop.call_later(min(pending) + 0.05, self._judge_device_share)

    def _cancel_share_timer(self) -> None:
        if self._share_timer is not None:
            self._share_timer.cancel()
            self._share_timer = None

    def _judge_system(self, telemetry: dict[str, Any]) -> None:
        self.alerts.evaluate_system(
            system_sample(
                telemetry,
                loop_lag_s=self._loop_lag(),
                watchdog_slack_s=self._watchdog_slack(),
                outbox_backlog=self._outbox_backlog(),
            )
        )

    async def _reopen_failing_device(self, alert: Alert) -> None:
        if alert.subject in self._devices.devices:
            log.warning("remedy_reopen_device", device=alert.subject)
            await self._reset_device(alert.subject)

    def _shed_telemetry(self, alert: Alert) -> None:
        """A growing backlog: send telemetry ten times less often until the next reload."""
        self.telemetry.interval_s = max(self.telemetry.interval_s * 10, 600.0)
        log.warning("remedy_shed_telemetry", interval_s=self.telemetry.interval_s, backlog=alert.value)
