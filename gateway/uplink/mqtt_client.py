"""The connection layer under `gateway.uplink.mqtt`: one connection to the broker.

`LinkSettings` says where and how the link connects (broker, TLS files, keepalive, reconnect
pacing, session expiry, timeouts, in-flight window). `ClientFactory` builds the aiomqtt client of
each connection from them: the node's identity, a persistent session (Clean Start 0, Session
Expiry Interval), the largest packet we accept, the retained `offline` will and a keepalive
shortened at random. `LinkClient` is that client: it returns PUBACK reason codes, keeps the
CONNACK / server DISCONNECT details and drops unwanted downlink messages before they queue.
`probe` is the cheap TCP reachability check the reconnect loop uses while the broker is away.
The errors of the link live here too; `gateway.uplink.mqtt` re-exports every public name.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
import ssl
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.errors import GatewayError
from gateway.uplink.commands import MAX_DOWNLINK_BYTES
from gateway.uplink.presence import presence_payload
from gateway.uplink.reconnect import ReconnectPolicy

if TYPE_CHECKING:
    from gateway.config import UplinkConfig
    from gateway.uplink.outbox import OutboxConfig

DEFAULT_PORTS: Final = {"mqtt": 1883, "mqtts": 8883}
# PUBACK reason codes below this are successes (0x10 "no matching subscribers" included).
PUBACK_FAILURE: Final = 0x80
# Downlink messages aiomqtt holds before the receive loop takes them; more are dropped, counted.
DOWNLINK_BACKLOG: Final = 128
# MQTT v5 Maximum Packet Size in CONNECT (OASIS MQTT 5.0 §3.1.2.11.4): the broker discards a
# message larger than this instead of sending it (mosquitto's own test
# test/broker/12-prop-maximum-packet-size-publish.py checks exactly that). Room for the largest
# command, the longest topic and the headers.
MAX_PACKET_BYTES: Final = MAX_DOWNLINK_BYTES + 65_535 + 1024
# The longest a reachability probe (a bare TCP connect) waits for the broker.
PROBE_TIMEOUT_S: Final = 5.0

DropHandler = Callable[[str, str, str], None]


class LinkError(GatewayError):
    """Root of the MQTT link errors."""


class LinkConfigError(LinkError, ValueError):
    """The broker URL or the TLS files are unusable."""


class LinkDown(LinkError):
    """The connection is gone (or never came up); pending publishes fail with it."""


class LinkTimeout(LinkError, TimeoutError):
    """The link did not reach the awaited state (up or down) in time."""


class PublishTimeout(LinkDown, TimeoutError):
    """No PUBACK within the timeout: the connection is treated as dead."""

    def __init__(self, topic: str, timeout: float) -> None:
        super().__init__(f"no PUBACK for {topic} within {timeout}s")
        self.topic = topic
        self.timeout = timeout


@dataclass(frozen=True)
class BrokerAddress:
    """A parsed `mqtt://host:port` or `mqtts://host:port`."""

    tls: bool
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
            raise LinkConfigError(f"broker must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got {url!r}")
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError as err:
            raise LinkConfigError(f"bad port in broker URL {url!r}") from err
        return cls(parts.scheme == "mqtts", parts.hostname, port)


@dataclass(frozen=True)
class LinkSettings:
    """Where and how the link connects and keeps its session; checked when made."""

    broker: str
    _: KW_ONLY
    ca_file: str | Path | None = None
    client_cert: str | Path | None = None
    client_key: str | Path | None = None
    keepalive_s: int = 30
    backoff_min_s: float = 1.0
    backoff_max_s: float = 60.0
    first_connect_jitter_s: float = 0.0
    reconnect_spread_s: float = 0.0
    session_expiry_s: int = 3600
    # A connection that stayed up this long resets the backoff.
    stable_after_s: float = 30.0
    connect_timeout_s: float = 10.0
    publish_timeout_s: float = 30.0
    # How long the command handler may take with one downlink message.
    command_timeout_s: float = 30.0
    # The session workers' window of unacknowledged publishes (paho is allowed 4 more).
    inflight: int = 20

    def __post_init__(self) -> None:
        BrokerAddress.parse(self.broker)
        if not 0 <= self.session_expiry_s <= 0xFFFFFFFF:
            raise LinkConfigError("session_expiry_s must be 0..4294967295")
        if self.client_cert and not self.client_key:
            raise LinkConfigError("client_cert needs client_key")
        self.policy()

    @classmethod
    def from_config(cls, uplink: UplinkConfig, outbox: OutboxConfig) -> LinkSettings:
        """The settings of `[uplink]` (empty TLS file names: none) and the `[outbox]` publish window."""
        return cls(
            uplink.broker,
            ca_file=uplink.ca_file or None,
            client_cert=uplink.client_cert or None,
            client_key=uplink.client_key or None,
            keepalive_s=uplink.keepalive_s,
            backoff_min_s=uplink.backoff_min_s,
            backoff_max_s=uplink.backoff_max_s,
            first_connect_jitter_s=uplink.first_connect_jitter_s,
            reconnect_spread_s=uplink.reconnect_spread_s,
            session_expiry_s=uplink.session_expiry_s,
            stable_after_s=uplink.stable_after_s,
            connect_timeout_s=uplink.connect_timeout_s,
            publish_timeout_s=outbox.publish_timeout_s,
            inflight=outbox.inflight,
        )

    @property
    def address(self) -> BrokerAddress:
        return BrokerAddress.parse(self.broker)

    def policy(self) -> ReconnectPolicy:
        """The reconnect waits these settings ask for (ValueError for nonsense figures)."""
        return ReconnectPolicy(
            backoff_min_s=self.backoff_min_s,
            backoff_max_s=self.backoff_max_s,
            first_connect_jitter_s=self.first_connect_jitter_s,
            reconnect_spread_s=self.reconnect_spread_s,
        )


class _ClosingSSLSocket(ssl.SSLSocket):
    """An SSLSocket that closes itself when the handshake fails (paho would leak it)."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def tls_context(
    *, ca_file: str | Path | None, client_cert: str | Path | None, client_key: str | Path | None
) -> ssl.SSLContext:
    """Client TLS: TLS 1.2 or newer, the broker's CA, our certificate, hostname checked."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.sslsocket_class = _ClosingSSLSocket
        if client_cert:
            ctx.load_cert_chain(str(client_cert), str(client_key) if client_key else None)
    except (OSError, ssl.SSLError) as err:
        raise LinkConfigError(f"cannot load TLS files: {err}") from err
    return ctx


class LinkClient(aiomqtt.Client):
    """aiomqtt's client with a publish that returns the PUBACK reason code (aiomqtt drops it)
    and the CONNACK / server DISCONNECT details aiomqtt does not keep (session present, reason
    code, properties)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acks: dict[int, asyncio.Future[int]] = {}
        self.session_present = False
        self.connack_code: int | None = None
        self.server_code: int | None = None
        self.server_properties: Properties | None = None
        # Told of every downlink message dropped here: (kind, topic, reason).
        self.on_drop: DropHandler = lambda _kind, _topic, _reason: None

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        # Refused before aiomqtt queues it, without aiomqtt's log line per dropped message.
        size = len(message.payload)
        if message.retain:
            kind, reason = "retained", "a retained downlink message is never a command"
        elif size > MAX_DOWNLINK_BYTES:
            kind, reason = "oversize", f"{size} bytes, limit {MAX_DOWNLINK_BYTES}"
        elif self._queue.full():
            kind, reason = "backlog_full", f"{self._queue.maxsize} messages already wait"
        else:
            super()._on_message(client, userdata, message)
            return
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = "<topic not UTF-8>"
        self.on_drop(kind, topic, reason)

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        self.connack_code = _code(reason_code)
        self.session_present = bool(flags.session_present)
        if self.connack_code >= PUBACK_FAILURE:
            self.server_code, self.server_properties = self.connack_code, properties
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        super()._on_publish(client, userdata, mid, reason_code, properties)
        fut = self._acks.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(int(reason_code.value))

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        if self.connack_code == 0 and (properties is not None or _code(reason_code) >= PUBACK_FAILURE):
            # The end of an accepted connection: a server DISCONNECT may say why or name another
            # server. (After a refused CONNACK, paho reports a protocol error here: not the server's.)
            self.server_code, self.server_properties = _code(reason_code), properties
        super()._on_disconnect(client, userdata, flags, reason_code, properties)
        if self._disconnected.done() and not self._disconnected.cancelled():
            # aiomqtt stores an unexpected disconnect here and never reads it; the link learns
            # of the loss from the receive loop and fail_pending, so mark it seen.
            self._disconnected.exception()
        self.fail_pending(LinkDown(f"connection lost: {reason_code}"))

    def fail_pending(self, error: LinkDown) -> None:
        """Connection loss fails every publish still waiting for its PUBACK, at once."""
        acks, self._acks = self._acks, {}
        for fut in acks.values():
            if not fut.done():
                fut.set_exception(error)
                # Nobody may be left to await it (the worker was cancelled first).
                fut.exception()

    async def publish_acked(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        timeout: float,
        expiry_s: int | None = None,
    ) -> int:
        """QoS 1 publish (with a Message Expiry Interval when given); returns the PUBACK reason code."""
        info = self._client.publish(topic, payload, 1, retain, _expiry_properties(expiry_s))
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise LinkDown(f"cannot publish: {paho.error_string(info.rc)}")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._acks[info.mid] = fut
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError as err:
            raise PublishTimeout(topic, timeout) from err
        finally:
            if self._acks.get(info.mid) is fut:
                del self._acks[info.mid]


class LinkChannel:
    """The PublishChannel handed to session workers for one connection."""

    def __init__(self, client: LinkClient, default_timeout: float) -> None:
        self._client = client
        self._timeout = default_timeout

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        timeout: float | None = None,
        expiry_s: int | None = None,
    ) -> int:
        return await self._client.publish_acked(
            topic,
            payload,
            retain=retain,
            timeout=self._timeout if timeout is None else timeout,
            expiry_s=expiry_s,
        )


class ClientFactory:
    """Builds the client of each connection of one node: identity, a persistent session, the
    largest packet we accept, the retained `offline` will, and a keepalive shortened at random."""

    def __init__(
        self, settings: LinkSettings, node_id: str, *, status_topic: str, epoch: int, rng: random.Random
    ) -> None:
        self.settings = settings
        self.node_id = node_id
        self.status_topic = status_topic
        # Presence identity: the link's epoch (ms); the caller counts the connections within it.
        self.epoch = epoch
        self.rng = rng
        self.tls: ssl.SSLContext | None = None

    async def load_tls(self) -> None:
        """Read the TLS files of an mqtts:// broker (LinkConfigError when they are unusable)."""
        settings = self.settings
        if settings.address.tls:
            self.tls = await asyncio.to_thread(
                tls_context,
                ca_file=settings.ca_file,
                client_cert=settings.client_cert,
                client_key=settings.client_key,
            )

    def presence(self, state: str, conn: int) -> bytes:
        """The presence payload: what a consumer needs to order it against others of this node."""
        return presence_payload(self.node_id, state, epoch=self.epoch, conn=conn)

    def presence_expiry(self) -> int | None:
        """The Message Expiry Interval of the will and the `offline`: the session's, if any."""
        return self.settings.session_expiry_s or None

    def keepalive(self) -> int:
        """Ours, shortened by up to a quarter at random so nodes that connected together drift
        out of phase (their pings and, after a silent drop, their wills do not come in bursts)."""
        keepalive_s = self.settings.keepalive_s
        low = max(2, math.ceil(keepalive_s * 0.75))
        return self.rng.randint(min(low, keepalive_s), keepalive_s)

    def build(self, host: str, port: int, conn: int, *, on_drop: DropHandler) -> LinkClient:
        """The client of connection number `conn` to host:port (not connected yet)."""
        settings = self.settings
        keepalive = self.keepalive()
        connect = _connect_properties()
        connect.SessionExpiryInterval = settings.session_expiry_s
        will = aiomqtt.Will(
            self.status_topic,
            self.presence("offline", conn),
            qos=1,
            retain=True,
            properties=_expiry_properties(self.presence_expiry(), PacketTypes.WILLMESSAGE),
        )
        client = LinkClient(
            host,
            port,
            identifier=self.node_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=connect,
            will=will,
            keepalive=keepalive,
            timeout=settings.connect_timeout_s,
            tls_context=self.tls,
            max_inflight_messages=settings.inflight + 4,
            max_queued_incoming_messages=DOWNLINK_BACKLOG,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        # paho's own TCP/TLS connect timeout, used in the executor thread.
        client._client.connect_timeout = settings.connect_timeout_s
        client.on_drop = on_drop
        return client


async def probe(host: str, port: int, *, timeout: float) -> str | None:
    """A plain TCP connect to the broker (no TLS, no MQTT), given `timeout` but at most
    PROBE_TIMEOUT_S; None when it answered."""
    try:
        async with asyncio.timeout(min(timeout, PROBE_TIMEOUT_S)):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as err:
        return f"unreachable: {type(err).__name__}: {err}"
    sock = writer.get_extra_info("socket")
    # A connect to a loopback port nobody listens on can pick that very port as its source
    # and connect to itself (TCP simultaneous open): that is not a broker, and it would
    # hold the port the broker wants to listen on again.
    selfish = sock is not None and sock.getsockname() == sock.getpeername()
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    return "unreachable: connected to itself (nobody listens)" if selfish else None


def _connect_properties() -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.MaximumPacketSize = MAX_PACKET_BYTES
    return props


def _code(reason_code: ReasonCode | int) -> int:
    return int(reason_code.value) if isinstance(reason_code, ReasonCode) else int(reason_code)


def _expiry_properties(expiry_s: int | None, packet: int = PacketTypes.PUBLISH) -> Properties | None:
    """A Message Expiry Interval property (PUBLISH or will), or None for no expiry."""
    if not expiry_s:
        return None
    props = Properties(packet)  # type: ignore[no-untyped-call]
    props.MessageExpiryInterval = min(int(expiry_s), 0xFFFFFFFF)
    return props
