"""Red / yellow / blue alerts as the service centres use them, raised once and cleared once.

RED: a device's failure rate over a sliding window reaches its threshold, or the share of the node's
devices in a failure state (past a grace period) reaches 15%. YELLOW: complaints reach 5% of rated
sessions in a window, or sessions that saw a user-visible error reach their share. BLUE: system
anomalies (loop lag, disk nearly full, watchdog close to missing, outbox backlog growing). Each
alert has a raise and a lower clear threshold (hysteresis), so a value hovering at the line does not
flap; raise and clear go to the `alert` stream as `alert_raised` / `alert_cleared`.

Delivery never drops an alert: each is retried until the outbox stores it (a full disk refuses
it with 507 until space returns), one at a time and in order, so the cloud always gets a raise
before its clear.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

from gateway.cloud import CloudSink
from gateway.status import AlertEntry, SystemSample
from gateway.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

ALERT_STREAM: Final = "alert"
RAISED: Final = "alert_raised"
CLEARED: Final = "alert_cleared"

DEVICE_FAILURE_RATE: Final = "device_failure_rate"
SESSION_ERROR_RATE: Final = "session_error_rate"
LOOP_LAG: Final = "loop_lag"
DISK_NEARLY_FULL: Final = "disk_nearly_full"
WATCHDOG_SLACK: Final = "watchdog_slack"
OUTBOX_BACKLOG: Final = "outbox_backlog_growing"
DEVICE_FAILURE_SHARE: Final = "device_failure_share"
COMPLAINT_RATE: Final = "complaint_rate"

# Device states that count as failed for the share rule (a user's mistake, busy: not failures).
FAILED_STATES: Final = frozenset({"offline", "no_device", "hardware_error"})


class Severity(enum.StrEnum):
    """The service centres' colours: RED device, YELLOW user-visible, BLUE system."""

    RED = "red"
    YELLOW = "yellow"
    BLUE = "blue"


@dataclass(frozen=True, slots=True)
class AlertRules:
    """Thresholds: each rule raises at one value and clears at a safer one."""

    device_window_s: float = 900.0
    device_min_samples: int = 10
    device_raise_rate: float = 0.15
    device_clear_rate: float = 0.10
    session_window_s: float = 900.0
    session_min_samples: int = 20
    session_raise_rate: float = 0.05
    session_clear_rate: float = 0.03
    loop_lag_raise_s: float = 0.5
    loop_lag_clear_s: float = 0.25
    disk_raise_free: float = 0.05
    disk_clear_free: float = 0.08
    # Seconds left before systemd's watchdog would fire.
    watchdog_raise_slack_s: float = 5.0
    watchdog_clear_slack_s: float = 10.0
    # Consecutive evaluations with a larger backlog than the one before.
    backlog_growth_checks: int = 5
    backlog_clear_shrinks: int = 2
    # Share of the node's devices in a failure state (longer than the grace) that raises RED.
    share_raise: float = 0.15
    share_clear: float = 0.10
    share_grace_s: float = 60.0
    # Complaints among rated sessions (the plan's complaint rate).
    complaint_window_s: float = 3600.0
    complaint_min_samples: int = 20
    complaint_raise_rate: float = 0.05
    complaint_clear_rate: float = 0.03
    # Bound on the samples one window keeps, whatever the traffic.
    max_window_samples: int = 10_000


@dataclass(frozen=True, slots=True)
class Alert:
    """One raised alert; `id` pairs its raise with its clear."""

    id: str
    severity: Severity
    rule: str
    subject: str
    detail: str
    value: float
    threshold: float
    raised_at: float

    def body(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity.value,
            "rule": self.rule,
            "subject": self.subject,
            "detail": self.detail,
            "value": self.value,
            "threshold": self.threshold,
        }

    def entry(self) -> AlertEntry:
        return AlertEntry(**self.body(), raised_at=self.raised_at)


Remedy = Callable[[Alert], Awaitable[None] | None]

RETRY_MIN_S: Final = 0.2
RETRY_MAX_S: Final = 10.0


async def _try_send(sink: CloudSink, type: str, body: Mapping[str, Any]) -> bool:
    """One attempt; True when stored, or when the message can never be stored (a bug: logged)."""
    try:
        await sink.send(ALERT_STREAM, type, body)
    except (ValueError, TypeError) as err:
        log.error("alert_unsendable", type=type, error=str(err))
        return True
    except Exception as err:
        log.warning("alert_send_failed_will_retry", type=type, error=str(err))
        return False
    return True


async def _retry_until_stored(
    sink: CloudSink, type: str, body: Mapping[str, Any], *, first: float, limit: float
) -> None:
    delay = first
    while not await _try_send(sink, type, body):
        await asyncio.sleep(delay)
        delay = min(delay * 2, limit)


class OrderedSender:
    """Alert-stream messages from elsewhere (the outbox's own alerts): in order, each retried until stored."""

    def __init__(self, *, retry_min_s: float = RETRY_MIN_S, retry_max_s: float = RETRY_MAX_S) -> None:
        self._retry = (retry_min_s, retry_max_s)
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def submit(self, type: str, body: Mapping[str, Any]) -> None:
        self._queue.put_nowait((type, dict(body)))

    def pending(self) -> int:
        return self._queue.qsize()

    def start(self, sink: CloudSink) -> None:
        """Send what was submitted so far, and everything after, to `sink` (alerts submitted
        before, while the outbox was still opening, wait in the queue)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(sink), name="alert-ordered-sender")

    async def flush(self) -> None:
        await self._queue.join()

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self._queue.qsize():
            log.error("alerts_not_stored_at_exit", count=self._queue.qsize())

    async def _run(self, sink: CloudSink) -> None:
        while True:
            type, body = await self._queue.get()
            try:
                first, limit = self._retry
                await _retry_until_stored(sink, type, body, first=first, limit=limit)
            finally:
                self._queue.task_done()


@dataclass
class _Window:
    """Outcomes within the last `span` seconds, with a running failure count."""

    span: float
    limit: int
    samples: collections.deque[tuple[float, bool]] = field(default_factory=collections.deque)
    failures: int = 0

    def add(self, now: float, ok: bool) -> None:
        self.samples.append((now, ok))
        if not ok:
            self.failures += 1
        while len(self.samples) > self.limit:
            self._pop()
        self.prune(now)

    def prune(self, now: float) -> None:
        while self.samples and self.samples[0][0] <= now - self.span:
            self._pop()

    def _pop(self) -> None:
        _, ok = self.samples.popleft()
        if not ok:
            self.failures -= 1

    @property
    def count(self) -> int:
        return len(self.samples)

    @property
    def rate(self) -> float:
        return self.failures / len(self.samples) if self.samples else 0.0


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def system_sample(
    telemetry: Mapping[str, Any],
    *,
    loop_lag_s: float | None = None,
    watchdog_slack_s: float | None = None,
    outbox_backlog: int | None = None,
) -> SystemSample:
    """The BLUE rules' figures: the free disk from a telemetry sample (`disk.free_fraction`), the rest
    as the daemon measures them."""
    disk = telemetry.get("disk")
    free = disk.get("free_fraction") if isinstance(disk, Mapping) else None
    return SystemSample(
        loop_lag_s=loop_lag_s,
        disk_free_fraction=float(free) if isinstance(free, int | float) else None,
        watchdog_slack_s=watchdog_slack_s,
        outbox_backlog=outbox_backlog,
    )


class AlertEngine:
    """Evaluates the rules as outcomes and snapshots arrive; sends each change once, in order."""

    def __init__(
        self,
        sink: CloudSink,
        clock: Callable[[], float] = time.monotonic,
        *,
        rules: AlertRules | None = None,
        remedy_timeout_s: float = 30.0,
        retry_min_s: float = RETRY_MIN_S,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        self.sink = sink
        self._retry = (retry_min_s, retry_max_s)
        self.remedy_timeout_s = remedy_timeout_s
        self.rules = rules or AlertRules()
        self._clock = clock
        self._devices: dict[str, _Window] = {}
        self._sessions = _Window(self.rules.session_window_s, self.rules.max_window_samples)
        self._complaints = _Window(self.rules.complaint_window_s, self.rules.max_window_samples)
        self._active: dict[tuple[str, str], Alert] = {}
        self._remedies: dict[str, list[Remedy]] = {}
        self._outbox_last: float | None = None
        self._outbox_growth = 0
        self._outbox_shrinks = 0
        self._queue: asyncio.Queue[tuple[str, Alert]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- wiring

    def add_remedy(self, rule: str, action: Remedy) -> None:
        """Run `action(alert)` when `rule` raises (reopen a device, shed telemetry, ...)."""
        self._remedies.setdefault(rule, []).append(action)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._sender(), name="alert-sender")

    async def flush(self) -> None:
        """Wait until every raise/clear so far has been handed to the sink (and remedies ran)."""
        await self._queue.join()

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self._queue.qsize():
            log.error("alerts_not_stored_at_exit", count=self._queue.qsize())

    def pending(self) -> int:
        """Raises and clears not stored yet (e.g. while the disk is full)."""
        return self._queue.qsize()

    # ---------------------------------------------------------------- inputs

    def record_device_op(self, device: str, ok: bool) -> None:
        """One finished device operation."""
        now = self._clock()
        window = self._devices.get(device)
        if window is None:
            window = self._devices[device] = _Window(
                self.rules.device_window_s, self.rules.max_window_samples
            )
        window.add(now, ok)
        self._judge_device(device, window)

    def record_session(self, ok: bool) -> None:
        """One finished session; `ok=False` when it saw a user-visible error."""
        self._sessions.add(self._clock(), ok)
        self._judge_sessions()

    def record_feedback(self, complaint: bool) -> None:
        """One rated session; `complaint=True` when the citizen complained."""
        self._complaints.add(self._clock(), not complaint)
        self._judge_complaints()

    def evaluate_device_share(
        self, devices: Mapping[str, tuple[str, float]], where: Mapping[str, str]
    ) -> None:
        """RED when the share of devices failed for longer than the grace reaches its threshold.

        `devices` maps a device to (state, seconds in that state); `where` names each device's
        stations for the alert's detail."""
        r = self.rules
        if not devices:
            return
        failed = sorted(
            d for d, (state, age) in devices.items() if state in FAILED_STATES and age >= r.share_grace_s
        )
        share = len(failed) / len(devices)
        places = "; ".join(f"{d} ({where.get(d) or 'no station'})" for d in failed)
        self._judge(
            Severity.RED,
            DEVICE_FAILURE_SHARE,
            "devices",
            round(share, 4),
            r.share_raise,
            raise_when=share >= r.share_raise,
            clear_when=share < r.share_clear,
            detail=f"{len(failed)} of {len(devices)} devices failed ({share:.0%})"
            + (f": {places}" if places else ""),
        )

    def evaluate(self) -> None:
        """Re-judge the sliding windows as time passes (old outcomes leave them)."""
        now = self._clock()
        for device, window in self._devices.items():
            window.prune(now)
            self._judge_device(device, window)
        self._sessions.prune(now)
        self._judge_sessions()
        self._complaints.prune(now)
        self._judge_complaints()

    def evaluate_system(self, sample: SystemSample) -> None:
        """BLUE rules: loop lag, free disk, watchdog slack, outbox backlog; a figure left None
        leaves its rule as it is."""
        r = self.rules
        lag = sample.loop_lag_s
        if lag is not None:
            self._judge(
                Severity.BLUE,
                LOOP_LAG,
                "event_loop",
                lag,
                r.loop_lag_raise_s,
                raise_when=lag >= r.loop_lag_raise_s,
                clear_when=lag < r.loop_lag_clear_s,
                detail=f"event loop lag {lag * 1000:.0f} ms (limit {r.loop_lag_raise_s * 1000:.0f} ms)",
            )
        free = sample.disk_free_fraction
        if free is not None:
            self._judge(
                Severity.BLUE,
                DISK_NEARLY_FULL,
                "state_dir",
                free,
                r.disk_raise_free,
                raise_when=free < r.disk_raise_free,
                clear_when=free >= r.disk_clear_free,
                detail=f"{free:.1%} free on the state file system (alert below {r.disk_raise_free:.0%})",
            )
        slack = sample.watchdog_slack_s
        if slack is not None:
            self._judge(
                Severity.BLUE,
                WATCHDOG_SLACK,
                "watchdog",
                slack,
                r.watchdog_raise_slack_s,
                raise_when=slack < r.watchdog_raise_slack_s,
                clear_when=slack >= r.watchdog_clear_slack_s,
                detail=f"{slack:.1f} s left before the systemd watchdog fires",
            )
        if sample.outbox_backlog is not None:
            self._judge_backlog(float(sample.outbox_backlog))
        self.evaluate()

    # ---------------------------------------------------------------- state

    def active(self) -> list[AlertEntry]:
        """Alerts raised and not cleared (for /v1/status), oldest first."""
        return [a.entry() for a in sorted(self._active.values(), key=lambda a: a.raised_at)]

    # ---------------------------------------------------------------- rules

    def _judge_device(self, device: str, window: _Window) -> None:
        r = self.rules
        self._judge_window(
            Severity.RED,
            DEVICE_FAILURE_RATE,
            device,
            window,
            (r.device_min_samples, r.device_raise_rate, r.device_clear_rate),
            f"{device}: {{failures}} of {{count}} operations failed",
        )

    def _judge_sessions(self) -> None:
        r = self.rules
        self._judge_window(
            Severity.YELLOW,
            SESSION_ERROR_RATE,
            "sessions",
            self._sessions,
            (r.session_min_samples, r.session_raise_rate, r.session_clear_rate),
            "{failures} of {count} sessions saw an error",
        )

    def _judge_complaints(self) -> None:
        r = self.rules
        self._judge_window(
            Severity.YELLOW,
            COMPLAINT_RATE,
            "feedback",
            self._complaints,
            (r.complaint_min_samples, r.complaint_raise_rate, r.complaint_clear_rate),
            "{failures} of {count} rated sessions complained",
        )

    def _judge_window(
        self,
        severity: Severity,
        rule: str,
        subject: str,
        window: _Window,
        limits: tuple[int, float, float],
        what: str,
    ) -> None:
        """A failure-rate rule over a sliding window: (min samples, raise rate, clear rate)."""
        min_samples, raise_rate, clear_rate = limits
        if window.count < min_samples:
            return
        rate = window.rate
        self._judge(
            severity,
            rule,
            subject,
            round(rate, 4),
            raise_rate,
            raise_when=rate >= raise_rate,
            clear_when=rate < clear_rate,
            detail=what.format(failures=window.failures, count=window.count)
            + f" in the last {_minutes(window.span)} ({rate:.0%})",
        )

    def _judge_backlog(self, backlog: float) -> None:
        r = self.rules
        last, self._outbox_last = self._outbox_last, backlog
        if last is not None and backlog > last:
            self._outbox_growth += 1
            self._outbox_shrinks = 0
        elif last is not None and backlog < last:
            self._outbox_shrinks += 1
            self._outbox_growth = 0
        else:
            self._outbox_growth = 0
        self._judge(
            Severity.BLUE,
            OUTBOX_BACKLOG,
            "outbox",
            backlog,
            float(r.backlog_growth_checks),
            raise_when=self._outbox_growth >= r.backlog_growth_checks,
            clear_when=backlog == 0 or self._outbox_shrinks >= r.backlog_clear_shrinks,
            detail=f"outbox backlog grew {self._outbox_growth} checks in a row to {backlog:.0f} messages",
        )

    def _judge(
        self,
        severity: Severity,
        rule: str,
        subject: str,
        value: float,
        threshold: float,
        *,
        raise_when: bool,
        clear_when: bool,
        detail: str,
    ) -> None:
        key = (rule, subject)
        current = self._active.get(key)
        if current is None and raise_when:
            alert = Alert(
                id=uuid.uuid4().hex,
                severity=severity,
                rule=rule,
                subject=subject,
                detail=detail,
                value=value,
                threshold=threshold,
                raised_at=time.time(),
            )
            self._active[key] = alert
            log.warning("alert_raised", severity=severity.value, rule=rule, subject=subject, value=value)
            self._queue.put_nowait((RAISED, alert))
        elif current is not None and clear_when:
            del self._active[key]
            cleared = Alert(
                id=current.id,
                severity=severity,
                rule=rule,
                subject=subject,
                detail=detail,
                value=value,
                threshold=threshold,
                raised_at=current.raised_at,
            )
            log.info("alert_cleared", severity=severity.value, rule=rule, subject=subject, value=value)
            self._queue.put_nowait((CLEARED, cleared))

    # ---------------------------------------------------------------- delivery

    async def _sender(self) -> None:
        while True:
            kind, alert = await self._queue.get()
            try:
                await self._deliver(kind, alert)
            finally:
                self._queue.task_done()

    async def _deliver(self, kind: str, alert: Alert) -> None:
        # Kept until stored, and nothing after it goes first: a clear never overtakes its raise.
        stored = await _try_send(self.sink, kind, alert.body())
        if kind == RAISED:
            await self._remedy(alert)
        if not stored:
            first, limit = self._retry
            await asyncio.sleep(first)
            await _retry_until_stored(self.sink, kind, alert.body(), first=first * 2, limit=limit)
            log.info("alert_stored_after_retry", kind=kind, rule=alert.rule, subject=alert.subject)

    async def _remedy(self, alert: Alert) -> None:
        for remedy in self._remedies.get(alert.rule, ()):
            try:
                result = remedy(alert)
                if inspect.isawaitable(result):
                    async with asyncio.timeout(self.remedy_timeout_s):
                        await result
                log.info("alert_remedy_applied", rule=alert.rule, subject=alert.subject)
            except Exception:
                log.exception("alert_remedy_failed", rule=alert.rule, subject=alert.subject)
