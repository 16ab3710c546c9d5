"""Many simulated edge nodes in one process, each with the real uplink parts wired as the daemon
wires them (NodeKey, Sealer, Outbox on its own SQLite file, Publisher, MqttLink); used by the
fleet test and bench/fleet.py."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.status import LinkState
from gateway.uplink.envelope import Sealer
from gateway.uplink.keys import KeyRing, NodeKey
from gateway.uplink.mqtt import LinkSettings, MqttLink
from gateway.uplink.outbox import Outbox
from gateway.uplink.publisher import Publisher


@dataclass
class FleetNode:
    """One simulated node and what it saw."""

    node_id: str
    key: NodeKey
    outbox: Outbox
    publisher: Publisher
    link: MqttLink = field(init=False)
    commands: list[bytes] = field(default_factory=list)
    # Monotonic times at which the link came up.
    ups: list[float] = field(default_factory=list)
    downs: list[float] = field(default_factory=list)
    _was_up: bool = False

    def on_state(self, state: LinkState) -> None:
        if state.connected and not self._was_up:
            self.ups.append(time.monotonic())
        elif not state.connected and self._was_up:
            self.downs.append(time.monotonic())
        self._was_up = state.connected

    async def on_command(self, topic: str, payload: bytes) -> None:
        self.commands.append(payload)

    def first_up_after(self, t0: float) -> float | None:
        return next((t for t in self.ups if t >= t0), None)


class Fleet:
    """N nodes against one broker; start, stop, and the figures a fleet test or bench needs."""

    def __init__(self, root: Path, broker_url: str, count: int, *, prefix: str = "node", **link: Any) -> None:
        self.root = root
        self.broker_url = broker_url
        self.count = count
        self.prefix = prefix
        self.link_options = link
        self.nodes: list[FleetNode] = []
        # Monotonic time at which every link was started (after the nodes were built).
        self.started_at = 0.0

    @property
    def ring(self) -> KeyRing:
        """What a cloud trusts: every node's public key."""
        return KeyRing.from_jwks([n.key.public_jwk for n in self.nodes])

    async def start(self, *, seed: int = 0) -> None:
        """Build every node, then start all links at once (each applies its first-connect jitter)."""
        rng = random.Random(seed)
        settings = LinkSettings(self.broker_url, **self.link_options)
        for i in range(self.count):
            node_id = f"{self.prefix}-{i:04d}"
            key = NodeKey.generate(node_id)
            outbox = Outbox(self.root / node_id / "outbox.sqlite3", Sealer(key, node_id))
            await outbox.start()
            publisher = Publisher(outbox, node_id)
            node = FleetNode(node_id, key, outbox, publisher)
            node.link = MqttLink(
                settings,
                node_id,
                on_command=node.on_command,
                workers=[publisher.run],
                on_state=node.on_state,
                rng=random.Random(rng.random()),
            )
            self.nodes.append(node)
        self.started_at = time.monotonic()
        await asyncio.gather(*(n.link.start() for n in self.nodes))

    async def close(self) -> None:
        await asyncio.gather(*(n.link.close() for n in self.nodes), return_exceptions=True)
        await asyncio.gather(*(n.outbox.close() for n in self.nodes), return_exceptions=True)

    def connected(self) -> int:
        return sum(1 for n in self.nodes if n.link.state.connected)

    def backlog(self) -> int:
        return sum(n.outbox.backlog() for n in self.nodes)

    async def wait(self, predicate: Any, *, timeout: float, poll: float = 0.05) -> None:
        """Poll until predicate() is true; TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(poll)


@dataclass(frozen=True)
class Spread:
    """When the nodes came (back) up, relative to a start time."""

    delays: tuple[float, ...]
    missing: int
    per_second: tuple[int, ...]

    @classmethod
    def of(cls, nodes: Sequence[FleetNode], t0: float) -> Spread:
        firsts = [n.first_up_after(t0) for n in nodes]
        delays = sorted(t - t0 for t in firsts if t is not None)
        buckets = Counter(int(d) for d in delays)
        seconds = max(buckets) + 1 if buckets else 0
        missing = sum(1 for t in firsts if t is None)
        return cls(tuple(delays), missing, tuple(buckets[s] for s in range(seconds)))

    def quantile(self, q: float) -> float:
        if not self.delays:
            return math.nan
        index = min(len(self.delays) - 1, max(0, math.ceil(q * len(self.delays)) - 1))
        return self.delays[index]

    @property
    def peak(self) -> int:
        return max(self.per_second, default=0)

    def summary(self, count: int) -> str:
        return (
            f"p50 {self.quantile(0.5):.1f} s, p90 {self.quantile(0.9):.1f} s, "
            f"max {self.quantile(1.0):.1f} s, "
            f"peak {self.peak}/s ({100 * self.peak / count:.1f} % of {count}), missing {self.missing}, "
            f"per second {list(self.per_second)}"
        )
