"""The MQTT v5 link to the cloud broker: TLS, presence, downlink subscription, reconnection.

The application owns the reconnection loop (aiomqtt style): one aiomqtt client per connection,
capped exponential backoff with full jitter between attempts, reset only after a connection
stayed up `stable_after_s`. While connected, the link runs its session workers (the publisher)
beside the downlink receive loop; when any of them ends, the connection is torn down and
rebuilt.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import aiomqtt
import paho.mqtt.client as paho
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from tenacity import AsyncRetrying, RetryCallState, wait_random_exponential

from gateway.errors import GatewayError
from gateway.ratelimit import echo
from gateway.tasks import cancel_and_wait
from gateway.uplink.commands import MAX_DOWNLINK_BYTES

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


@dataclass(frozen=True)
class LinkState:
    """What /v1/status and the metrics show about the link."""

    connected: bool = False
    # Wall-clock time of the last change between connected and disconnected.
    since: float = 0.0
    last_error: str | None = None
    # Failed attempts since the last stable connection (drives the backoff).
    failures: int = 0
    connects: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "since": self.since,
            "last_error": self.last_error,
            "failures": self.failures,
            "connects": self.connects,
        }


class PublishChannel(Protocol):
    """What a session worker may do with a live connection."""

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        timeout: float | None = None,
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
    """aiomqtt's client with a publish that returns the PUBACK reason code (aiomqtt drops it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acks: dict[int, asyncio.Future[int]] = {}
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
        super()._on_disconnect(client, userdata, flags, reason_code, properties)
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
    ) -> int:
        """QoS 1 publish; returns the PUBACK reason code once the broker answered."""
        info = self._client.publish(topic, payload, 1, retain)
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
    ) -> int:
        return await self._client.publish_acked(
            topic, payload, retain=retain, timeout=self._timeout if timeout is None else timeout
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
        stable_after_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        publish_timeout_s: float = 30.0,
        command_timeout_s: float = 30.0,
        inflight: int = 20,
        on_command: CommandHandler | None = None,
        workers: Sequence[SessionWorker] = (),
        on_state: Callable[[LinkState], None] | None = None,
    ) -> None:
        self.address = BrokerAddress.parse(broker)
        if client_cert and not client_key:
            raise LinkConfigError("client_cert needs client_key")
        self.node_id = node_id
        self._ca_file = ca_file
        self._client_cert = client_cert
        self._client_key = client_key
        self._keepalive_s = keepalive_s
        self._backoff = wait_random_exponential(multiplier=backoff_min_s, max=backoff_max_s)
        self._stable_after_s = stable_after_s
        self._connect_timeout_s = connect_timeout_s
        self._publish_timeout_s = publish_timeout_s
        self._command_timeout_s = command_timeout_s
        self._inflight = inflight
        self._on_command = on_command
        self._workers = list(workers)
        self._on_state = on_state
        self._tls: ssl.SSLContext | None = None
        self._state = LinkState(since=time.time())
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

    def up_topic(self, stream: str) -> str:
        return f"edge/{self.node_id}/up/{stream}"

    # ---------------------------------------------------------------- lifecycle

    @property
    def state(self) -> LinkState:
        return self._state

    def add_worker(self, worker: SessionWorker) -> None:
        """Run `worker(channel)` for every connection (before start)."""
        self._workers.append(worker)

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
        self._state = replace(self._state, **changes)
        if self._on_state is not None:
            try:
                self._on_state(self._state)
            except Exception:
                log.exception("link_state_callback_failed")

    def _delay(self, failures: int) -> float:
        state = RetryCallState(AsyncRetrying(), fn=None, args=(), kwargs={})
        state.attempt_number = failures
        return float(self._backoff(state))

    async def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
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
                self._connected.clear()
                self._disconnected.set()
                self._set_state(connected=False, since=time.time())
            if self._stop.is_set():
                break
            if was_up and time.monotonic() - connected_at[0] >= self._stable_after_s:
                failures = 0
            failures += 1
            reason = _describe(error)
            delay = self._delay(failures)
            self._set_state(last_error=reason, failures=failures)
            if failures == 1:
                log.warning(
                    "mqtt_link_down", broker=self._broker_text(), error=reason, retry_in_s=round(delay, 2)
                )
            else:
                log.debug("mqtt_link_retry", error=reason, failures=failures, retry_in_s=round(delay, 2))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop.wait()
        self._connected.clear()
        self._disconnected.set()

    def _broker_text(self) -> str:
        return f"{'mqtts' if self.address.tls else 'mqtt'}://{self.address.host}:{self.address.port}"

    def _client(self) -> _Client:
        client = _Client(
            self.address.host,
            self.address.port,
            identifier=self.node_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=aiomqtt.Will(self.status_topic, b"offline", qos=1, retain=True),
            keepalive=self._keepalive_s,
            timeout=self._connect_timeout_s,
            tls_context=self._tls,
            max_inflight_messages=self._inflight + 4,
            max_queued_incoming_messages=DOWNLINK_BACKLOG,
            properties=_connect_properties(),
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
        client = self._client()
        async with client:
            connected_at.append(time.monotonic())
            self._set_state(connected=True, since=time.time(), connects=self._state.connects + 1)
            self._connected.set()
            self._disconnected.clear()
            log.info("mqtt_link_up", broker=self._broker_text(), node=self.node_id)
            # Subscribed before saying `online`: a cloud that reacts to presence reaches us.
            if self._on_command is not None:
                await client.subscribe(
                    self.down_topic, options=DOWN_SUBSCRIPTION, timeout=self._connect_timeout_s
                )
            await client.publish_acked(
                self.status_topic, b"online", retain=True, timeout=self._connect_timeout_s
            )
            try:
                await self._serve(client)
            finally:
                client.fail_pending(LinkDown("connection closed"))

    async def _serve(self, client: _Client) -> None:
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
                await client.publish_acked(self.status_topic, b"offline", retain=True, timeout=2.0)
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
