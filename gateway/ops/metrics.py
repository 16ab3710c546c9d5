"""Prometheus metrics for `GET /metrics`: HTTP requests by route, and figures read from the node's
typed status (`gateway.status.GatewayStatus`, the same document `/v1/status` serves).

Everything lives in this object's own CollectorRegistry (no module-level registry). Labels carry
route templates, device names, message classes and states only: never a session id, a token or
anything a citizen typed or presented.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from gateway.status import (
    AlertEntry,
    ApiStats,
    CommandStats,
    DeviceEntry,
    GatewayStatus,
    OutboxStats,
    PublisherStats,
    SessionCounts,
    StationEntry,
    UplinkStatus,
)

PREFIX: Final = "edge_gateway"
DEVICE_STATES: Final = ("online", "offline", "no_device", "hardware_error", "user_error", "busy")
OUTBOX_COUNTERS: Final = ("delivered", "expired", "dropped", "rejected", "refused", "requeued")
QUEUE_COUNTERS: Final = ("served", "failed", "expired", "cancelled", "rejected_full")
# Request latencies of a local Unix-socket API: milliseconds to a device deadline of ~30 s.
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


# (StationFigures attribute, metric suffix, help) of the per-station gauges.
STATION_GAUGES: Final = (
    ("sessions", "sessions_today", "Sessions opened at the station today"),
    ("uses", "uses_today", "Sessions today in which a device was used or a transaction sent"),
    ("transactions", "transactions_today", "Transactions sent from the station today"),
    ("mean_session_s", "mean_session_seconds", "Mean session time today"),
    ("rated", "rated_today", "Sessions rated by the citizen today"),
    ("complaint_rate", "complaint_rate", "Complaints among rated sessions today"),
)


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", text, value=float(value))


def _counter(name: str, text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", text, value=float(value))


def _labelled(family: GaugeMetricFamily | CounterMetricFamily, values: Mapping[str, float]) -> Metric:
    for label, value in sorted(values.items()):
        family.add_metric([label], float(value))
    return family


class _StatusCollector(Collector):
    """Turns the latest `GatewayStatus` into metric families at scrape time; a part the status
    does not have (None) yields none of its families."""

    def __init__(self) -> None:
        self.status: GatewayStatus | None = None

    def collect(self) -> Iterable[Metric]:
        status = self.status
        if status is None:
            return
        yield from _general(status)
        if status.sessions is not None:
            yield from _sessions(status.sessions)
        if status.devices is not None:
            yield from _devices(status.devices)
        if status.outbox is not None:
            yield from _outbox(status.outbox)
        if status.uplink is not None:
            yield from _uplink(status.uplink)
        if status.outbox is not None and status.outbox.publisher is not None:
            yield from _publisher(status.outbox.publisher)
        if status.alerts is not None:
            yield from _alerts(status.alerts)
        if status.stations is not None:
            yield from _stations(status.stations)
        if status.api is not None:
            yield from _api(status.api)
        if status.commands is not None:
            yield from _downlink(status.commands)


def _general(status: GatewayStatus) -> Iterable[Metric]:
    info = GaugeMetricFamily(f"{PREFIX}_info", "Gateway version and node id", labels=["version", "node"])
    info.add_metric([status.version, status.node], 1.0)
    yield info
    yield _gauge("start_time_seconds", "Unix time the daemon started", status.started_at)
    yield _gauge("loop_lag_seconds", "Latest event-loop lag", status.loop.lag_s)
    yield _gauge("loop_max_lag_seconds", "Largest event-loop lag since start", status.loop.max_lag_s)


def _sessions(sessions: SessionCounts) -> Iterable[Metric]:
    yield _gauge("sessions_open", "Open kiosk sessions", sessions.open)
    yield _gauge("sessions_max", "Session limit (api.max_sessions)", sessions.max)
    yield _counter("sessions_created", "Sessions created", sessions.created_total)
    if sessions.ended_total:
        family = CounterMetricFamily(
            f"{PREFIX}_sessions_ended", "Sessions ended, by reason", labels=["reason"]
        )
        yield _labelled(family, sessions.ended_total)


# (QueueSnapshot attribute, metric suffix, help) of the per-device queue gauges.
QUEUE_GAUGES: Final = (
    ("queued", "queued", "Requests waiting"),
    ("busy", "busy", "1 while serving a request"),
    ("wait_p50_s", "wait_p50_seconds", "Median queue wait (recent)"),
    ("wait_p99_s", "wait_p99_seconds", "99th percentile queue wait (recent)"),
)


def _devices(devices: list[DeviceEntry]) -> Iterable[Metric]:
    state = GaugeMetricFamily(
        f"{PREFIX}_device_state", "1 for the state each device is in", labels=["device", "state"]
    )
    up = GaugeMetricFamily(f"{PREFIX}_device_up", "1 when the device can take work", labels=["device"])
    gauges: list[tuple[str, GaugeMetricFamily | CounterMetricFamily]] = [
        (key, GaugeMetricFamily(f"{PREFIX}_device_queue_{name}", text, labels=["device"]))
        for key, name, text in QUEUE_GAUGES
    ]
    counters: list[tuple[str, GaugeMetricFamily | CounterMetricFamily]] = [
        (
            key,
            CounterMetricFamily(
                f"{PREFIX}_device_queue_{key}", f"Device requests {key.replace('_', ' ')}", labels=["device"]
            ),
        )
        for key in QUEUE_COUNTERS
    ]
    for device in devices:
        for candidate in DEVICE_STATES:
            state.add_metric([device.name, candidate], 1.0 if candidate == device.state else 0.0)
        up.add_metric([device.name], 1.0 if device.state in ("online", "busy") else 0.0)
        for key, family in [*gauges, *counters]:
            value = getattr(device.queue, key)
            if value is not None:
                family.add_metric([device.name], float(value))
    yield state
    yield up
    for _key, family in [*gauges, *counters]:
        yield family


def _outbox(outbox: OutboxStats) -> Iterable[Metric]:
    def per_class(family: GaugeMetricFamily | CounterMetricFamily, key: str) -> Metric:
        for name, entry in sorted(outbox.classes.items()):
            family.add_metric([name], float(getattr(entry, key) or 0.0))
        return family

    yield per_class(
        GaugeMetricFamily(f"{PREFIX}_outbox_messages", "Queued messages", labels=["class"]), "count"
    )
    yield per_class(
        GaugeMetricFamily(f"{PREFIX}_outbox_bytes", "Stored envelope bytes", labels=["class"]), "bytes"
    )
    yield per_class(
        GaugeMetricFamily(
            f"{PREFIX}_outbox_oldest_age_seconds", "Age of the oldest queued message", labels=["class"]
        ),
        "oldest_age_s",
    )
    yield per_class(
        GaugeMetricFamily(
            f"{PREFIX}_outbox_parked_messages", "Messages the broker rejected, kept aside", labels=["class"]
        ),
        "parked",
    )
    for key in OUTBOX_COUNTERS:
        yield per_class(
            CounterMetricFamily(f"{PREFIX}_outbox_{key}", f"Messages {key}", labels=["class"]), key
        )
    yield from _outbox_totals(outbox)


def _outbox_totals(outbox: OutboxStats) -> Iterable[Metric]:
    """The outbox's whole-store figures: quota, delivery, storage incidents, recoveries."""
    for value, name, text in (
        (outbox.max_bytes, "outbox_max_bytes", "Outbox byte quota"),
        (outbox.delivery_rate_per_s, "outbox_delivery_rate", "Messages delivered per second (last minute)"),
        (outbox.last_puback, "outbox_last_puback_time_seconds", "Unix time of the last PUBACK"),
    ):
        if value is not None:
            yield _gauge(name, text, value)
    if outbox.incidents is not None:
        yield _gauge(
            "outbox_possibly_lost_messages",
            "Messages storage incidents not yet acknowledged may have lost (edge-gateway outbox-ack)",
            sum(incident.possibly_lost for incident in outbox.incidents),
        )
    yield _gauge(
        "outbox_awaiting_delete_messages",
        "Delivered messages whose delete waits for disk space",
        outbox.awaiting_delete,
    )
    yield _counter("outbox_recoveries", "Corrupt outbox databases moved aside", outbox.recoveries)


def _uplink(uplink: UplinkStatus) -> Iterable[Metric]:
    yield _gauge("uplink_connected", "1 while the MQTT link is up", 1.0 if uplink.connected else 0.0)
    yield _gauge("uplink_configured", "1 when a broker is configured", 1.0 if uplink.configured else 0.0)
    if not uplink.configured:
        return
    yield _gauge(
        "uplink_connect_failures", "Failed attempts since the last stable connection", uplink.failures
    )
    yield _gauge("uplink_state_since_time_seconds", "Unix time of the last connect/disconnect", uplink.since)
    yield _counter("uplink_connects", "Successful connections", uplink.connects)


def _publisher(publisher: PublisherStats) -> Iterable[Metric]:
    for value, key, text in (
        (publisher.sent, "sent", "Messages published"),
        (publisher.delivered, "delivered", "Messages acknowledged by the broker"),
        (publisher.rejected, "rejected", "Messages the broker refused"),
        (
            publisher.no_subscribers,
            "no_subscribers",
            "PUBACKs 0x10: no subscriber matched (kept classes are resent)",
        ),
    ):
        yield _counter(f"uplink_published_{key}", text, value)
    yield _gauge("uplink_in_flight", "Publishes awaiting PUBACK", publisher.in_flight)


def _alerts(alerts: list[AlertEntry]) -> Iterable[Metric]:
    counts = dict.fromkeys(("red", "yellow", "blue"), 0.0)
    for alert in alerts:
        if alert.severity in counts:
            counts[alert.severity] += 1
    family = GaugeMetricFamily(
        f"{PREFIX}_alerts_active", "Alerts raised and not cleared", labels=["severity"]
    )
    for severity, count in counts.items():
        family.add_metric([severity], count)
    yield family


def _stations(stations: list[StationEntry]) -> Iterable[Metric]:
    """The centre's figures per station, today so far (the daily roll-up has whole days)."""
    open_now = GaugeMetricFamily(
        f"{PREFIX}_station_sessions_open", "Open sessions at the station", labels=["station"]
    )
    families = [
        (key, GaugeMetricFamily(f"{PREFIX}_station_{name}", text, labels=["station"]))
        for key, name, text in STATION_GAUGES
    ]
    for station in stations:
        open_now.add_metric([station.name], float(station.sessions))
        if station.usage is None:
            continue
        for key, family in families:
            value = getattr(station.usage, key)
            if value is not None:
                family.add_metric([station.name], float(value))
    yield open_now
    for _key, family in families:
        yield family


def _api(api: ApiStats) -> Iterable[Metric]:
    """The API listener's connections (bounded by the cap) and requests aiohttp could not parse."""
    conns = api.connections
    if conns is not None:
        yield _gauge("api_connections_open", "Open API connections", conns.open)
        yield _gauge("api_connections_max", "Connection cap (api.max_connections, resolved)", conns.max)
        yield _counter("api_connections_accepted", "Connections admitted", conns.accepted)
        refused = CounterMetricFamily(
            f"{PREFIX}_api_connections_refused",
            "Connections closed at accept: peer (uid not allowed) or full (cap reached)",
            labels=["reason"],
        )
        yield _labelled(refused, conns.refused)
        yield _counter(
            "api_header_timeouts",
            "Connections closed for not sending a request head in time",
            conns.header_timeouts,
        )
        yield _counter(
            "api_accept_errors",
            "accept() failures (out of descriptors), each pausing accept briefly",
            conns.accept_errors,
        )
    yield _counter(
        "api_malformed_requests", "Requests aiohttp could not parse (answered 400)", api.malformed_requests
    )


def _downlink(commands: CommandStats) -> Iterable[Metric]:
    yield _counter("downlink_accepted", "Downlink commands run", commands.accepted)
    rejected = CounterMetricFamily(
        f"{PREFIX}_downlink_rejected", "Downlink messages refused, by kind", labels=["kind"]
    )
    yield _labelled(rejected, commands.rejected)
    yield _counter(
        "downlink_alerts_suppressed",
        "Rejections counted into a summary alert instead of an alert each",
        commands.alerts_suppressed,
    )


class GatewayMetrics:
    """The gateway's metrics: request counters/latencies fed by the API, the rest from /v1/status."""

    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests",
            "HTTP requests served, by method, route template and status",
            ["method", "route", "status"],
            namespace=PREFIX,
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency, by method and route template",
            ["method", "route"],
            namespace=PREFIX,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._status = _StatusCollector()
        self.registry.register(self._status)
        if process:
            ProcessCollector(namespace=PREFIX, registry=self.registry)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One served request (the API's metrics middleware calls this; `route` is the template)."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(max(0.0, seconds))

    def render(self, status: GatewayStatus) -> bytes:
        """The Prometheus text exposition, with gauges refreshed from the node's status."""
        self._status.status = status
        return generate_latest(self.registry)
