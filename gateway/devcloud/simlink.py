"""`uplink.broker = "sim://cloud"`: the development cloud inside the daemon, over an in-memory link.

`SimCloudLink` offers what the daemon uses of `MqttLink` (start, close, state, wait_connected),
runs the same session workers (the publisher) with a channel whose publish hands the envelope's
bytes to the in-process `DevCloud` and answers with a PUBACK reason code, and delivers the
cloud's signed commands to the daemon's command handler one at a time, as the broker would. The
outbox, signing, the hash chain, acknowledgements and command verification stay real: only the
broker is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec
import structlog

from gateway.devcloud.cloud import DevCloud, load_cloud_key
from gateway.devcloud.feed import Feed
from gateway.simulation import SIM_BROKER
from gateway.status import LinkState
from gateway.uplink.keys import KeyRing, NodeKey, load_previous_key
from gateway.uplink.mqtt import CommandHandler, LinkDown, LinkTimeout, SessionWorker
from gateway.uplink.presence import presence_payload

log = structlog.get_logger(__name__)

PUBACK_SUCCESS = 0x00
FEED_PREFIX = "[dev-cloud] "


class _SimChannel:
    """A publish that reaches the in-process cloud; LinkDown once the link is closing."""

    def __init__(self, link: SimCloudLink) -> None:
        self._link = link

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        timeout: float | None = None,
        expiry_s: int | None = None,
    ) -> int:
        # Delivered at once to a cloud that is always there: a message expiry never comes into play.
        if not self._link.state.connected:
            raise LinkDown("the in-process cloud link is closed")
        self._link.cloud.on_message(topic, bytes(payload))
        # A round trip yields to the loop, as a real PUBACK does.
        await asyncio.sleep(0)
        return PUBACK_SUCCESS


class SimCloudLink:
    """The node's link to the in-process development cloud."""

    broker = SIM_BROKER

    def __init__(
        self,
        cloud: DevCloud,
        node_id: str,
        *,
        on_command: CommandHandler | None = None,
        workers: Sequence[SessionWorker] = (),
        command_timeout_s: float = 30.0,
    ) -> None:
        self.cloud = cloud
        self.node_id = node_id
        self._on_command = on_command
        self._workers = list(workers)
        self._command_timeout_s = command_timeout_s
        self._state = LinkState(since=time.time())
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def status_topic(self) -> str:
        return f"edge/{self.node_id}/status"

    async def start(self) -> SimCloudLink:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"sim-cloud-link-{self.node_id}")
        return self

    async def close(self, *, timeout: float = 10.0) -> None:
        """Say `offline` to the cloud and end the workers."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(timeout):
                await task

    async def wait_connected(self, *, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError as err:
            raise LinkTimeout(f"not connected within {timeout}s") from err

    async def _run(self) -> None:
        channel = _SimChannel(self)
        self._state = msgspec.structs.replace(
            self._state, connected=True, since=time.time(), connects=self._state.connects + 1
        )
        self._connected.set()
        online = presence_payload(self.node_id, "online", epoch=int(time.time() * 1000), conn=1)
        self.cloud.on_message(self.status_topic, online)
        log.info("mqtt_link_up", broker=SIM_BROKER, node=self.node_id)
        tasks = [asyncio.create_task(self._receive(), name="sim-cloud-receive")]
        tasks += [
            asyncio.create_task(_run_worker(worker, channel), name="sim-cloud-worker")
            for worker in self._workers
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            self._state = msgspec.structs.replace(self._state, connected=False, since=time.time())
            self._connected.clear()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.cloud.on_message(self.status_topic, b"offline")

    async def _receive(self) -> None:
        while True:
            downlink = await self.cloud.outgoing.get()
            if downlink.node != self.node_id or self._on_command is None:
                log.warning("sim_cloud_command_dropped", node=downlink.node, type=downlink.type)
                continue
            try:
                async with asyncio.timeout(self._command_timeout_s):
                    await self._on_command(downlink.topic, downlink.raw)
            except Exception:
                log.exception("downlink_handler_failed", topic=downlink.topic)


async def _run_worker(worker: SessionWorker, channel: _SimChannel) -> None:
    await worker(channel)


def sim_cloud_link(
    state_dir: Path,
    node_id: str,
    node_key: NodeKey,
    key_path: Path,
    *,
    announce: Callable[[str], None],
    on_command: CommandHandler | None,
    workers: Sequence[SessionWorker],
) -> SimCloudLink:
    """The in-process cloud (its key in `<state_dir>/devcloud`, trusting this node's keys) and its link."""
    key = load_cloud_key(state_dir / "devcloud")
    ring = KeyRing.from_jwks([node_key.public_jwk])
    retired = load_previous_key(key_path, node_id)
    if retired is not None:
        ring.add_jwk(retired.key.public_jwk, not_after=retired.not_after)
    cloud = DevCloud(key, ring, Feed(announce, prefix=FEED_PREFIX))
    announce(f"{FEED_PREFIX}in-process development cloud (uplink.broker = {SIM_BROKER}), cloud key {key.kid}")
    return SimCloudLink(cloud, node_id, on_command=on_command, workers=workers)
