"""What the gateway says about itself, as types: `/v1/status`, `/metrics`, the alert rules and `diag`.

Each part produces its own struct (the outbox its `OutboxStats`, a device queue its `QueueSnapshot`,
the MQTT link its `LinkState`, ...); the daemon puts them together into one `GatewayStatus`, which
`GET /v1/status` encodes as JSON and `/metrics` reads attribute by attribute. `edge-gateway diag`
decodes the daemon's answer back into the same `GatewayStatus`, so a figure has one name and one
path everywhere. Unknown keys from a newer daemon are ignored; parts an older daemon did not report
decode as `None`.

Nothing here holds personal data: names, numbers and photos never reach status, metrics or diag.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class _Status(msgspec.Struct, kw_only=True):
    """Base of the status types: built fresh by their producer on every read, keyword construction."""


# ------------------------------------------------------------------------------ the event loop


class LoopStatus(_Status):
    lag_s: float
    max_lag_s: float


# ------------------------------------------------------------------------------ devices


class QueueSnapshot(_Status):
    """One device's request queue: its depth, what it served, recent waits."""

    depth_limit: int
    queued: int
    busy: bool
    service_estimate_s: float
    served: int = 0
    failed: int = 0
    expired: int = 0
    cancelled: int = 0
    rejected_full: int = 0
    wait_p50_s: float | None = None
    wait_p99_s: float | None = None


class DeviceEntry(_Status, omit_defaults=True):
    """A device with its state, its queue, and where it serves (`/v1/devices`, `/v1/status`)."""

    name: str
    kind: str
    driver: str
    simulated: bool
    state: str
    reason: str
    since: float
    warnings: list[str]
    last_error: str | None
    last_error_at: float | None
    last_success_at: float | None
    queue: QueueSnapshot
    stations: list[str]
    # The one station that uses it directly, or the pool it belongs to (each omitted when none).
    station: str | None = None
    pool: str | None = None


# ------------------------------------------------------------------------------ stations


class StationFigures(_Status):
    """One station's figures for one day (the centre's KPIs)."""

    sessions: int = 0
    uses: int = 0
    transactions: int = 0
    mean_session_s: float | None = None
    rated: int = 0
    mean_rating: float | None = None
    complaints: int = 0
    complaint_rate: float = 0.0
    hourly_sessions: list[int] = []


class StationDevice(_Status, omit_defaults=True):
    """What a station uses for one kind: a device (`device`) or a pool (`pool`, `online` of `devices`)."""

    state: str
    device: str | None = None
    pool: str | None = None
    online: int | None = None
    devices: int | None = None


class StationEntry(_Status):
    """A station (`GET /v1/stations`, `/v1/status`): its devices' states, open sessions, today."""

    name: str
    label: str
    devices: dict[str, StationDevice]
    sessions: int = 0
    usage: StationFigures | None = None


# ------------------------------------------------------------------------------ sessions


class SessionCounts(_Status):
    open: int
    max: int
    created_total: int
    ended_total: dict[str, int] = {}


# ------------------------------------------------------------------------------ outbox and uplink


class OutboxClassStats(_Status):
    """One message class (stream) of the outbox."""

    count: int = 0
    bytes: int = 0
    oldest_age_s: float | None = None
    parked: int = 0
    last_seq: int = 0
    delivered: int = 0
    expired: int = 0
    dropped: int = 0
    rejected: int = 0
    refused: int = 0
    requeued: int = 0


class IncidentReport(_Status):
    """A storage incident ops have not acknowledged (`edge-gateway outbox-ack`)."""

    id: str
    kind: Literal["lost_tail", "database_missing", "corrupt"]
    detail: str = ""
    at: float = 0.0
    unaccounted: dict[str, tuple[int, int]] = {}
    unreadable: dict[str, int] = {}
    unusable: dict[str, int] = {}
    salvaged: int = 0
    moved_to: list[str] = []
    acknowledged_at: float | None = None
    possibly_lost: int = 0
    severity: Literal["red", "blue"] = "blue"


class OutboxStats(_Status):
    """The outbox's backlog per class and its whole-store figures."""

    classes: dict[str, OutboxClassStats]
    count: int
    bytes: int
    max_bytes: int | None = None
    delivery_rate_per_s: float | None = None
    last_puback: float | None = None
    commits: int = 0
    generation: int = 0
    recoveries: int = 0
    incidents: list[IncidentReport] | None = None
    awaiting_delete: int = 0


class PublisherStats(_Status):
    """The publisher's counters in this process (the outbox keeps the persisted ones)."""

    sent: int = 0
    delivered: int = 0
    rejected: int = 0
    in_flight: int = 0
    sessions: int = 0
    last_puback: float | None = None
    window: int = 0
    no_subscribers: int = 0
    no_subscribers_by_class: dict[str, int] = {}
    held: list[str] = []


class OutboxStatus(OutboxStats):
    """`/v1/status`'s `outbox`: the store's figures and the publisher's."""

    publisher: PublisherStats | None = None


class LinkState(_Status):
    """What the broker link reports: up or down since when, failures, the session it holds."""

    connected: bool = False
    # Wall-clock time of the last change between connected and disconnected.
    since: float = 0.0
    last_error: str | None = None
    # Failed attempts since the last stable connection (drives the backoff).
    failures: int = 0
    connects: int = 0
    # The broker kept our session across the last connect (CONNACK Session Present).
    session_present: bool | None = None
    # The keepalive in use (ours with jitter, or the broker's Server Keep Alive).
    keepalive_s: int | None = None
    # Where the link connects now: the configured broker or a Server Reference it was sent to.
    server: str | None = None
    # Connections that came back with a new session (the broker had lost or expired ours).
    sessions_lost: int = 0


class UplinkStatus(LinkState):
    """`/v1/status`'s `uplink`: the link's state, and whether (and which) broker is configured."""

    configured: bool = False
    broker: str | None = None


class CommandStats(_Status):
    """The downlink intake: commands run, messages refused by kind, alerts about them."""

    accepted: int = 0
    rejected: dict[str, int] = {}
    queued: int = 0
    alerts_sent: int = 0
    alerts_suppressed: int = 0


# ------------------------------------------------------------------------------ the API listener


class ConnectionStats(_Status):
    open: int = 0
    max: int = 0
    reserved: int = 0
    accepted: int = 0
    refused: dict[str, int] = {}
    header_timeouts: int = 0
    accept_errors: int = 0


class ApiStats(_Status):
    """The listener's connections (absent on a debug TCP listener) and unparseable requests."""

    connections: ConnectionStats | None = None
    malformed_requests: int = 0


# ------------------------------------------------------------------------------ alerts and usage


class AlertEntry(_Status):
    """An alert raised and not cleared."""

    id: str
    severity: str
    rule: str
    subject: str
    detail: str
    value: float
    threshold: float
    raised_at: float


class DeviceFigures(_Status):
    """One device's operations on one day."""

    operations: int = 0
    failures: int = 0
    failure_rate: float = 0.0
    mean_s: float | None = None
    p95_s: float | None = None


class UsageDay(_Status):
    """The usage roll-up of one day: every device and every station."""

    day: str
    devices: dict[str, DeviceFigures] = {}
    stations: dict[str, StationFigures] = {}


# ------------------------------------------------------------------------------ the whole


class GatewayStatus(_Status):
    """`GET /v1/status`: everything `edge-gateway diag` shows."""

    node: str
    version: str
    config: str
    started_at: float
    listening: list[str]
    loop: LoopStatus
    outbox: OutboxStatus | None = None
    uplink: UplinkStatus | None = None
    devices: list[DeviceEntry] | None = None
    stations: list[StationEntry] | None = None
    sessions: SessionCounts | None = None
    commands: CommandStats | None = None
    api: ApiStats | None = None
    alerts: list[AlertEntry] | None = None
    usage: UsageDay | None = None


class SystemSample(_Status):
    """What the BLUE alert rules judge: loop lag, free disk, watchdog slack, outbox backlog.

    A figure left `None` leaves its rule as it is."""

    loop_lag_s: float | None = None
    disk_free_fraction: float | None = None
    watchdog_slack_s: float | None = None
    outbox_backlog: int | None = None


def decode_status(body: bytes) -> GatewayStatus:
    """A `/v1/status` answer as types; msgspec.ValidationError/DecodeError say what does not fit."""
    return msgspec.json.decode(body, type=GatewayStatus)
