"""The MQTT v5 link to the cloud broker: TLS, presence, downlink subscription, reconnection.

The application owns the reconnection loop (aiomqtt style): one aiomqtt client per connection;
when to try again is `gateway.uplink.reconnect` (first-connect jitter, a cheap TCP probe while
the broker is unreachable, a spread return, capped backoff with full jitter, reset only after a
connection stayed up `stable_after_s`). While connected, the link runs its session workers (the
publisher) beside the downlink receive loop; when any of them ends, the connection is torn down
and rebuilt.

How one connection is made (the settings, TLS, the aiomqtt client, the TCP probe) is
`gateway.uplink.mqtt_client`; its public names are importable from here too.

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
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol

import aiomqtt
import msgspec
import structlog
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.ratelimit import echo
from gateway.status import LinkState
from gateway.tasks import cancel_and_wait
from gateway.uplink.mqtt_client import DEFAULT_PORTS as DEFAULT_PORTS
from gateway.uplink.mqtt_client import DOWNLINK_BACKLOG as DOWNLINK_BACKLOG
from gateway.uplink.mqtt_client import MAX_PACKET_BYTES as MAX_PACKET_BYTES
from gateway.uplink.mqtt_client import PUBACK_FAILURE as PUBACK_FAILURE
from gateway.uplink.mqtt_client import BrokerAddress as BrokerAddress
from gateway.uplink.mqtt_client import ClientFactory as ClientFactory
from gateway.uplink.mqtt_client import DropHandler as DropHandler
from gateway.uplink.mqtt_client import LinkChannel, LinkClient, probe
from gateway.uplink.mqtt_client import LinkConfigError as LinkConfigError
from gateway.uplink.mqtt_client import LinkDown as LinkDown
from gateway.uplink.mqtt_client import LinkError as LinkError
from gateway.uplink.mqtt_client import LinkSettings as LinkSettings
from gateway.uplink.mqtt_client import LinkTimeout as LinkTimeout
from gateway.uplink.mqtt_client import PublishTimeout as PublishTimeout
from gateway.uplink.mqtt_client import tls_context as tls_context
from gateway.uplink.reconnect import (
    BUSY_CODES,
    REDIRECT_CODES,
    USE_ANOTHER_SERVER,
    parse_server_reference,
)

log = structlog.get_logger(__name__)

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


class _NotConnected(LinkDown, LinkTimeout):
    """wait_connected ran out of time."""


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


class MqttLink:
    """One node's connection to the broker, kept up for as long as the link runs."""

    def __init__(
        self,
        settings: LinkSettings,
        node_id: str,
        *,
        on_command: CommandHandler | None = None,
        workers: Sequence[SessionWorker] = (),
        on_state: Callable[[LinkState], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.address = settings.address
        self.node_id = node_id
        self._policy = settings.policy()
        self._rng = rng or random.Random()
        # Presence identity: this link's epoch (ms) and a counter per connection attempt.
        self.epoch = time.time_ns() // 1_000_000
        self._conn = 0
        # Builds each connection's client (and loads the TLS files at start).
        self.clients = ClientFactory(
            settings, node_id, status_topic=self.status_topic, epoch=self.epoch, rng=self._rng
        )
        # (host, port) a Server Reference sent us to, and whether it was only for one connection.
        self._target: tuple[str, int] | None = None
        self._target_once = False
        self._redirects = 0
        self._last_client: LinkClient | None = None
        self._on_command = on_command
        self._workers = list(workers)
        self._on_state = on_state
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
        await self.clients.load_tls()
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
                probe_error = await probe(*self._endpoint(), timeout=self.settings.connect_timeout_s)
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
            if was_up and time.monotonic() - connected_at[0] >= self.settings.stable_after_s:
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

    def _broker_text(self) -> str:
        host, port = self._endpoint()
        return f"{'mqtts' if self.address.tls else 'mqtt'}://{host}:{port}"

    def _dropped(self, kind: str, topic: str, reason: str) -> None:
        self.downlink_dropped[kind] = self.downlink_dropped.get(kind, 0) + 1
        if self.on_drop is not None:
            self.on_drop(kind, topic, reason)

    async def _session(self, connected_at: list[float]) -> None:
        self._conn += 1
        conn = self._conn
        client = self.clients.build(*self._endpoint(), conn, on_drop=self._dropped)
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
                    self.down_topic, options=DOWN_SUBSCRIPTION, timeout=self.settings.connect_timeout_s
                )
            await client.publish_acked(
                self.status_topic,
                self.clients.presence("online", conn),
                retain=True,
                timeout=self.settings.connect_timeout_s,
            )
            try:
                await self._serve(client, conn)
            finally:
                client.fail_pending(LinkDown("connection closed"))

    async def _serve(self, client: LinkClient, conn: int) -> None:
        channel = LinkChannel(client, self.settings.publish_timeout_s)
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
                    self.clients.presence("offline", conn),
                    retain=True,
                    timeout=2.0,
                    expiry_s=self.clients.presence_expiry(),
                )
            return
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result
        raise LinkDown("a session task ended")

    async def _receive(self, client: LinkClient) -> None:
        async for message in client.messages:
            payload = message.payload
            data = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload or "").encode()
            if self._on_command is None:
                continue
            try:
                async with asyncio.timeout(self.settings.command_timeout_s):
                    await self._on_command(str(message.topic), data)
            except Exception:
                log.exception("downlink_handler_failed", topic=echo(message.topic))
        raise LinkDown("message stream ended")


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
