"""Store and forward through a real broker: outage, ACL refusal, priority, expiry."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
from collections import Counter
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.uplink.envelope import Sealer
from gateway.uplink.keys import KeyRing
from gateway.uplink.mqtt import LinkSettings, MqttLink
from gateway.uplink.outbox import ClassConfig, Outbox, OutboxAlert, OutboxConfig
from gateway.uplink.publisher import Publisher
from gateway.uplink.verifier import verify_lines
from tests.support.mosquitto import BrokerFactory
from tests.uplink.conftest import NODE
from tests.uplink.helpers import Collector, payload_of, until

STREAMS = ("tx", "audit", "alert", "event", "telemetry")


def first_arrivals(envelopes: list[bytes], stream: str) -> list[int]:
    """Seqs of one stream in the order they first arrived (resends of the same seq ignored)."""
    seen: set[int] = set()
    order = []
    for raw in envelopes:
        payload = payload_of(raw)
        seq = payload["seq"]
        assert isinstance(seq, int)
        if payload["stream"] == stream and seq not in seen:
            seen.add(seq)
            order.append(seq)
    return order


async def test_broker_outage_loses_nothing_and_keeps_order(
    tmp_path: Path, sealer: Sealer, ring: KeyRing, make_broker: BrokerFactory
) -> None:
    broker = make_broker(persistence=True)
    total = 1000
    async with Collector("127.0.0.1", broker.port) as cloud, Outbox(tmp_path / "o.db", sealer) as outbox:
        publisher = Publisher(outbox, NODE)
        link = MqttLink(
            LinkSettings(broker.url, backoff_min_s=0.1, backoff_max_s=0.5), NODE, workers=[publisher.run]
        )
        async with link:
            await link.wait_connected(timeout=10)
            rng = random.Random(7)

            async def produce(worker: int) -> None:
                for i in range(total // 10):
                    await outbox.enqueue(rng.choice(STREAMS), "reading", {"worker": worker, "i": i})
                    await asyncio.sleep(rng.random() * 0.004)

            producers = asyncio.gather(*(produce(w) for w in range(10)))
            await cloud.wait_for(lambda: len(cloud.envelopes()) > 100, timeout=20)
            await broker.astop()  # SIGTERM: the broker saves the cloud's session and goes away
            await link.wait_disconnected(timeout=10)
            await asyncio.sleep(0.5)
            queued_during_outage = outbox.backlog()
            await broker.astart()  # same port
            await producers
            await link.wait_connected(timeout=15)
            await cloud.wait_for(lambda: len(set(cloud.envelopes())) >= total, timeout=60)
            assert link.state.connects >= 2
            # With the link still up: the cloud may already hold a message whose PUBACK the outage
            # swallowed (the broker kept it); the resend's PUBACK is what clears it from the outbox.
            await until(lambda: outbox.backlog() == 0, timeout=10)
        envelopes = cloud.envelopes()
        report = verify_lines(envelopes, ring)
        assert report.ok, report.format_report()
        assert len(set(envelopes)) == total
        assert sum(s.envelopes for s in report.streams.values()) == total
        for stream in STREAMS:
            order = first_arrivals(envelopes, stream)
            assert order == sorted(order) == list(range(1, len(order) + 1)), f"{stream} out of order"
        assert queued_during_outage > 0, "the outage must have caught messages in the outbox"
        assert sum(c.delivered for c in outbox.stats().classes.values()) >= total


async def test_acl_refusal_parks_the_message_and_the_queue_goes_on(
    tmp_path: Path, sealer: Sealer, make_broker: BrokerFactory
) -> None:
    # mosquitto 2.0.11 answers a denied QoS 1 publish from an MQTT v5 client with PUBACK 0x87.
    broker = make_broker(acl=f"topic readwrite edge/#\ntopic deny edge/{NODE}/up/audit\n")
    alerts: list[OutboxAlert] = []
    async with (
        Collector("127.0.0.1", broker.port) as cloud,
        Outbox(tmp_path / "o.db", sealer, on_alert=alerts.append) as outbox,
    ):
        publisher = Publisher(outbox, NODE, inflight=1)
        async with MqttLink(LinkSettings(broker.url), NODE, workers=[publisher.run]) as link:
            await link.wait_connected(timeout=10)
            for i in range(3):
                await outbox.enqueue("tx", "t", {"i": i})
                await outbox.enqueue("audit", "a", {"i": i})
            await cloud.wait_for(lambda: len(cloud.envelopes("tx")) == 3, timeout=10)
            await outbox.enqueue("tx", "t", {"after": True})
            await cloud.wait_for(lambda: len(cloud.envelopes("tx")) == 4, timeout=10)
            await asyncio.sleep(0.1)
        stats = outbox.stats().classes
    assert cloud.envelopes("audit") == []
    assert stats["audit"].rejected == 3 and stats["audit"].parked == 3 and stats["audit"].count == 0
    assert stats["tx"].delivered == 4 and stats["tx"].rejected == 0
    rejected = [a for a in alerts if a.kind == "rejected"]
    assert [a.fields["seq"] for a in rejected] == [1, 2, 3]
    assert all(a.stream == "audit" and a.fields["reason"] == 0x87 for a in rejected)
    assert publisher.rejected == 3


async def test_higher_priority_classes_go_first_and_expired_never_go(
    tmp_path: Path, sealer: Sealer, make_broker: BrokerFactory
) -> None:
    broker = make_broker()
    config = OutboxConfig(event=ClassConfig(priority=40, ttl_s=0.2, when_full="drop_oldest"))
    async with (
        Collector("127.0.0.1", broker.port) as cloud,
        Outbox(tmp_path / "o.db", sealer, config=config) as outbox,
    ):
        # Queued while offline: telemetry first, then the urgent ones.
        for i in range(30):
            await outbox.enqueue("telemetry", "cpu", {"i": i})
        for i in range(3):
            await outbox.enqueue("event", "e", {"i": i})
        for i in range(5):
            await outbox.enqueue("tx", "t", {"i": i})
            await outbox.enqueue("alert", "door_open", {"i": i})
        await asyncio.sleep(0.3)
        publisher = Publisher(outbox, NODE)
        async with MqttLink(LinkSettings(broker.url), NODE, workers=[publisher.run]):
            await cloud.wait_for(lambda: len(cloud.envelopes()) >= 40, timeout=15)
            await asyncio.sleep(0.2)
    streams = [str(payload_of(raw)["stream"]) for raw in cloud.envelopes()]
    assert streams == ["alert"] * 5 + ["tx"] * 5 + ["telemetry"] * 30
    assert Counter(streams)["event"] == 0


async def test_rejected_messages_requeued_after_the_cause_is_fixed_go_out_as_the_same_bytes(
    tmp_path: Path, sealer: Sealer, ring: KeyRing, make_broker: BrokerFactory
) -> None:
    denying = make_broker(acl=f"topic readwrite edge/#\ntopic deny edge/{NODE}/up/audit\n")
    fixed = make_broker()
    async with Outbox(tmp_path / "o.db", sealer) as outbox:
        publisher = Publisher(outbox, NODE, inflight=1)
        async with MqttLink(LinkSettings(denying.url), NODE, workers=[publisher.run]) as link:
            await link.wait_connected(timeout=10)
            for i in range(3):
                await outbox.enqueue("audit", "a", {"i": i})
            await until(lambda: outbox.stats().classes["audit"].parked == 3, timeout=10)
            # Requeued while the broker still refuses: sent again at once, parked again.
            assert await outbox.requeue_rejected("audit") == {"audit": 3}
            await until(lambda: outbox.stats().classes["audit"].rejected == 6, timeout=10)
            assert outbox.stats().classes["audit"].parked == 3

        async with Collector("127.0.0.1", fixed.port) as cloud:
            publisher = Publisher(outbox, NODE)
            async with MqttLink(LinkSettings(fixed.url), NODE, workers=[publisher.run]) as link:
                await link.wait_connected(timeout=10)
                await asyncio.sleep(0.2)
                assert cloud.envelopes("audit") == [], "parked messages stay parked until requeued"
                assert await outbox.requeue_rejected("audit", seqs=[2, 3]) == {"audit": 2}
                await cloud.wait_for(lambda: len(cloud.envelopes("audit")) == 2, timeout=10)
                await outbox.enqueue("audit", "a", {"i": 3})
                await cloud.wait_for(lambda: len(cloud.envelopes("audit")) == 3, timeout=10)
                assert await outbox.requeue_rejected() == {"audit": 1}
                await cloud.wait_for(lambda: len(cloud.envelopes("audit")) == 4, timeout=10)
                await until(lambda: outbox.backlog() == 0, timeout=10)
        stats = outbox.stats().classes["audit"]
        envelopes = cloud.envelopes("audit")

    def seq_of(raw: bytes) -> int:
        seq = payload_of(raw)["seq"]
        assert isinstance(seq, int)
        return seq

    assert [seq_of(raw) for raw in envelopes] == [2, 3, 4, 1]
    assert len(set(envelopes)) == 4
    assert stats.parked == 0 and stats.requeued == 6 and stats.delivered == 4
    # Requeued messages arrive after newer ones; the receiver sees that, and the chain holds.
    report = verify_lines(envelopes, ring)
    assert (report.valid, report.invalid) == (4, 0)
    assert [(p.kind, p.seq) for p in report.problems] == [("reorder", 1)]
    by_seq: list[bytes] = sorted(envelopes, key=seq_of)
    in_order = verify_lines(by_seq, ring)
    assert in_order.ok, in_order.format_report()


async def test_a_file_damaged_while_running_is_recovered_and_what_reads_back_is_delivered(
    tmp_path: Path, sealer: Sealer, ring: KeyRing, make_broker: BrokerFactory
) -> None:
    broker = make_broker()
    path = tmp_path / "o.db"
    async with Outbox(path, sealer) as outbox:
        await asyncio.gather(*(outbox.enqueue("tx", "t", {"i": i, "pad": "q" * 300}) for i in range(300)))
        with sqlite3.connect(path) as side:
            side.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        original = {payload_of(p.envelope)["seq"]: p.envelope for p in await outbox.read_page("tx", 0, 1000)}
        with path.open("r+b") as fh:  # smash pages in the middle of the file under the running outbox
            fh.seek(path.stat().st_size // 2)
            fh.write(os.urandom(8192))
        with sqlite3.connect(path) as side:  # another write, so cached pages go stale
            side.execute("UPDATE counters SET value = value")
        async with Collector("127.0.0.1", broker.port) as cloud:
            publisher = Publisher(outbox, NODE)
            async with MqttLink(LinkSettings(broker.url), NODE, workers=[publisher.run]) as link:
                await link.wait_connected(timeout=10)
                await until(lambda: bool(outbox.recoveries), timeout=15)
                salvaged = outbox.recoveries[0].salvaged
                await cloud.wait_for(lambda: len(set(cloud.envelopes("tx"))) >= salvaged, timeout=20)
                await until(lambda: outbox.backlog() == 0, timeout=10)
                assert link.state.connects == 1, "the damaged file did not cost the connection"
            received = set(cloud.envelopes("tx"))
    # Depending on which pages broke, the damage shows on a read or on the deletes that PUBACKs
    # cause; either way the writer recovers, and what it salvaged is sent (again): at least once,
    # never anything but the sealed bytes.
    assert 0 < salvaged < 300
    assert len(received) >= salvaged
    assert all(original[payload_of(raw)["seq"]] == raw for raw in received), "resent as sealed"
    report = verify_lines(list(received), ring)  # the lost ones show as gaps; every one received verifies
    assert report.valid == len(received) and report.invalid == 0


async def test_no_subscribers_keeps_tx_until_a_consumer_subscribes(
    tmp_path: Path, sealer: Sealer, ring: KeyRing, make_broker: BrokerFactory
) -> None:
    # mosquitto answers a QoS 1 publish from an MQTT v5 client that matches no subscription with
    # PUBACK 0x10 and drops the message (src/handle_publish.c; its test
    # 03-publish-qos1-no-subscribers-v5.py); a v3.1.1 client would get a plain PUBACK.
    broker = make_broker()
    async with Outbox(tmp_path / "o.db", sealer) as outbox:
        publisher = Publisher(outbox, NODE, no_subscribers_retry_min_s=0.1, no_subscribers_retry_max_s=30)
        async with MqttLink(LinkSettings(broker.url), NODE, workers=[publisher.run]) as link:
            await link.wait_connected(timeout=10)
            await asyncio.gather(*(outbox.enqueue("tx", "t", {"i": i}) for i in range(25)))
            await outbox.enqueue("telemetry", "cpu", {"load": 1})
            await until(lambda: publisher.no_subscribers["telemetry"] == 1, timeout=10)
            # tx is kept and tried again while nobody listens (a whole window of 0x10 answers is
            # one round: the wait grows per round, 0.1 s, 0.2 s, ...); telemetry is not kept.
            await until(lambda: publisher.no_subscribers["tx"] >= 65, timeout=10)
            classes = outbox.stats().classes
            assert classes["tx"].count == 25 and classes["tx"].delivered == 0
            assert classes["telemetry"].count == 0 and classes["telemetry"].delivered == 1
            async with Collector("127.0.0.1", broker.port) as cloud:
                await cloud.wait_for(lambda: len(set(cloud.envelopes("tx"))) == 25, timeout=20)
                await until(lambda: outbox.backlog() == 0, timeout=10)
                envelopes = cloud.envelopes()
        stats = publisher.stats()
    assert first_arrivals(envelopes, "tx") == list(range(1, 26))
    assert all(payload_of(raw)["stream"] == "tx" for raw in envelopes), "telemetry was gone"
    report = verify_lines(envelopes, ring)
    assert report.ok, report.format_report()
    assert stats.no_subscribers == stats.no_subscribers_by_class["tx"] + 1
    assert stats.held == []


async def test_no_subscribers_counts_as_delivered_for_a_class_not_kept(
    tmp_path: Path, sealer: Sealer, make_broker: BrokerFactory
) -> None:
    broker = make_broker()
    async with Outbox(tmp_path / "o.db", sealer) as outbox:
        publisher = Publisher(outbox, NODE, keep_on_no_subscribers=["audit"])
        async with MqttLink(LinkSettings(broker.url), NODE, workers=[publisher.run]) as link:
            await link.wait_connected(timeout=10)
            await outbox.enqueue("tx", "t", {"i": 0})
            await until(lambda: outbox.stats().classes["tx"].delivered == 1, timeout=10)
    assert publisher.no_subscribers["tx"] == 1 and outbox.backlog() == 0
    with pytest.raises(ValueError, match="unknown classes"):
        Publisher(outbox, NODE, keep_on_no_subscribers=["tx", "bogus"])


async def test_stale_telemetry_expires_on_the_broker_and_the_expiry_is_on_the_wire(
    tmp_path: Path, sealer: Sealer, make_broker: BrokerFactory
) -> None:
    broker = make_broker()
    config = OutboxConfig(telemetry=ClassConfig(priority=10, ttl_s=2.0, when_full="drop_oldest"))
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 600

    def consumer() -> aiomqtt.Client:
        return aiomqtt.Client(
            "127.0.0.1",
            broker.port,
            identifier="late-consumer",
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=props,
        )

    async with consumer() as late:  # subscribes, then goes away with its session kept
        await late.subscribe(f"edge/{NODE}/up/#", qos=1)
    async with (
        aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5) as raw,
        Outbox(tmp_path / "o.db", sealer, config=config) as outbox,
    ):
        await raw.subscribe(f"edge/{NODE}/up/#", qos=1)
        publisher = Publisher(outbox, NODE)
        async with MqttLink(LinkSettings(broker.url), NODE, workers=[publisher.run]) as link:
            await link.wait_connected(timeout=10)
            await outbox.enqueue("telemetry", "cpu", {"load": 1})
            await outbox.enqueue("tx", "t", {"i": 0})
            seen: dict[str, int | None] = {}
            async with asyncio.timeout(10):
                async for message in raw.messages:
                    expiry = getattr(message.properties, "MessageExpiryInterval", None)
                    seen[str(message.topic).rsplit("/", 1)[-1]] = expiry
                    if len(seen) == 2:
                        break
    assert seen["tx"] is None, "tx never expires"
    telemetry_expiry = seen["telemetry"]
    assert telemetry_expiry is not None and 1 <= telemetry_expiry <= 2
    await asyncio.sleep(3.0)  # the telemetry's lifetime passes while the consumer is away
    async with consumer() as late:
        got: list[str] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                async for message in late.messages:
                    got.append(str(message.topic).rsplit("/", 1)[-1])
    assert got == ["tx"], "the broker kept the tx for the consumer and dropped the stale telemetry"


async def test_a_held_stream_does_not_hold_the_others(
    tmp_path: Path, sealer: Sealer, make_broker: BrokerFactory
) -> None:
    broker = make_broker()
    async with (
        Collector("127.0.0.1", broker.port, topic=f"edge/{NODE}/up/telemetry") as cloud,
        Outbox(tmp_path / "o.db", sealer) as outbox,
    ):
        publisher = Publisher(outbox, NODE, no_subscribers_retry_min_s=6.0, no_subscribers_retry_max_s=6.0)
        async with MqttLink(LinkSettings(broker.url), NODE, workers=[publisher.run]) as link:
            await link.wait_connected(timeout=10)
            await outbox.enqueue("tx", "t", {"i": 0})  # nobody subscribes to tx
            await until(lambda: publisher.no_subscribers["tx"] >= 1, timeout=10)
            for i in range(5):
                await outbox.enqueue("telemetry", "cpu", {"i": i})
            await cloud.wait_for(lambda: len(cloud.envelopes("telemetry")) == 5, timeout=10)
            # All telemetry went while tx waited for its first resend (3-6 s away).
            assert publisher.no_subscribers["tx"] == 1 and publisher.stats().held == ["tx"]
            assert outbox.stats().classes["tx"].count == 1
            assert publisher.stats().no_subscribers_by_class["telemetry"] == 0
