"""The node's parts, each built once by `gateway.assembly` and then only read.

`Uplink` is how a message leaves the node (sealer, outbox, publisher, broker link); `Parts` is the
whole node: the uplink, the devices and stations the kiosks use, sessions, two-factor auth, the
downlink command intake and ops supervision. Every field is required: nothing is half-built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from gateway.auth.engine import Authenticator
from gateway.devcloud.simlink import SimCloudLink
from gateway.devices import DeviceManager
from gateway.ops.alerts import OrderedSender
from gateway.ops.metrics import GatewayMetrics
from gateway.ops.supervision import Supervision
from gateway.ops.usage import UsageTracker
from gateway.remote import CommandDispatcher
from gateway.sessions import SessionRegistry
from gateway.stations import StationMap
from gateway.status import OutboxStatus, StationEntry, UplinkStatus
from gateway.uplink.mqtt import MqttLink
from gateway.uplink.outbox import Outbox
from gateway.uplink.publisher import Publisher
from gateway.uplink.requests import CloudRequests
from gateway.uplink.rotation import RotationAnnouncer
from gateway.uplink.sink import OutboxSink, SwitchableSealer

Link = MqttLink | SimCloudLink


def link_up(link: Link | None) -> bool:
    """Connected to a broker now (never, without one)."""
    return link is not None and link.state.connected


@dataclass(frozen=True, slots=True)
class Uplink:
    """The node's link with the cloud: signing, the durable outbox, the broker link (none when
    `uplink.broker` is empty) and the intake of the cloud's commands."""

    sealer: SwitchableSealer
    outbox: Outbox
    cloud: OutboxSink
    # The outbox's own alerts (full, corrupt, seq gap): kept in order until stored.
    outbox_alerts: OrderedSender
    publisher: Publisher
    link: Link | None
    broker: str
    requests: CloudRequests
    rotation: RotationAnnouncer
    # The downlink intake: verified commands from the cloud, run by name.
    dispatcher: CommandDispatcher

    def is_online(self) -> bool:
        return link_up(self.link)

    def outbox_status(self) -> OutboxStatus:
        stats = self.outbox.stats()
        return OutboxStatus(**msgspec.structs.asdict(stats), publisher=self.publisher.stats())

    def status(self) -> UplinkStatus:
        if self.link is None:
            return UplinkStatus(configured=False)
        state = msgspec.structs.asdict(self.link.state)
        return UplinkStatus(**state, configured=True, broker=self.broker)

    def health(self) -> dict[str, Any]:
        if self.link is None:
            return {"status": "ok", "configured": False}
        connected = self.link.state.connected
        return {
            "status": "ok" if connected else "degraded",
            "connected": connected,
            "backlog": self.outbox.backlog(),
        }


@dataclass(frozen=True, slots=True)
class Parts:
    """The whole node, as the API, the status board and the command handlers see it."""

    uplink: Uplink
    devices: DeviceManager
    stations: StationMap
    sessions: SessionRegistry
    usage: UsageTracker
    auth: Authenticator
    supervision: Supervision
    metrics: GatewayMetrics

    def station_overview(self) -> list[StationEntry]:
        """GET /v1/stations: each station's devices and their states, open sessions, today's figures."""
        open_at: dict[str, int] = {}
        for session in self.sessions:
            open_at[session.station] = open_at.get(session.station, 0) + 1
        today = self.usage.stations.today()
        return [
            self.stations.describe_station(name, sessions=open_at.get(name, 0), usage=today.get(name))
            for name in self.stations.names
        ]
