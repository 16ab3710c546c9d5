"""Prometheus metrics for `GET /metrics`: HTTP requests by route, and figures read from /v1/status.

Everything lives in this object's own CollectorRegistry (no module-level registry). Labels carry
route templates, device names, message classes and states only: never a session id, a token or
anything a citizen typed or presented.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

PREFIX: Final = "edge_gateway"
DEVICE_STATES: Final = ("online", "offline", "no_device", "hardware_error", "user_error", "busy")
OUTBOX_COUNTERS: Final = ("delivered", "expired", "dropped", "rejected", "refused", "requeued")
QUEUE_COUNTERS: Final = ("served", "failed", "expired", "cancelled", "rejected_full")
# Request latencies of a local Unix-socket API: milliseconds to a device deadline of ~30 s.
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


# (usage key, metric suffix, help) of the per-station gauges.
STATION_GAUGES = (
    ("sessions_open", "sessions_open", "Open sessions at the station"),
    ("sessions", "sessions_today", "Sessions opened at the station today"),
    ("uses", "uses_today", "Sessions today in which a device was used or a transaction sent"),
    ("transactions", "transactions_today", "Transactions sent from the station today"),
    ("mean_session_s", "mean_session_seconds", "Mean session time today"),
    ("rated", "rated_today", "Sessions rated by the citizen today"),
    ("complaint_rate", "complaint_rate", "Complaints among rated sessions today"),
)


class _StatusCollector(Collector):
    """Turns the latest /v1/status document into metric families at scrape time."""

    def __init__(self) -> None:
        self.status: Mapping[str, Any] = {}

    def collect(self) -> Iterable[Metric]:
        status = self.status
        yield from self._general(status)
        yield from self._sessions(_dict(status.get("sessions")))
        devices = status.get("devices")
        yield from self._devices(devices if isinstance(devices, list) else [])
        yield from self._outbox(_dict(status.get("outbox")))
        yield from self._uplink(
            _dict(status.get("uplink")), _dict(_dict(status.get("outbox")).get("publisher"))
        )
        alerts = status.get("alerts")
        yield from self._alerts(alerts if isinstance(alerts, list) else [])
        stations = status.get("stations")
        yield from self._stations(stations if isinstance(stations, list) else [])

    @staticmethod
    def _stations(stations: list[Any]) -> Iterable[Metric]:
        """The centre's figures per station, today so far (the daily roll-up has whole days)."""
        families = {
            key: GaugeMetricFamily(f"{PREFIX}_station_{name}", text, labels=["station"])
            for key, name, text in STATION_GAUGES
        }
        for item in stations:
            if not isinstance(item, Mapping) or not item.get("name"):
                continue
            figures = {**_dict(item.get("usage")), "sessions_open": item.get("sessions")}
            for key, family in families.items():
                value = _num(figures.get(key))
                if value is not None:
                    family.add_metric([str(item["name"])], value)
        yield from families.values()

    @staticmethod
    def _general(status: Mapping[str, Any]) -> Iterable[Metric]:
        info = GaugeMetricFamily(f"{PREFIX}_info", "Gateway version and node id", labels=["version", "node"])
        info.add_metric([str(status.get("version", "")), str(status.get("node", ""))], 1.0)
        yield info
        started = _num(status.get("started_at"))
        if started is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_start_time_seconds", "Unix time the daemon started", value=started
            )
        loop = _dict(status.get("loop"))
        for key, name, text in (
            ("lag_s", "loop_lag_seconds", "Latest event-loop lag"),
            ("max_lag_s", "loop_max_lag_seconds", "Largest event-loop lag since start"),
        ):
            value = _num(loop.get(key))
            if value is not None:
                yield GaugeMetricFamily(f"{PREFIX}_{name}", text, value=value)

    @staticmethod
    def _sessions(sessions: Mapping[str, Any]) -> Iterable[Metric]:
        for key, name, text in (
            ("open", "sessions_open", "Open kiosk sessions"),
            ("max", "sessions_max", "Session limit (api.max_sessions)"),
        ):
            value = _num(sessions.get(key))
            if value is not None:
                yield GaugeMetricFamily(f"{PREFIX}_{name}", text, value=value)
        created = _num(sessions.get("created_total"))
        if created is not None:
            yield CounterMetricFamily(f"{PREFIX}_sessions_created", "Sessions created", value=created)
        ended = _dict(sessions.get("ended_total"))
        if ended:
            family = CounterMetricFamily(
                f"{PREFIX}_sessions_ended", "Sessions ended, by reason", labels=["reason"]
            )
            for reason, count in sorted(ended.items()):
                value = _num(count)
                if value is not None:
                    family.add_metric([str(reason)], value)
            yield family

    @staticmethod
    def _devices(devices: list[Any]) -> Iterable[Metric]:
        state = GaugeMetricFamily(
            f"{PREFIX}_device_state", "1 for the state each device is in", labels=["device", "state"]
        )
        up = GaugeMetricFamily(f"{PREFIX}_device_up", "1 when the device can take work", labels=["device"])
        gauges = {
            "queued": GaugeMetricFamily(
                f"{PREFIX}_device_queue_queued", "Requests waiting", labels=["device"]
            ),
            "busy": GaugeMetricFamily(
                f"{PREFIX}_device_queue_busy", "1 while serving a request", labels=["device"]
            ),
            "wait_p50_s": GaugeMetricFamily(
                f"{PREFIX}_device_queue_wait_p50_seconds", "Median queue wait (recent)", labels=["device"]
            ),
            "wait_p99_s": GaugeMetricFamily(
                f"{PREFIX}_device_queue_wait_p99_seconds",
                "99th percentile queue wait (recent)",
                labels=["device"],
            ),
        }
        counters = {
            key: CounterMetricFamily(
                f"{PREFIX}_device_queue_{key}", f"Device requests {key.replace('_', ' ')}", labels=["device"]
            )
            for key in QUEUE_COUNTERS
        }
        for item in devices:
            if not isinstance(item, Mapping) or not item.get("name"):
                continue
            name = str(item["name"])
            current = str(item.get("state", ""))
            for candidate in DEVICE_STATES:
                state.add_metric([name, candidate], 1.0 if candidate == current else 0.0)
            up.add_metric([name], 1.0 if current in ("online", "busy") else 0.0)
            queue = _dict(item.get("queue"))
            for key, family in gauges.items():
                value = _num(queue.get(key))
                if value is not None:
                    family.add_metric([name], value)
            for key, counter in counters.items():
                value = _num(queue.get(key))
                if value is not None:
                    counter.add_metric([name], value)
        yield state
        yield up
        yield from gauges.values()
        yield from counters.values()

    @staticmethod
    def _outbox(outbox: Mapping[str, Any]) -> Iterable[Metric]:
        if not outbox:
            return
        classes = _dict(outbox.get("classes"))
        messages = GaugeMetricFamily(f"{PREFIX}_outbox_messages", "Queued messages", labels=["class"])
        size = GaugeMetricFamily(f"{PREFIX}_outbox_bytes", "Stored envelope bytes", labels=["class"])
        oldest = GaugeMetricFamily(
            f"{PREFIX}_outbox_oldest_age_seconds", "Age of the oldest queued message", labels=["class"]
        )
        parked = GaugeMetricFamily(
            f"{PREFIX}_outbox_parked_messages", "Messages the broker rejected, kept aside", labels=["class"]
        )
        counters = {
            key: CounterMetricFamily(f"{PREFIX}_outbox_{key}", f"Messages {key}", labels=["class"])
            for key in OUTBOX_COUNTERS
        }
        for name, raw in sorted(classes.items()):
            entry = _dict(raw)
            for family, key in (
                (messages, "count"),
                (size, "bytes"),
                (oldest, "oldest_age_s"),
                (parked, "parked"),
            ):
                value = _num(entry.get(key))
                if value is None and key == "oldest_age_s":
                    value = 0.0
                if value is not None:
                    family.add_metric([str(name)], value)
            for key, counter in counters.items():
                value = _num(entry.get(key))
                if value is not None:
                    counter.add_metric([str(name)], value)
        yield from (messages, size, oldest, parked, *counters.values())
        yield from _StatusCollector._outbox_totals(outbox)

    @staticmethod
    def _outbox_totals(outbox: Mapping[str, Any]) -> Iterable[Metric]:
        """The outbox's whole-store figures: quota, delivery, storage incidents, recoveries."""
        for key, name, text in (
            ("max_bytes", "outbox_max_bytes", "Outbox byte quota"),
            ("delivery_rate_per_s", "outbox_delivery_rate", "Messages delivered per second (last minute)"),
            ("last_puback", "outbox_last_puback_time_seconds", "Unix time of the last PUBACK"),
        ):
            value = _num(outbox.get(key))
            if value is not None:
                yield GaugeMetricFamily(f"{PREFIX}_{name}", text, value=value)
        incidents = outbox.get("incidents")
        if isinstance(incidents, list):
            lost = sum(_num(_dict(i).get("possibly_lost")) or 0.0 for i in incidents)
            yield GaugeMetricFamily(
                f"{PREFIX}_outbox_possibly_lost_messages",
                "Messages storage incidents not yet acknowledged may have lost (edge-gateway outbox-ack)",
                value=lost,
            )
        awaiting = _num(outbox.get("awaiting_delete"))
        if awaiting is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_outbox_awaiting_delete_messages",
                "Delivered messages whose delete waits for disk space",
                value=awaiting,
            )
        recoveries = _num(outbox.get("recoveries"))
        if recoveries is not None:
            yield CounterMetricFamily(
                f"{PREFIX}_outbox_recoveries", "Corrupt outbox databases moved aside", value=recoveries
            )

    @staticmethod
    def _uplink(uplink: Mapping[str, Any], publisher: Mapping[str, Any]) -> Iterable[Metric]:
        if uplink:
            connected = _num(uplink.get("connected"))
            yield GaugeMetricFamily(
                f"{PREFIX}_uplink_connected", "1 while the MQTT link is up", value=connected or 0.0
            )
            for key, name, text in (
                ("configured", "uplink_configured", "1 when a broker is configured"),
                ("failures", "uplink_connect_failures", "Failed attempts since the last stable connection"),
                ("since", "uplink_state_since_time_seconds", "Unix time of the last connect/disconnect"),
            ):
                value = _num(uplink.get(key))
                if value is not None:
                    yield GaugeMetricFamily(f"{PREFIX}_{name}", text, value=value)
            connects = _num(uplink.get("connects"))
            if connects is not None:
                yield CounterMetricFamily(
                    f"{PREFIX}_uplink_connects", "Successful connections", value=connects
                )
        for key, text in (
            ("sent", "Messages published"),
            ("delivered", "Messages acknowledged by the broker"),
            ("rejected", "Messages the broker refused"),
            ("no_subscribers", "PUBACKs 0x10: no subscriber matched (kept classes are resent)"),
        ):
            value = _num(publisher.get(key))
            if value is not None:
                yield CounterMetricFamily(f"{PREFIX}_uplink_published_{key}", text, value=value)
        in_flight = _num(publisher.get("in_flight"))
        if in_flight is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_uplink_in_flight", "Publishes awaiting PUBACK", value=in_flight
            )

    @staticmethod
    def _alerts(alerts: list[Any]) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            f"{PREFIX}_alerts_active", "Alerts raised and not cleared", labels=["severity"]
        )
        counts = dict.fromkeys(("red", "yellow", "blue"), 0)
        for alert in alerts:
            severity = str(_dict(alert).get("severity", ""))
            if severity in counts:
                counts[severity] += 1
        for severity, count in counts.items():
            family.add_metric([severity], float(count))
        yield family


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

    def render(self, status: Mapping[str, Any]) -> bytes:
        """The Prometheus text exposition, with gauges refreshed from a /v1/status document."""
        self._status.status = status
        return generate_latest(self.registry)
