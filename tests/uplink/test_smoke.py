"""End to end: outbox -> publisher -> link -> mosquitto -> collector."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.uplink.envelope import Sealer
from gateway.uplink.keys import KeyRing
from gateway.uplink.mqtt import LinkSettings, MqttLink
from gateway.uplink.outbox import Outbox
from gateway.uplink.publisher import Publisher
from gateway.uplink.verifier import verify_lines
from tests.support.mosquitto import BrokerFactory
from tests.uplink.conftest import NODE
from tests.uplink.helpers import Collector


async def test_messages_flow_in_order(
    tmp_path: Path, sealer: Sealer, ring: KeyRing, make_broker: BrokerFactory
) -> None:
    broker = make_broker()
    async with Collector("127.0.0.1", broker.port) as cloud, Outbox(tmp_path / "o.db", sealer) as outbox:
        publisher = Publisher(outbox, NODE)
        link = MqttLink(LinkSettings(broker.url, backoff_max_s=1), NODE, workers=[publisher.run])
        async with link:
            await link.wait_connected(timeout=10)
            for i in range(50):
                await outbox.enqueue(("tx", "event", "audit")[i % 3], "t", {"i": i})
            await cloud.wait_for(lambda: len(cloud.envelopes()) >= 50, timeout=20)
            async with asyncio.timeout(10):
                while outbox.backlog():  # the deletes commit just after the PUBACKs
                    await asyncio.sleep(0.01)
        report = verify_lines(cloud.envelopes(), ring)
        assert report.ok, report.format_report()
        assert outbox.stats().classes["tx"].delivered == 17
