"""A wall clock that steps forward then back: within a stream nothing goes out after a higher seq."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.uplink.envelope import Sealer
from gateway.uplink.keys import KeyRing
from gateway.uplink.mqtt import LinkSettings, MqttLink
from gateway.uplink.outbox import ClassConfig, Outbox, OutboxConfig
from gateway.uplink.publisher import Publisher
from gateway.uplink.verifier import verify_lines
from tests.support.mosquitto import BrokerFactory
from tests.uplink.conftest import NODE
from tests.uplink.helpers import Collector, payload_of, until


class SteppedClock:
    """A wall clock that a test can step (NTP fixing a wrong RTC, a technician's `date -s`)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_rows_passed_over_as_expired_never_go_out_after_higher_seqs(
    tmp_path: Path, sealer: Sealer, ring: KeyRing, make_broker: BrokerFactory
) -> None:
    broker = make_broker()
    clock = SteppedClock(1_800_000_000.0)
    config = OutboxConfig(event=ClassConfig(priority=40, ttl_s=60, when_full="drop_oldest"))
    async with (
        Collector("127.0.0.1", broker.port) as cloud,
        Outbox(tmp_path / "o.db", sealer, config=config, clock=clock) as outbox,
    ):
        for i in range(3):
            await outbox.enqueue("event", "e", {"i": i})  # seqs 1-3 expire at T+60
        clock.now += 3600  # a step forward
        for i in range(3, 5):
            await outbox.enqueue("event", "e", {"i": i})  # seqs 4-5 expire at T+3660
        publisher = Publisher(outbox, NODE)
        async with MqttLink(LinkSettings(broker.url), NODE, workers=[publisher.run]) as link:
            await link.wait_connected(timeout=10)
            await cloud.wait_for(lambda: len(cloud.envelopes("event")) >= 2, timeout=10)
            await until(lambda: outbox.stats().classes["event"].count == 0, timeout=10)
        assert outbox.stats().classes["event"].expired == 3, "passed over means dropped, counted"
        clock.now -= 3600  # and back: seqs 1-3 would not look expired any more
        await outbox.enqueue("event", "e", {"i": 5})
        async with MqttLink(LinkSettings(broker.url), NODE, workers=[publisher.run]) as link:
            await link.wait_connected(timeout=10)
            await cloud.wait_for(lambda: len(cloud.envelopes("event")) >= 3, timeout=10)
            await asyncio.sleep(0.3)
    seqs = [payload_of(raw)["seq"] for raw in cloud.envelopes("event")]
    assert seqs == [4, 5, 6], "the expired rows were dropped, never sent after 4 and 5"
    report = verify_lines(cloud.envelopes("event"), ring)
    assert report.ok, report.format_report()  # no reorder
