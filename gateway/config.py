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
from gateway.errors import ConfigError
from gateway.uplink.outbox import OutboxConfig

DEFAULT_LOCATIONS = (Path("/etc/edge-gateway/gateway.toml"),)
ENV_CONFIG = "EDGE_GATEWAY_CONFIG"

NodeId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every config table: unknown keys are errors."""


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
    debug_tcp: str = ""

    def __post_init__(self) -> None:
        if self.debug_tcp:
            debug_tcp_address(self.debug_tcp)
        if self.idle_warning_s >= self.session_idle_timeout_s:
            raise ValueError("idle_warning_s must be shorter than session_idle_timeout_s")

    @property
    def mode(self) -> int:
        return int(self.socket_mode, 8)


def debug_tcp_address(value: str) -> tuple[str, int]:
    """Split and check `host:port`; only loopback addresses are allowed."""
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"debug_tcp must be HOST:PORT, got {value!r}")
    try:
        address = ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
    except ValueError as err:
        raise ValueError(f"debug_tcp host must be a loopback IP address, got {host!r}") from err
    if not address.is_loopback:
        raise ValueError(f"debug_tcp is refused for non-loopback address {host}")
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
        if self.broker and not re.match(r"^mqtts?://[^/:]+(:\d+)?/?$", self.broker):
            raise ValueError(f"broker must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got {self.broker!r}")
        if self.broker.startswith("mqtts://") and not self.ca_file:
            raise ValueError("an mqtts:// broker needs ca_file")
        if bool(self.client_cert) != bool(self.client_key):
            raise ValueError("client_cert and client_key go together")


class QueueConfig(_Section):
    depth: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 64
    deadline_s: PositiveFloat = 30.0


class SerialOptions(_Section):
    # A path, a pyserial URL (socket://host:port) or sim://NAME for the built-in simulator.
    port: str
    baudrate: Annotated[int, msgspec.Meta(ge=1200, le=921_600)] = 115_200
    queue: QueueConfig = msgspec.field(default_factory=QueueConfig)


class SamvDevice(SerialOptions, tag_field="driver", tag="samv"):
    poll_interval_s: PositiveFloat = 0.25
    read_timeout_s: PositiveFloat = 3.0


class EscposDevice(SerialOptions, tag_field="driver", tag="escpos"):
    baudrate: Annotated[int, msgspec.Meta(ge=1200, le=921_600)] = 9_600
    status_back: bool = False
    # Confirm each job printed (GS ( H process id); turn off for printers that lack the command.
    confirm_print: bool = True
    # "xonxoff": the printer paces job data with XON/XOFF (set it to match the printer's DIP
    # switches or memory switch); "none": it does not.
    flow_control: Literal["none", "xonxoff"] = "none"
    # Simulator only: seconds the simulated printer takes per job.
    sim_print_time_s: Annotated[float, msgspec.Meta(ge=0)] = 0.5


class PcscDevice(_Section, tag_field="driver", tag="pcsc"):
    reader: str = ""
    poll_interval_s: PositiveFloat = 0.3
    apdu_timeout_s: PositiveFloat = 3.0
    # Start the virtual card (vpcd) with this personality: "", "sscard", "bank", "staff".
    simulate: Literal["", "sscard", "bank", "staff"] = ""
    # Simulator only: the TCP port vpcd waits on for the virtual card (its reader.conf CHANNELID).
    sim_vpcd_port: Annotated[int, msgspec.Meta(ge=1, le=65_535)] = 35_963
    queue: QueueConfig = msgspec.field(default_factory=QueueConfig)


class V4l2Device(_Section, tag_field="driver", tag="v4l2"):
    device: str = "/dev/video0"
    timeout_s: PositiveFloat = 5.0
    max_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 5_000_000
    queue: QueueConfig = msgspec.field(default_factory=QueueConfig)


class HttpCameraDevice(_Section, tag_field="driver", tag="http"):
    # A snapshot URL, or sim://NAME for the built-in simulated camera.
    url: str
    username: str = ""
    password: str = ""
    auth: Literal["basic", "digest"] = "digest"
    timeout_s: PositiveFloat = 5.0
    max_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 5_000_000
    queue: QueueConfig = msgspec.field(default_factory=QueueConfig)


DeviceConfig = SamvDevice | EscposDevice | PcscDevice | V4l2Device | HttpCameraDevice


def driver_name(cfg: DeviceConfig) -> str:
    """The `driver` tag a device table was parsed with."""
    return str(cfg.__struct_config__.tag)


class OpsConfig(_Section):
    telemetry_interval_s: PositiveFloat = 60.0
    # Event-loop lag that raises a blue alert (it clears at half of it).
    loop_lag_warn_s: PositiveFloat = 0.5


class GatewayConfig(_Section):
    node: NodeConfig = msgspec.field(default_factory=NodeConfig)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    uplink: UplinkConfig = msgspec.field(default_factory=UplinkConfig)
    ops: OpsConfig = msgspec.field(default_factory=OpsConfig)
    outbox: OutboxConfig = msgspec.field(default_factory=OutboxConfig)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    devices: dict[Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,31}$")], DeviceConfig] = (
        msgspec.field(default_factory=dict)
    )

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
    return msgspec.structs.replace(config, source=source, devices=devices)


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
