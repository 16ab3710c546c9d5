"""What API handlers reach: the live config and the node's parts, built once by the daemon after
every part exists (so no handler ever meets a missing one)."""

from __future__ import annotations

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
    from gateway.status import GatewayStatus, StationEntry

RequestObserver = Callable[[str, str, int, float], None]


@dataclass(kw_only=True)
class ApiContext:
    """Handlers read parts from here; no module-level singletons. `config` follows reloads."""

    config: GatewayConfig
    sessions: SessionRegistry
    devices: DeviceManager
    stations: StationMap
    cloud: CloudSink
    auth: Authenticator
    health: Callable[[], Awaitable[dict[str, Any]]]
    status: Callable[[], Awaitable[GatewayStatus]]
    metrics: Callable[[], Awaitable[bytes]]
    observe_request: RequestObserver
    station_overview: Callable[[], list[StationEntry]]
    record_feedback: Callable[[str, int, bool], None]
    is_online: Callable[[], bool]
    reset_device: Callable[[str], Awaitable[dict[str, Any]]]
    requeue_rejected: Callable[[Any], Awaitable[dict[str, Any]]]
    streams: set[Subscription] = field(default_factory=set)
    stream_tickets: StreamTickets = field(default_factory=StreamTickets)
