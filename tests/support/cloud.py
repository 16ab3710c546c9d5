"""The cloud side for end-to-end tests: a signing key and an MQTT client reading uplinks, sending commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.uplink.envelope import GENESIS_PREV, Sealer
from gateway.uplink.keys import NodeKey, b64url_decode, format_rfc3339
from gateway.uplink.presence import Presence, PresenceError

CLOUD_ID = "cloud"


@dataclass(frozen=True)
class Uplink:
    topic: str
    raw: bytes

    @property
    def payload(self) -> dict[str, Any]:
        outer = json.loads(self.raw)
        doc: dict[str, Any] = json.loads(b64url_decode(outer["payload"]))
        return doc

    @property
    def stream(self) -> str:
        return self.topic.rsplit("/", 1)[-1]

    @property
    def says_online(self) -> bool:
        """A presence message saying the node is online (a JSON object, docs/envelope.md)."""
        if not self.topic.endswith("/status"):
            return False
        try:
            return Presence.parse(self.raw).state == "online"
        except PresenceError:
            return False


def write_jwk(key: NodeKey, path: Path) -> Path:
    path.write_text(json.dumps(key.public_jwk))
    return path


class Cloud:
    """Connects to the broker as the cloud: collects `edge/+/up/#`, publishes signed commands."""

    def __init__(
        self,
        port: int,
        node: str,
        key: NodeKey | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        responder: Callable[[Uplink], dict[str, Any] | None] | None = None,
    ) -> None:
        self.port = port
        self.node = node
        self.key = key or NodeKey.generate(CLOUD_ID)
        self.tls = tls
        self.responder = responder
        self.received: list[Uplink] = []
        self._changed = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._counter = 0
        self.client_id = f"cloud-{time.time_ns()}"

    async def __aenter__(self) -> Cloud:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(15):
            await self._ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            # A persistent session, so nothing published while this client reconnects is lost.
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 3600
            client = aiomqtt.Client(
                "127.0.0.1",
                self.port,
                identifier=self.client_id,
                protocol=aiomqtt.ProtocolVersion.V5,
                tls_context=self.tls,
                clean_start=False,
                properties=props,
                timeout=5,
                keepalive=5,
            )
            try:
                async with client:
                    self._client = client
                    await client.subscribe(f"edge/{self.node}/up/#", qos=1)
                    await client.subscribe(f"edge/{self.node}/status", qos=1)
                    self._ready.set()
                    async for message in client.messages:
                        payload = message.payload
                        assert isinstance(payload, bytes | bytearray)
                        uplink = Uplink(str(message.topic), bytes(payload))
                        self.received.append(uplink)
                        self._changed.set()
                        if self.responder is not None and "/up/" in uplink.topic:
                            reply = self.responder(uplink)
                            if reply is not None:
                                await self.send("reply", reply)
            except aiomqtt.MqttError:
                self._client = None
                await asyncio.sleep(0.2)

    def command(
        self,
        type: str,
        body: dict[str, Any],
        *,
        command_id: str | None = None,
        node: str | None = None,
        exp: datetime | None = None,
        key: NodeKey | None = None,
    ) -> tuple[str, bytes]:
        """A signed downlink envelope and its id."""
        self._counter += 1
        command_id = command_id or f"cmd-{time.time_ns()}-{self._counter}"
        expiry = exp or datetime.now(UTC) + timedelta(minutes=5)
        raw = Sealer(key or self.key, node or self.node).seal(
            stream="down",
            seq=self._counter,
            prev=GENESIS_PREV,
            type=type,
            body=body,
            extra={"id": command_id, "exp": format_rfc3339(expiry)},
        )
        return command_id, raw

    async def publish(self, type: str, raw: bytes) -> None:
        async with asyncio.timeout(10):
            while self._client is None:
                await asyncio.sleep(0.05)
            await self._client.publish(f"edge/{self.node}/down/{type}", raw, qos=1)

    async def send(self, type: str, body: dict[str, Any], **kwargs: Any) -> str:
        command_id, raw = self.command(type, body, **kwargs)
        await self.publish(type, raw)
        return command_id

    async def wait_for(
        self, predicate: Callable[[Uplink], bool], timeout: float = 15.0, *, start: int = 0
    ) -> Uplink:
        """The first message from index `start` on that matches."""
        deadline = time.monotonic() + timeout
        seen = start
        while True:
            for uplink in self.received[seen:]:
                if predicate(uplink):
                    return uplink
            seen = len(self.received)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                kinds = [(u.stream, u.payload.get("type")) for u in self.received if "/up/" in u.topic]
                raise AssertionError(f"no matching uplink within {timeout}s; got {kinds}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()

    def uplinks(self, stream: str) -> list[Uplink]:
        return [u for u in self.received if u.topic.endswith(f"/up/{stream}")]
