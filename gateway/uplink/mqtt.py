"""The MQTT v5 link to the cloud broker: TLS, presence, downlink subscription, reconnection.

The application owns the reconnection loop (aiomqtt style): one aiomqtt client per connection;
when to try again is `gateway.uplink.reconnect` (first-connect jitter, a cheap TCP probe while
the broker is unreachable, a spread return, capped backoff with full jitter, reset only after a
connection stayed up `stable_after_s`). While connected, the link runs its session workers (the
publisher) beside the downlink receive loop; when any of them ends, the connection is torn down
and rebuilt.

Every connection resumes one persistent session (Clean Start 0, Session Expiry Interval
`session_expiry_s`), so the broker keeps QoS 1 commands sent while the node is away; the link
subscribes again only when the CONNACK says the session is new (Session Present 0). The broker's
hints are honoured: a Server Keep Alive in the CONNACK replaces ours (paho applies it), a busy
answer (0x89, 0x97, 0x9F) waits the longest backoff, and "use another server" / "server moved"
(0x9C, 0x9D) with a Server Reference sends the next attempt there.

Presence on `edge/{node}/status` (retained) is a small JSON object: state, an epoch (ms when the
link was created) and a per-epoch connection counter, the time and the gateway version. The will
carries the same connection identity as that connection's `online`, so a consumer orders them
(see `gateway.uplink.presence`). The will and the `offline` expire with the session
(Message Expiry Interval), so a broker does not hand a week-old `offline` to a newcomer.

Facts relied on (MQTT v5.0, OASIS 2019): CONNECT Session Expiry Interval is property 0x11
(§3.1.2.11.2), Clean Start is CONNECT flag bit 1 (§3.1.2.4), CONNACK Session Present is bit 0 of
the acknowledge flags (§3.2.2.1.1), Server Keep Alive 0x13 and Server Reference 0x1C are CONNACK
properties (§3.2.2.3.14, §3.2.2.3.16), PUBLISH Message Expiry Interval is 0x02 (§3.3.2.3.3), and
a PUBACK below 0x80 is a success, 0x10 meaning "no matching subscribers" (§3.4.2.1). The same
numbers: Epic MQTTCore `FMQTT5Property` / `EMQTTReasonCode`, docs.rs `mqtt-proto`
`PubackReasonCode` (NoMatchingSubscribers = 16) and paho-mqtt's `properties.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import aiomqtt
import msgspec
import paho.mqtt.client as paho
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.errors import GatewayError
from gateway.ratelimit import echo
from gateway.status import LinkState
from gateway.tasks import cancel_and_wait
from gateway.uplink.commands import MAX_DOWNLINK_BYTES
from gateway.uplink.presence import presence_payload
from gateway.uplink.reconnect import (
    BUSY_CODES,
    REDIRECT_CODES,
    USE_ANOTHER_SERVER,
    ReconnectPolicy,
    parse_server_reference,
)

log = structlog.get_logger(__name__)

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
# Retained downlinks are never delivered at subscribe: subscription option Retain Handling 2,
# "do not send retained messages at the time of the subscribe" (OASIS MQTT 5.0 §3.8.3.1; the same
# value 2 in Eclipse Paho C's MQTTSubscribe_options.retainHandling and AWS IoT SDK's
# RetainHandlingType.DontSend). A command is not retained by the cloud, and retained junk would
# otherwise come back at every connect.
DOWN_SUBSCRIPTION: Final = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
# The broker accepted the message but nobody subscribes to its topic: it was not kept.
NO_MATCHING_SUBSCRIBERS: Final = 0x10
# Redirects (Server Reference) followed in a row without a connection that came up.
_MAX_REDIRECTS: Final = 3

CommandHandler = Callable[[str, bytes], Awaitable[None]]
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


class _NotConnected(LinkDown, LinkTimeout):
    """wait_connected ran out of time."""


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


class PublishChannel(Protocol):
    """What a session worker may do with a live connection."""

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        timeout: float | None = None,
        expiry_s: int | None = None,
    ) -> int: ...


SessionWorker = Callable[[PublishChannel], Awaitable[None]]


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


class _Client(aiomqtt.Client):
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


class _Channel:
    """The PublishChannel handed to session workers for one connection."""

    def __init__(self, client: _Client, default_timeout: float) -> None:
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


class MqttLink:
    """One node's connection to the broker, kept up for as long as the link runs."""

    def __init__(
        self,
        broker: str,
        node_id: str,
        *,
        ca_file: str | Path | None = None,
        client_cert: str | Path | None = None,
        client_key: str | Path | None = None,
        keepalive_s: int = 30,
        backoff_min_s: float = 1.0,
        backoff_max_s: float = 60.0,
        first_connect_jitter_s: float = 0.0,
        reconnect_spread_s: float = 0.0,
        session_expiry_s: int = 3600,
        stable_after_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        publish_timeout_s: float = 30.0,
        command_timeout_s: float = 30.0,
        inflight: int = 20,
        on_command: CommandHandler | None = None,
        workers: Sequence[SessionWorker] = (),
        on_state: Callable[[LinkState], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.address = BrokerAddress.parse(broker)
        if not 0 <= session_expiry_s <= 0xFFFFFFFF:
            raise LinkConfigError("session_expiry_s must be 0..4294967295")
        if client_cert and not client_key:
            raise LinkConfigError("client_cert needs client_key")
        self.node_id = node_id
        self._ca_file = ca_file
        self._client_cert = client_cert
        self._client_key = client_key
        self._keepalive_s = keepalive_s
        self._policy = ReconnectPolicy(
            backoff_min_s=backoff_min_s,
            backoff_max_s=backoff_max_s,
            first_connect_jitter_s=first_connect_jitter_s,
            reconnect_spread_s=reconnect_spread_s,
        )
        self._session_expiry_s = session_expiry_s
        self._rng = rng or random.Random()
        # Presence identity: this link's epoch (ms) and a counter per connection attempt.
        self.epoch = time.time_ns() // 1_000_000
        self._conn = 0
        # (host, port) a Server Reference sent us to, and whether it was only for one connection.
        self._target: tuple[str, int] | None = None
        self._target_once = False
        self._redirects = 0
        self._last_client: _Client | None = None
        self._stable_after_s = stable_after_s
        self._connect_timeout_s = connect_timeout_s
        self._publish_timeout_s = publish_timeout_s
        self._command_timeout_s = command_timeout_s
        self._inflight = inflight
        self._on_command = on_command
        self._workers = list(workers)
        self._on_state = on_state
        self._tls: ssl.SSLContext | None = None
        self._state = LinkState(since=time.time(), server=self._broker_text())
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._disconnected.set()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Downlink messages dropped before `on_command` (retained, oversize, backlog full), by kind.
        self.downlink_dropped: dict[str, int] = {}
        self.on_drop: DropHandler | None = None

    # ---------------------------------------------------------------- topics

    @property
    def status_topic(self) -> str:
        return f"edge/{self.node_id}/status"

    @property
    def down_topic(self) -> str:
        return f"edge/{self.node_id}/down/#"

    # ---------------------------------------------------------------- lifecycle

    @property
    def state(self) -> LinkState:
        return self._state

    async def start(self) -> MqttLink:
        """Load the TLS files (errors surface here) and start the connection loop."""
        if self._task is not None:
            return self
        if self.address.tls:
            self._tls = await asyncio.to_thread(
                tls_context, ca_file=self._ca_file, client_cert=self._client_cert, client_key=self._client_key
            )
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name=f"mqtt-link-{self.node_id}")
        return self

    async def close(self, *, timeout: float = 10.0) -> None:
        """Say `offline`, disconnect cleanly and end every task (cancelled after `timeout`)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(task)
        except TimeoutError:
            await cancel_and_wait(task)

    async def __aenter__(self) -> MqttLink:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_connected(self, *, timeout: float) -> None:
        """Return once the link is up; LinkDown (a LinkTimeout too) after `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError as err:
            raise _NotConnected(f"not connected within {timeout}s: {self._state.last_error}") from err

    async def wait_disconnected(self, *, timeout: float) -> None:
        """Return once the link is down; LinkTimeout after `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                await self._disconnected.wait()
        except TimeoutError as err:
            raise LinkTimeout(f"still connected after {timeout}s") from err

    # ---------------------------------------------------------------- the loop

    def _set_state(self, **changes: Any) -> None:
        self._state = msgspec.structs.replace(self._state, **changes)
        if self._on_state is not None:
            try:
                self._on_state(self._state)
            except Exception:
                log.exception("link_state_callback_failed")

    def _delay(self, failures: int) -> float:
        """The backoff after `failures` failed full connects (full jitter, capped)."""
        return self._policy.full_jitter(failures)

    async def _pause(self, delay: float) -> None:
        """Sleep `delay` seconds, or less if the link is being closed."""
        if delay > 0 and not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop.wait()

    async def _run(self) -> None:
        rng = self._rng
        await self._pause(self._policy.first_connect(rng))
        # Attempts (probes and connects) that failed since the last stable connection: shown in
        # the state. Full connects that failed or did not stay up: they drive the backoff.
        failures = 0
        connect_failures = 0
        down_since = time.monotonic()
        # Spread the next full connect: the connection was lost or the broker was unreachable,
        # so the rest of the fleet is likely coming back now too.
        spread = False
        while not self._stop.is_set():
            if failures:
                probe_error = await self._probe()
                if probe_error is not None:
                    failures += 1
                    spread = True
                    self._target = None  # a redirect target that does not answer is dropped
                    delay = self._policy.probe_interval(time.monotonic() - down_since, rng)
                    self._note_failure(failures, probe_error, delay)
                    await self._pause(delay)
                    continue
                if spread:
                    spread = False
                    await self._pause(self._policy.spread(rng))
                    if self._stop.is_set():
                        break
            connected_at: list[float] = []
            error: BaseException | None = None
            try:
                await self._session(connected_at)
            except (aiomqtt.MqttError, LinkError, OSError) as err:
                error = err
            except Exception as err:  # a bug in a worker must not end the link for good
                log.exception("link_session_failed")
                error = err
            was_up = bool(connected_at)
            if was_up:
                down_since = time.monotonic()
                self._connected.clear()
                self._disconnected.set()
                self._set_state(connected=False, since=time.time())
            if self._stop.is_set():
                break
            if was_up and time.monotonic() - connected_at[0] >= self._stable_after_s:
                failures = connect_failures = 0
            failures += 1
            connect_failures += 1
            code = self._server_hint(was_up)
            if code in REDIRECT_CODES and self._target is not None:
                delay = 0.0
            elif was_up and connect_failures == 1 and code not in BUSY_CODES:
                spread = True
                delay = 0.0
            else:
                delay = self._policy.after_failed_connect(connect_failures, code, rng)
            self._note_failure(failures, _describe(error), delay)
            await self._pause(delay)
        self._connected.clear()
        self._disconnected.set()

    def _note_failure(self, failures: int, reason: str, delay: float) -> None:
        self._set_state(last_error=reason, failures=failures)
        if failures == 1:
            log.warning(
                "mqtt_link_down", broker=self._broker_text(), error=reason, retry_in_s=round(delay, 2)
            )
        else:
            log.debug("mqtt_link_retry", error=reason, failures=failures, retry_in_s=round(delay, 2))

    def _server_hint(self, was_up: bool) -> int | None:
        """The reason code the server gave (refused CONNACK or DISCONNECT); follow a redirect."""
        client, self._last_client = self._last_client, None
        if self._target is not None and (self._target_once or not was_up):
            # A one-time redirect is used up; a redirect target that failed is dropped.
            self._target = None
        if client is None or client.server_code is None:
            return None
        code = client.server_code
        if code in REDIRECT_CODES:
            reference = getattr(client.server_properties, "ServerReference", None)
            parsed = (
                parse_server_reference(str(reference), default_port=self.address.port) if reference else None
            )
            if parsed is not None and self._redirects < _MAX_REDIRECTS:
                self._redirects += 1
                self._target, self._target_once = parsed, code == USE_ANOTHER_SERVER
                log.warning("mqtt_server_redirect", reason=f"0x{code:02x}", server=self._broker_text())
            else:
                log.warning(
                    "mqtt_server_redirect_ignored", reason=f"0x{code:02x}", reference=str(reference)[:100]
                )
        elif code in BUSY_CODES:
            log.warning("mqtt_server_busy", reason=f"0x{code:02x}")
        return code

    def _endpoint(self) -> tuple[str, int]:
        return self._target or (self.address.host, self.address.port)

    async def _probe(self) -> str | None:
        """A plain TCP connect to the broker (no TLS, no MQTT); None when it answered."""
        host, port = self._endpoint()
        try:
            async with asyncio.timeout(min(self._connect_timeout_s, 5.0)):
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

    def _broker_text(self) -> str:
        host, port = self._endpoint()
        return f"{'mqtts' if self.address.tls else 'mqtt'}://{host}:{port}"

    def presence(self, state: str, conn: int) -> bytes:
        """The presence payload: what a consumer needs to order it against others of this node."""
        return presence_payload(self.node_id, state, epoch=self.epoch, conn=conn)

    def _presence_expiry(self) -> int | None:
        return self._session_expiry_s or None

    def _keepalive(self) -> int:
        """Ours, shortened by up to a quarter at random so nodes that connected together drift
        out of phase (their pings and, after a silent drop, their wills do not come in bursts)."""
        low = max(2, math.ceil(self._keepalive_s * 0.75))
        return self._rng.randint(min(low, self._keepalive_s), self._keepalive_s)

    def _client(self, conn: int, keepalive: int) -> _Client:
        host, port = self._endpoint()
        connect = _connect_properties()
        connect.SessionExpiryInterval = self._session_expiry_s
        will = aiomqtt.Will(
            self.status_topic,
            self.presence("offline", conn),
            qos=1,
            retain=True,
            properties=_expiry_properties(self._presence_expiry(), PacketTypes.WILLMESSAGE),
        )
        client = _Client(
            host,
            port,
            identifier=self.node_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=connect,
            will=will,
            keepalive=keepalive,
            timeout=self._connect_timeout_s,
            tls_context=self._tls,
            max_inflight_messages=self._inflight + 4,
            max_queued_incoming_messages=DOWNLINK_BACKLOG,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        # paho's own TCP/TLS connect timeout, used in the executor thread.
        client._client.connect_timeout = self._connect_timeout_s
        client.on_drop = self._dropped
        return client

    def _dropped(self, kind: str, topic: str, reason: str) -> None:
        self.downlink_dropped[kind] = self.downlink_dropped.get(kind, 0) + 1
        if self.on_drop is not None:
            self.on_drop(kind, topic, reason)

    async def _session(self, connected_at: list[float]) -> None:
        self._conn += 1
        conn = self._conn
        client = self._client(conn, self._keepalive())
        self._last_client = client
        async with client:
            connected_at.append(time.monotonic())
            self._redirects = 0
            # paho replaced the keepalive with the broker's Server Keep Alive, if it sent one.
            keepalive = int(getattr(client._client, "_keepalive", 0)) or None
            lost = 0 if client.session_present else 1
            self._set_state(
                connected=True,
                since=time.time(),
                connects=self._state.connects + 1,
                session_present=client.session_present,
                keepalive_s=keepalive,
                server=self._broker_text(),
                sessions_lost=self._state.sessions_lost + (lost if self._state.connects else 0),
            )
            self._connected.set()
            self._disconnected.clear()
            log.info(
                "mqtt_link_up",
                broker=self._broker_text(),
                node=self.node_id,
                session_present=client.session_present,
                keepalive_s=keepalive,
            )
            # Subscribed before saying `online`: a cloud that reacts to presence reaches us. A
            # resumed session still holds the subscription (and the commands queued for it).
            if self._on_command is not None and not client.session_present:
                await client.subscribe(
                    self.down_topic, options=DOWN_SUBSCRIPTION, timeout=self._connect_timeout_s
                )
            await client.publish_acked(
                self.status_topic, self.presence("online", conn), retain=True, timeout=self._connect_timeout_s
            )
            try:
                await self._serve(client, conn)
            finally:
                client.fail_pending(LinkDown("connection closed"))

    async def _serve(self, client: _Client, conn: int) -> None:
        channel = _Channel(client, self._publish_timeout_s)
        tasks: list[asyncio.Task[None]] = [asyncio.create_task(self._receive(client), name="mqtt-receive")]
        tasks += [asyncio.create_task(_as_none(w(channel)), name="mqtt-worker") for w in self._workers]
        stop = asyncio.create_task(_as_none(self._stop.wait()), name="mqtt-stop")
        try:
            done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in [*tasks, stop]:
                task.cancel()
            results = await asyncio.gather(*tasks, stop, return_exceptions=True)
        if stop in done:
            with contextlib.suppress(aiomqtt.MqttError, LinkError):
                await client.publish_acked(
                    self.status_topic,
                    self.presence("offline", conn),
                    retain=True,
                    timeout=2.0,
                    expiry_s=self._presence_expiry(),
                )
            return
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result
        raise LinkDown("a session task ended")

    async def _receive(self, client: _Client) -> None:
        async for message in client.messages:
            payload = message.payload
            data = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload or "").encode()
            if self._on_command is None:
                continue
            try:
                async with asyncio.timeout(self._command_timeout_s):
                    await self._on_command(str(message.topic), data)
            except Exception:
                log.exception("downlink_handler_failed", topic=echo(message.topic))
        raise LinkDown("message stream ended")


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


async def _as_none(awaitable: Awaitable[Any]) -> None:
    await awaitable


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "disconnected"
    cause = error.__cause__ or error.__context__
    text = f"{type(error).__name__}: {error}"
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" ({type(cause).__name__}: {cause})"
    return text
