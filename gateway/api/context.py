"""What API handlers reach: the live config and the daemon's parts, wired by the composition root."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.api.tickets import StreamTickets
from gateway.config import GatewayConfig

if TYPE_CHECKING:
    from gateway.auth.engine import Authenticator
    from gateway.cloud import CloudSink
    from gateway.devices import DeviceManager
    from gateway.events import Subscription
    from gateway.sessions import SessionRegistry
    from gateway.stations import StationMap

RequestObserver = Callable[[str, str, int, float], None]


@dataclass
class ApiContext:
    """Handlers read parts from here; the daemon sets them. No module-level singletons."""

    config: GatewayConfig
    started_at: float = field(default_factory=time.time)
    health: Callable[[], Awaitable[dict[str, Any]]] | None = None
    status: Callable[[], Awaitable[dict[str, Any]]] | None = None
    metrics: Callable[[], Awaitable[bytes]] | None = None
    request_observer: RequestObserver | None = None
    sessions: SessionRegistry | None = None
    devices: DeviceManager | None = None
    stations: StationMap | None = None
    station_overview: Callable[[], list[dict[str, Any]]] | None = None
    record_feedback: Callable[[str, int, bool], None] | None = None
    cloud: CloudSink | None = None
    auth: Authenticator | None = None
    is_online: Callable[[], bool] = lambda: False
    reset_device: Callable[[str], Awaitable[dict[str, Any]]] | None = None
    requeue_rejected: Callable[[Any], Awaitable[dict[str, Any]]] | None = None
    streams: set[Subscription] = field(default_factory=set)
    stream_tickets: StreamTickets = field(default_factory=StreamTickets)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        if self.request_observer is not None:
            self.request_observer(method, route, status, seconds)
