"""The gateway's TOML configuration: typed, validated at start, unknown keys are errors."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from gateway.auth.settings import AuthSettings
from gateway.configbase import PositiveFloat, PositiveInt, Section
from gateway.configbase import QueueConfig as QueueConfig
from gateway.drivers_registry import DRIVERS
from gateway.drivers_registry import DeviceConfig as DeviceConfig
from gateway.drivers_registry import EscposDevice as EscposDevice
from gateway.drivers_registry import HttpCameraDevice as HttpCameraDevice
from gateway.drivers_registry import PcscDevice as PcscDevice
from gateway.drivers_registry import SamvDevice as SamvDevice
from gateway.drivers_registry import V4l2Device as V4l2Device
from gateway.drivers_registry import driver_name as driver_name
from gateway.drivers_registry.capabilities import CAPABILITIES
from gateway.errors import ConfigError
from gateway.simulation import SIM_BROKER, simulation_errors
from gateway.uplink.outbox import OutboxConfig

DEFAULT_LOCATIONS = (Path("/etc/edge-gateway/gateway.toml"),)
ENV_CONFIG = "EDGE_GATEWAY_CONFIG"

NodeId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
_Section = Section


class NodeConfig(_Section):
    id: NodeId = "edge-dev"
    # Empty means $XDG_STATE_HOME/edge-gateway (or ~/.local/state/edge-gateway).
    state_dir: str = ""
    # Create the node key on first start when absent (the embedded default does; production runs
    # `edge-gateway keys init` so a lost key is noticed, not silently replaced).
    auto_init_key: bool = False


class ApiConfig(_Section):
    # Empty means <state_dir>/api.sock. Ignored when systemd passes a socket.
    socket: str = ""
    socket_mode: Annotated[str, msgspec.Meta(pattern=r"^0?[0-7]{3}$")] = "0660"
    allowed_uids: list[Annotated[int, msgspec.Meta(ge=0)]] = msgspec.field(default_factory=list)
    max_sessions: PositiveInt = 200
    session_idle_timeout_s: PositiveFloat = 180.0
    idle_warning_s: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    drain_timeout_s: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 1_048_576
    event_buffer: Annotated[int, msgspec.Meta(ge=8, le=10_000)] = 256
    sse_heartbeat_s: PositiveFloat = 15.0
    # "127.0.0.1:PORT" for HTTP tools that cannot speak Unix sockets; loopback only, off when empty.
    # TCP peers have no uid, so it cannot be combined with allowed_uids (refused at check and start).
    debug_tcp: str = ""
    # Open connections at most; 0 = the open-file limit (RLIMIT_NOFILE) less 256 for the daemon's
    # own files. A larger value is lowered to that.
    max_connections: Annotated[int, msgspec.Meta(ge=0)] = 0
    # Of those, this many are kept for allowed_uids, root and the daemon's own user: other peers
    # are refused once only this many places are left.
    reserved_connections: Annotated[int, msgspec.Meta(ge=0)] = 32
    # A new connection must send its first request head within this time, or it is closed.
    header_timeout_s: PositiveFloat = 10.0
    # An idle keep-alive connection (no request under way) is closed after this time.
    idle_timeout_s: PositiveFloat = 60.0
    # "127.0.0.1:PORT": the listener for browser kiosk apps (docs/api.md); loopback only, off when empty.
    http_listen: str = ""
    # Origins (scheme://host[:port]) whose pages may call http_listen; its own origin always may.
    allowed_origins: list[str] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        if self.debug_tcp:
            debug_tcp_address(self.debug_tcp)
            if self.allowed_uids:
                raise ValueError(
                    "debug_tcp cannot be combined with allowed_uids: TCP peers have no uid to check; "
                    "leave debug_tcp empty on a box that restricts uids"
                )
        if self.max_connections and self.reserved_connections >= self.max_connections:
            raise ValueError("reserved_connections must be smaller than max_connections")
        if self.http_listen:
            loopback_address(self.http_listen, "http_listen")
        for origin in self.allowed_origins:
            if not _ORIGIN.match(origin):
                raise ValueError(
                    f"allowed_origins: {origin!r} is not an origin: scheme://host[:port], no path, no '*'"
                )
        if self.idle_warning_s >= self.session_idle_timeout_s:
            raise ValueError("idle_warning_s must be shorter than session_idle_timeout_s")

    @property
    def mode(self) -> int:
        return int(self.socket_mode, 8)


_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def debug_tcp_address(value: str) -> tuple[str, int]:
    """Split and check `host:port`; only loopback addresses are allowed."""
    return loopback_address(value, "debug_tcp")


def loopback_address(value: str, key: str) -> tuple[str, int]:
    """Split and check the `host:port` of config key `key`; only loopback addresses are allowed."""
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(f"{key} must be HOST:PORT, got {value!r}")
    if key == "debug_tcp" and int(port_text) == 0:
        raise ValueError(f"{key} must be HOST:PORT, got {value!r}")
    try:
        address = ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
    except ValueError as err:
        raise ValueError(f"{key} host must be a loopback IP address, got {host!r}") from err
    if not address.is_loopback:
        raise ValueError(f"{key} is refused for non-loopback address {host}")
    return str(address), int(port_text)


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    # Recent log lines kept for support bundles (already masked).
    file: str = ""


class UplinkConfig(_Section):
    # Empty disables the MQTT link; messages still queue durably in the outbox.
    broker: str = ""
    ca_file: str = ""
    client_cert: str = ""
    client_key: str = ""
    # Empty means <state_dir>/keys/node.ed25519.
    key_file: str = ""
    cloud_keys: list[str] = msgspec.field(default_factory=list)
    keepalive_s: Annotated[int, msgspec.Meta(ge=2, le=3600)] = 30
    key_overlap_s: Annotated[float, msgspec.Meta(ge=0)] = 86_400.0
    # Shortest wait between attempts; every wait below is capped by backoff_max_s.
    backoff_min_s: PositiveFloat = 1.0
    backoff_max_s: PositiveFloat = 60.0
    # The first connect of a start waits uniform(0, this): a site's power return is not a burst.
    first_connect_jitter_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 2.0
    # After a lost connection (or an unreachable broker) the reconnect waits uniform(0, this)
    # once the broker answers a TCP probe, so a fleet returns spread over this window.
    reconnect_spread_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 8.0
    # How long the broker keeps this node's session (its subscription and the QoS 1 commands
    # sent while it is away); 0 = none. MQTT v5 Session Expiry Interval, seconds.
    session_expiry_s: Annotated[int, msgspec.Meta(ge=0, le=4_294_967_295)] = 3600
    # Classes whose messages stay queued when the broker answers PUBACK 0x10 (no subscriber
    # matched, so the broker dropped it); they are resent after a growing wait.
    keep_on_no_subscribers: list[Literal["tx", "audit", "alert", "telemetry", "event"]] = msgspec.field(
        default_factory=lambda: ["tx", "audit"]
    )
    no_subscribers_retry_max_s: PositiveFloat = 30.0
    stable_after_s: PositiveFloat = 30.0
    connect_timeout_s: PositiveFloat = 10.0

    def __post_init__(self) -> None:
        if self.backoff_min_s > self.backoff_max_s:
            raise ValueError("backoff_min_s must not exceed backoff_max_s")
        if self.no_subscribers_retry_max_s < self.backoff_min_s:
            raise ValueError("no_subscribers_retry_max_s must be at least backoff_min_s")
        # sim://cloud: the in-process development cloud (simulation configs only, see gateway.simulation).
        mqtt = re.match(r"^mqtts?://[^/:]+(:\d+)?/?$", self.broker)
        if self.broker and self.broker != SIM_BROKER and not mqtt:
            raise ValueError(
                f"broker must be mqtt://HOST[:PORT], mqtts://HOST[:PORT] or {SIM_BROKER}, got {self.broker!r}"
            )
        if self.broker.startswith("mqtts://") and not self.ca_file:
            raise ValueError("an mqtts:// broker needs ca_file")
        if bool(self.client_cert) != bool(self.client_key):
            raise ValueError("client_cert and client_key go together")


# The kind of peripheral each driver serves; stations and API routes name devices by kind.
KIND_OF_DRIVER = {tag: entry.kind for tag, entry in DRIVERS.items()}
DEVICE_KINDS = tuple(capability.kind for capability in CAPABILITIES)
DEFAULT_STATION = "default"


def device_kind(cfg: DeviceConfig) -> str:
    """idcard, cardreader, printer or camera."""
    return KIND_OF_DRIVER[driver_name(cfg)]


Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class StationConfig(_Section):
    """One kiosk (or staff counter): per kind, a device name under [devices] or a pool under [pools]."""

    label: Annotated[str, msgspec.Meta(max_length=80)] = ""
    idcard: str = ""
    cardreader: str = ""
    printer: str = ""
    camera: str = ""
    # Local uids allowed to open sessions at this station; empty: any uid the API lets in.
    uids: list[Annotated[int, msgspec.Meta(ge=0)]] = msgspec.field(default_factory=list)

    def uses(self) -> dict[str, str]:
        """kind -> device or pool name, for the kinds this station has."""
        return {kind: name for kind in DEVICE_KINDS if (name := getattr(self, kind))}


class PoolConfig(_Section):
    """Devices of one kind shared by the stations that name the pool."""

    devices: Annotated[list[str], msgspec.Meta(min_length=1, max_length=64)]


class OpsConfig(_Section):
    telemetry_interval_s: PositiveFloat = 60.0
    # Event-loop lag that raises a blue alert (it clears at half of it).
    loop_lag_warn_s: PositiveFloat = 0.5
    # How long a device stays failed (offline, no_device, hardware_error) before it counts toward
    # the red device-failure-share alert (a replug or a restart should not page anyone).
    device_failure_grace_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0


class GatewayConfig(_Section):
    node: NodeConfig = msgspec.field(default_factory=NodeConfig)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    uplink: UplinkConfig = msgspec.field(default_factory=UplinkConfig)
    ops: OpsConfig = msgspec.field(default_factory=OpsConfig)
    outbox: OutboxConfig = msgspec.field(default_factory=OutboxConfig)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    devices: dict[Name, DeviceConfig] = msgspec.field(default_factory=dict)
    stations: dict[Name, StationConfig] = msgspec.field(default_factory=dict)
    pools: dict[Name, PoolConfig] = msgspec.field(default_factory=dict)

    # Paths resolved against the environment (filled in by load_config).
    source: str = "<embedded default>"

    @property
    def state_dir(self) -> Path:
        if self.node.state_dir:
            return Path(self.node.state_dir).expanduser()
        xdg = os.environ.get("XDG_STATE_HOME")
        base = Path(xdg) if xdg else Path.home() / ".local" / "state"
        return base / "edge-gateway"

    @property
    def socket_path(self) -> Path:
        return Path(self.api.socket).expanduser() if self.api.socket else self.state_dir / "api.sock"

    @property
    def key_path(self) -> Path:
        if self.uplink.key_file:
            return Path(self.uplink.key_file).expanduser()
        return self.state_dir / "keys" / "node.ed25519"


_DEVICE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_PATH_RE = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def _friendly(err: msgspec.ValidationError, prefix: str = "") -> str:
    """Turn msgspec's message into `key.path: reason`."""
    text = str(err)
    match = _PATH_RE.search(text)
    path = prefix
    if match:
        text = text[: match.start()]
        inner = match.group("path").lstrip(".")
        path = f"{prefix}.{inner}" if prefix and inner else prefix or inner
    unknown = re.match(r"Object contains unknown field `(?P<key>[^`]+)`", text)
    if unknown:
        key = unknown.group("key")
        return f"{path + '.' if path else ''}{key}: unknown key"
    missing = re.match(r"Object missing required field `(?P<key>[^`]+)`", text)
    if missing:
        return f"{path + '.' if path else ''}{missing.group('key')}: required key is missing"
    return f"{path or '<top>'}: {text}"


def parse_config(text: str, *, source: str) -> GatewayConfig:
    """Parse and validate TOML text; raises ConfigError naming the key path and the reason."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not valid TOML: {err}") from err
    if "source" in raw:
        raise ConfigError(f"{source}: source: unknown key")
    devices_raw = raw.pop("devices", {})
    if not isinstance(devices_raw, dict):
        raise ConfigError(f"{source}: devices: must be a table of [devices.NAME] tables")
    devices: dict[str, DeviceConfig] = {}
    for name, value in devices_raw.items():
        if not _DEVICE_NAME.match(name):
            raise ConfigError(f"{source}: devices.{name}: device names are lowercase [a-z0-9_]")
        try:
            devices[name] = msgspec.convert(value, DeviceConfig)
        except msgspec.ValidationError as err:
            raise ConfigError(f"{source}: {_friendly(err, f'devices.{name}')}") from err
    try:
        config = msgspec.convert(raw, GatewayConfig)
    except msgspec.ValidationError as err:
        raise ConfigError(f"{source}: {_friendly(err)}") from err
    config = msgspec.structs.replace(config, source=source, devices=devices)
    try:
        check_stations(config)
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from err
    problems = simulation_errors(config)
    if problems:
        raise ConfigError(f"{source}: {problems[0]}")
    return config


def check_stations(config: GatewayConfig) -> None:
    """Stations and pools name devices that exist, of the right kind; ValueError names the key."""
    kinds = {name: device_kind(cfg) for name, cfg in config.devices.items()}
    pool_kind: dict[str, str] = {}
    for pool, pool_table in config.pools.items():
        if pool in kinds:
            raise ValueError(f"pools.{pool}: a pool cannot share its name with a device")
        if len(set(pool_table.devices)) != len(pool_table.devices):
            raise ValueError(f"pools.{pool}.devices: a device is listed twice")
        for device in pool_table.devices:
            if device not in kinds:
                raise ValueError(f"pools.{pool}.devices: no device named {device!r} under [devices]")
        found = {kinds[d] for d in pool_table.devices}
        if len(found) != 1:
            raise ValueError(f"pools.{pool}.devices: a pool's devices are of one kind, got {sorted(found)}")
        pool_kind[pool] = found.pop()
    for station, table in config.stations.items():
        for kind, target in table.uses().items():
            got = kinds.get(target) or pool_kind.get(target)
            if got is None:
                raise ValueError(f"stations.{station}.{kind}: no device or pool named {target!r}")
            if got != kind:
                raise ValueError(f"stations.{station}.{kind}: {target!r} is a {got}, not a {kind}")
    if config.pools and not config.stations:
        raise ValueError("pools: a pool serves stations; add [stations.NAME] tables that use it")


def embedded_default_text() -> str:
    return resources.files("gateway").joinpath("default.toml").read_text(encoding="utf-8")


def locate_config(explicit: str | None) -> str | None:
    """Which file to read: -c, then $EDGE_GATEWAY_CONFIG, then /etc; None means the embedded default."""
    if explicit:
        return explicit
    env = os.environ.get(ENV_CONFIG)
    if env:
        return env
    for candidate in DEFAULT_LOCATIONS:
        if candidate.exists():
            return str(candidate)
    return None


def load_config(explicit: str | None = None) -> GatewayConfig:
    """Find, read and validate the configuration."""
    path = locate_config(explicit)
    if path is None:
        return parse_config(embedded_default_text(), source="<embedded default>")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from err
    return parse_config(text, source=path)


def as_dict(config: GatewayConfig) -> dict[str, Any]:
    """Plain data form (for diff on reload and for the support bundle)."""
    data: dict[str, Any] = msgspec.to_builtins(config)
    data.pop("source", None)
    return data


SECRET_KEYS = frozenset({"password", "totp_secret", "pin_hash", "client_key", "secret"})


def redacted(config: GatewayConfig) -> dict[str, Any]:
    """The config with secret values replaced, for support bundles and diag."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ("<redacted>" if k in SECRET_KEYS and v else walk(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    result: dict[str, Any] = walk(as_dict(config))
    return result
