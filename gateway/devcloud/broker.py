"""The development cloud on a real MQTT broker: uplinks and presence in, signed commands out."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import ssl
from collections.abc import Sequence

import aiomqtt
import structlog

from gateway.devcloud.cloud import DevCloud
from gateway.uplink.mqtt import BrokerAddress

log = structlog.get_logger(__name__)

UP_TOPICS = ("edge/+/up/#", "edge/+/status")
RETRY_S = 1.0


def client_id(role: str) -> str:
    """A client id no other dev cloud process uses (a duplicate id would disconnect the other)."""
    return f"devcloud-{role}-{os.getpid()}-{secrets.token_hex(3)}"


class BrokerCloud:
    """Keeps a DevCloud connected to one broker: uplinks in, commands out, reconnecting after a loss."""

    def __init__(
        self,
        cloud: DevCloud,
        broker: str,
        *,
        topics: Sequence[str] = UP_TOPICS,
        tls: ssl.SSLContext | None = None,
        role: str = "feed",
        timeout_s: float = 10.0,
    ) -> None:
        self.cloud = cloud
        self.address = BrokerAddress.parse(broker)
        self.topics = tuple(topics)
        self.tls = tls
        self.client_id = client_id(role)
        self.timeout_s = timeout_s
        self.connected = asyncio.Event()
        self.last_error: str | None = None

    async def run(self) -> None:
        """Serve until cancelled; a lost connection is retried every second."""
        reported = False
        while True:
            try:
                await self._session()
            except aiomqtt.MqttError as err:
                self.connected.clear()
                self.last_error = str(err)
                if not reported:
                    self.cloud.feed.emit(
                        "broker",
                        f"   broker {self.address.host}:{self.address.port} unreachable ({err}); retrying",
                        error=str(err),
                    )
                    reported = True
            else:
                reported = False
            await asyncio.sleep(RETRY_S)

    async def _session(self) -> None:
        client = aiomqtt.Client(
            self.address.host,
            self.address.port,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=self.tls,
            timeout=self.timeout_s,
            keepalive=30,
        )
        async with client:
            for topic in self.topics:
                await client.subscribe(topic, qos=1, timeout=self.timeout_s)
            self.connected.set()
            self.cloud.feed.emit(
                "broker",
                f"   connected to mqtt://{self.address.host}:{self.address.port}, listening on "
                + ", ".join(self.topics),
                topics=list(self.topics),
            )
            sender = asyncio.create_task(self._send(client), name="devcloud-send")
            try:
                async for message in client.messages:
                    payload = message.payload
                    raw = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()
                    self.cloud.on_message(str(message.topic), raw)
            finally:
                self.connected.clear()
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await sender

    async def _send(self, client: aiomqtt.Client) -> None:
        while True:
            downlink = await self.cloud.outgoing.get()
            try:
                await client.publish(downlink.topic, downlink.raw, qos=1, timeout=self.timeout_s)
            except aiomqtt.MqttError:
                # Not lost: it goes out on the next connection (its exp still bounds its life).
                self.cloud.outgoing.put_nowait(downlink)
                raise
