"""A fleet on one broker: 200 nodes with the real uplink parts ride out a broker restart.

The timing targets (90 % back within 10 s, the slowest within 30 s, no second with more than
5 % of the fleet connecting) are measured by bench/fleet.py; this test checks the behaviour:
everyone comes back, spread over time rather than in one burst, resumes its session, receives
every command sent while it was away, and delivers everything queued during the outage.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from contextlib import AsyncExitStack
from pathlib import Path

import aiomqtt

from gateway.uplink.presence import Presence, PresenceTracker
from gateway.uplink.verifier import verify_logs
from tests.support.fleet import Fleet, Spread
from tests.support.mosquitto import BrokerFactory
from tests.uplink.conftest import NODE
from tests.uplink.helpers import Collector, SilentProxy, until

NODES = 200
OUTAGE_S = 10.0


async def test_a_fleet_rides_out_a_broker_restart(tmp_path: Path, make_broker: BrokerFactory) -> None:
    broker = make_broker(persistence=True)
    async with AsyncExitStack() as stack:
        consumers = [
            await stack.enter_async_context(
                Collector("127.0.0.1", broker.port, topic="$share/cloud/edge/+/up/#", client_id=f"cloud-{i}")
            )
            for i in range(2)
        ]
        presence = await stack.enter_async_context(
            Collector("127.0.0.1", broker.port, topic="edge/+/status", client_id="presence")
        )
        fleet = Fleet(
            tmp_path,
            broker.url,
            NODES,
            first_connect_jitter_s=2.0,
            reconnect_spread_s=8.0,
            session_expiry_s=600,
            connect_timeout_s=5.0,
        )
        stack.push_async_callback(fleet.close)
        await fleet.start()
        await fleet.wait(lambda: fleet.connected() == NODES, timeout=60)
        cold_spread = Spread.of(fleet.nodes, fleet.started_at)
        print(f"cold start: {cold_spread.summary(NODES)}")
        for node in fleet.nodes:
            await node.outbox.enqueue("tx", "service_request", {"phase": "before"})
        await fleet.wait(lambda: fleet.backlog() == 0, timeout=60)

        await broker.astop()  # SIGTERM: mosquitto saves every session (and its subscription)
        await fleet.wait(lambda: fleet.connected() == 0, timeout=30)
        for node in fleet.nodes:
            await node.outbox.enqueue("tx", "service_request", {"phase": "outage"})
            await node.outbox.enqueue("telemetry", "cpu", {"load": 0.5})
        await asyncio.sleep(OUTAGE_S)
        await broker.astart()
        back = time.monotonic()

        # The cloud sends one command to every node at once, while most are still away.
        away_when_sent = 0
        async with aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5) as cloud:
            for node in fleet.nodes:
                away_when_sent += not node.link.state.connected
                await cloud.publish(f"edge/{node.node_id}/down/ping", f"cmd-{node.node_id}".encode(), qos=1)

        await fleet.wait(lambda: fleet.connected() == NODES, timeout=90)
        await fleet.wait(lambda: all(n.commands for n in fleet.nodes), timeout=30)
        await fleet.wait(lambda: fleet.backlog() == 0, timeout=60)
        # mosquitto does not restore shared subscriptions from its store: until the consumers have
        # subscribed again, a node that is already back gets PUBACK 0x10. Its tx is kept and sent
        # again; its telemetry is not kept (counted, and the broker dropped it).
        dropped = sum(n.publisher.no_subscribers["telemetry"] for n in fleet.nodes)
        kept = sum(n.publisher.no_subscribers["tx"] for n in fleet.nodes)
        total = 3 * NODES - dropped
        await until(lambda: sum(len(set(c.envelopes())) for c in consumers) >= total, timeout=30)
        returned = Spread.of(fleet.nodes, back)
        print(f"after a {OUTAGE_S:.0f} s outage: {returned.summary(NODES)}")
        print(f"commands sent while the node was away: {away_when_sent}/{NODES}")
        print(f"PUBACK 0x10 before the consumers were back: tx {kept} (kept), telemetry {dropped}")
        resumed = sum(1 for n in fleet.nodes if n.link.state.session_present)
        logs = [c.envelopes() for c in consumers]
        statuses = [r.payload for r in presence.received]
        ring = fleet.ring

    assert returned.missing == 0
    # The window was real: most commands went to nodes that were not connected.
    assert away_when_sent > NODES // 2, away_when_sent
    # Each node got exactly its own command (QoS 1 may repeat one; none went astray).
    for node in fleet.nodes:
        assert set(node.commands) == {f"cmd-{node.node_id}".encode()}, node.node_id
    assert resumed == NODES, "every node resumed its persistent session"
    # Spread, not a burst: the nodes came back over several seconds.
    assert len([s for s in returned.per_second if s]) >= 4, returned.per_second
    assert returned.peak < NODES / 2, returned.per_second
    assert len([s for s in cold_spread.per_second if s]) >= 2, cold_spread.per_second
    # Everything queued before and during the outage arrived, once verified across both consumers.
    report = verify_logs(logs, ring)
    assert report.ok, report.format_report()
    assert sum(s.envelopes for s in report.streams.values()) == total
    assert sum(s.envelopes for s in report.streams.values() if s.stream == "tx") == 2 * NODES
    # Presence: every node is known as online, whatever order the messages came in.
    tracker = PresenceTracker()
    for payload in statuses:
        tracker.apply(payload)
    assert {tracker.state(n.node_id) for n in fleet.nodes} == {"online"}


def newer_online(payload: bytes, first: Presence) -> bool:
    presence = Presence.parse(payload)
    return presence.state == "online" and presence.conn > first.conn


async def test_presence_orders_a_late_will_behind_the_newer_online(make_broker: BrokerFactory) -> None:
    from gateway.uplink.mqtt import LinkSettings, MqttLink

    broker = make_broker()
    async with (
        Collector("127.0.0.1", broker.port, topic=f"edge/{NODE}/status", client_id="presence") as cloud,
        SilentProxy(broker.port) as proxy,
    ):
        link = MqttLink(
            LinkSettings(
                f"mqtt://127.0.0.1:{proxy.port}",
                keepalive_s=2,
                backoff_min_s=0.2,
                backoff_max_s=1.0,
                connect_timeout_s=2.0,
            ),
            NODE,
        )
        async with link:
            await link.wait_connected(timeout=10)
            await cloud.wait_for(lambda: len(cloud.received) >= 1, timeout=10)  # its `online`
            proxy.pause()  # a silent network: the broker publishes the will after 1.5 keepalives
            await cloud.wait_for(lambda: len(cloud.received) >= 2, timeout=15)
            # The will as stored by the broker: retained, with the session's expiry on it.
            async with aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5) as c:
                await c.subscribe(f"edge/{NODE}/status", qos=1)
                async with asyncio.timeout(5):
                    stored = await anext(aiter(c.messages))
            assert isinstance(stored.payload, bytes)
            assert Presence.parse(stored.payload).state == "offline"
            expiry = getattr(stored.properties, "MessageExpiryInterval", None)
            assert stored.retain and expiry is not None and 0 < expiry <= 3600
            await link.wait_disconnected(timeout=15)
            proxy.resume()
            await link.wait_connected(timeout=15)
            first = Presence.parse(cloud.received[0].payload)
            await cloud.wait_for(
                lambda: any(newer_online(r.payload, first) for r in cloud.received), timeout=10
            )
    # Up to the new connection's `online` (the link's clean `offline` at the end comes after it).
    upto = next(i for i, r in enumerate(cloud.received) if newer_online(r.payload, first)) + 1
    received = [Presence.parse(r.payload) for r in cloud.received[:upto]]
    online1, will, online2 = received[0], received[1], received[-1]
    assert (online1.state, will.state) == ("online", "offline")
    assert will.conn == online1.conn < online2.conn and will.epoch == online2.epoch == link.epoch
    # Every `offline` before the new `online` belongs to an older connection: the broker's will,
    # the stalled connection's own last bytes when the network returns, or the will of an attempt
    # that connected and dropped again while the machine was busy.
    assert all(p.conn < online2.conn for p in received if p.state == "offline"), received
    # The broker sent them in order; a consumer that gets an old `offline` late (another cluster
    # member noticed the drop later, or another consumer of a shared subscription had it) still
    # ends with the newer `online`.
    payloads = [r.payload for r in cloud.received[:upto]]
    for order in itertools.permutations(range(len(payloads))):
        tracker = PresenceTracker()
        for index in order:
            tracker.apply(payloads[index])
        assert tracker.state(NODE) == "online", order
