"""The API's connection limits from [api], and their counters as Prometheus metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.api.listener import Limits, connection_cap, open_file_limit
from gateway.config import ApiConfig

PREFIX = "edge_gateway"


def api_limits(api: ApiConfig, *, file_limit: int | None = None) -> Limits:
    """Resolve [api] against this process's open-file limit."""
    cap = connection_cap(api.max_connections, open_file_limit() if file_limit is None else file_limit)
    return Limits(
        max_connections=cap,
        reserved_connections=min(api.reserved_connections, cap // 2),
        header_timeout_s=api.header_timeout_s,
    )


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


class HostileInputCollector(Collector):
    """`edge_gateway_api_*` and `edge_gateway_downlink_*` figures, read at scrape time."""

    def __init__(
        self,
        api: Callable[[], Mapping[str, Any]],
        downlink: Callable[[], Mapping[str, Any]],
    ) -> None:
        self._api = api
        self._downlink = downlink

    def collect(self) -> Iterable[Metric]:
        api = self._api()
        conns = api.get("connections") or {}
        if conns:
            yield GaugeMetricFamily(
                f"{PREFIX}_api_connections_open", "Open API connections", value=_num(conns.get("open"))
            )
            yield GaugeMetricFamily(
                f"{PREFIX}_api_connections_max",
                "Connection cap (api.max_connections, resolved)",
                value=_num(conns.get("max")),
            )
            yield CounterMetricFamily(
                f"{PREFIX}_api_connections_accepted",
                "Connections admitted",
                value=_num(conns.get("accepted")),
            )
            refused = CounterMetricFamily(
                f"{PREFIX}_api_connections_refused",
                "Connections closed at accept: peer (uid not allowed) or full (cap reached)",
                labels=["reason"],
            )
            for reason, count in sorted((conns.get("refused") or {}).items()):
                refused.add_metric([str(reason)], _num(count))
            yield refused
            yield CounterMetricFamily(
                f"{PREFIX}_api_header_timeouts",
                "Connections closed for not sending a request head in time",
                value=_num(conns.get("header_timeouts")),
            )
            yield CounterMetricFamily(
                f"{PREFIX}_api_accept_errors",
                "accept() failures (out of descriptors), each pausing accept briefly",
                value=_num(conns.get("accept_errors")),
            )
        if "malformed_requests" in api:
            yield CounterMetricFamily(
                f"{PREFIX}_api_malformed_requests",
                "Requests aiohttp could not parse (answered 400)",
                value=_num(api.get("malformed_requests")),
            )
        down = self._downlink()
        if down:
            yield CounterMetricFamily(
                f"{PREFIX}_downlink_accepted", "Downlink commands run", value=_num(down.get("accepted"))
            )
            rejected = CounterMetricFamily(
                f"{PREFIX}_downlink_rejected", "Downlink messages refused, by kind", labels=["kind"]
            )
            for kind, count in sorted((down.get("rejected") or {}).items()):
                rejected.add_metric([str(kind)], _num(count))
            yield rejected
            yield CounterMetricFamily(
                f"{PREFIX}_downlink_alerts_suppressed",
                "Rejections counted into a summary alert instead of an alert each",
                value=_num(down.get("alerts_suppressed")),
            )
