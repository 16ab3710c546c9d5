"""The MQTT link against a real mosquitto: presence, downlink, silent network, backoff, TLS."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiomqtt
import pytest

from gateway.uplink.mqtt import BrokerAddress, LinkConfigError, LinkDown, LinkState, MqttLink
from gateway.uplink.presence import Presence
from tests.support.mosquitto import BrokerFactory, BrokerTls, free_port
from tests.uplink.conftest import NODE
from tests.uplink.helpers import Collector, SilentProxy
from tests.uplink.tls import TestCA


def statuses(cloud: Collector) -> list[str]:
    return [Presence.parse(r.payload).state for r in cloud.received if r.topic == f"edge/{NODE}/status"]


async def retained_status(port: int) -> Presence:
    """What a newcomer sees on the presence topic (the retained message)."""
    return Presence.parse(await retained_raw(port))


async def retained_raw(port: int) -> bytes:
    """The retained presence payload, as stored by the broker."""
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe(f"edge/{NODE}/status", qos=1)
        async with asyncio.timeout(5):
            async for message in client.messages:
                assert message.retain
                payload = message.payload
                assert isinstance(payload, bytes)
                return payload
    raise AssertionError("no retained status")


async def test_presence_online_then_offline_on_clean_close(make_broker: BrokerFactory) -> None:
    broker = make_broker()
    link = MqttLink(broker.url, NODE)
    async with link:
        await link.wait_connected(timeout=10)
        assert link.state.connected and link.state.connects == 1
        online = await retained_status(broker.port)
        assert (online.state, online.node, online.epoch, online.conn) == ("online", NODE, link.epoch, 1)
    final = link.state
    assert not final.connected
    offline = await retained_status(broker.port)
    assert (offline.state, offline.epoch, offline.conn) == ("offline", link.epoch, 1)
    assert offline > online


async def test_downlink_commands_reach_the_callback_raw(make_broker: BrokerFactory) -> None:
    broker = make_broker()
    got: list[tuple[str, bytes]] = []
    arrived = asyncio.Event()

    async def on_command(topic: str, payload: bytes) -> None:
        got.append((topic, payload))
        if len(got) == 2:
            arrived.set()
        if len(got) == 1:
            raise RuntimeError("a failing handler must not break the link")

    async with MqttLink(broker.url, NODE, on_command=on_command) as link:
        await link.wait_connected(timeout=10)
        async with aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5) as cloud:
            await cloud.publish(f"edge/{NODE}/down/ping", b'{"signed":1}', qos=1)
            await cloud.publish(f"edge/{NODE}/down/config.set", b"\x00\xffraw", qos=1)
            await cloud.publish("edge/other-node/down/ping", b"not for us", qos=1)
        async with asyncio.timeout(10):
            await arrived.wait()
        assert link.state.connected
    assert got == [
        (f"edge/{NODE}/down/ping", b'{"signed":1}'),
        (f"edge/{NODE}/down/config.set", b"\x00\xffraw"),
    ]


async def test_silent_network_is_noticed_within_two_keepalives_and_recovers(
    make_broker: BrokerFactory,
) -> None:
    broker = make_broker()
    states: list[LinkState] = []
    async with (
        Collector("127.0.0.1", broker.port, topic=f"edge/{NODE}/status") as cloud,
        SilentProxy(broker.port) as proxy,
    ):
        keepalive = 2
        link = MqttLink(
            f"mqtt://127.0.0.1:{proxy.port}",
            NODE,
            keepalive_s=keepalive,
            backoff_min_s=0.2,
            backoff_max_s=1.0,
            connect_timeout_s=2.0,
            on_state=states.append,
        )
        async with link:
            await link.wait_connected(timeout=10)
            proxy.pause()
            paused = time.monotonic()
            await link.wait_disconnected(timeout=4 * keepalive + 2)
            noticed = time.monotonic() - paused
            # paho pings after one quiet keepalive and gives up one keepalive later; its timer
            # is polled once a second.
            assert noticed <= 2 * keepalive + 1.5, f"took {noticed:.1f}s"
            # The broker, too, gives up on the silent client and publishes its will.
            await cloud.wait_for(lambda: statuses(cloud)[-1:] == ["offline"], timeout=4 * keepalive)
            proxy.resume()
            await link.wait_connected(timeout=15)
            await cloud.wait_for(lambda: statuses(cloud)[-1:] == ["online"], timeout=5)
            assert link.state.connects == 2
    assert any(not s.connected and s.last_error for s in states)


async def test_backoff_retries_until_the_broker_appears(tmp_path: Path, make_broker: BrokerFactory) -> None:
    port = free_port()
    link = MqttLink(
        f"mqtt://127.0.0.1:{port}", NODE, backoff_min_s=0.1, backoff_max_s=0.3, connect_timeout_s=1
    )
    async with link:
        with pytest.raises(LinkDown):
            await link.wait_connected(timeout=1.0)
        assert link.state.failures >= 2 and not link.state.connected
        assert link.state.last_error
        make_broker(port=port)
        await link.wait_connected(timeout=10)
        assert link.state.connected


def test_backoff_is_full_jitter_capped() -> None:
    link = MqttLink("mqtt://127.0.0.1:1883", NODE, backoff_min_s=1.0, backoff_max_s=60.0)
    for failures, cap in ((1, 1.0), (3, 4.0), (6, 32.0), (7, 60.0), (30, 60.0)):
        delays = [link._delay(failures) for _ in range(300)]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8 and min(delays) < cap * 0.2, "spread over [0, cap]"


def test_broker_url_parsing() -> None:
    assert BrokerAddress.parse("mqtt://h:1884") == BrokerAddress(False, "h", 1884)
    assert BrokerAddress.parse("mqtts://broker.example") == BrokerAddress(True, "broker.example", 8883)
    for bad in ("http://h", "mqtt://", "mqtt://h:1/x", "mqtt://h:99999"):
        with pytest.raises(LinkConfigError):
            BrokerAddress.parse(bad)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca = TestCA(tmp_path / "pki")
    server = ca.issue("broker", server=True, dns=("localhost",), ips=("127.0.0.1",))
    wrong_name = ca.issue("elsewhere", server=True, dns=("broker.example",))
    client = ca.issue(NODE, server=False)
    other_ca = TestCA(tmp_path / "other", name="Other CA")
    return {
        "ca": ca.ca_file,
        "server_cert": server.cert,
        "server_key": server.key,
        "wrong_cert": wrong_name.cert,
        "wrong_key": wrong_name.key,
        "client_cert": client.cert,
        "client_key": client.key,
        "other_ca": other_ca.ca_file,
    }


async def test_mutual_tls_connects_and_publishes(make_broker: BrokerFactory, pki: dict[str, Path]) -> None:
    broker = make_broker(tls=BrokerTls(pki["ca"], pki["server_cert"], pki["server_key"]))
    assert broker.url.startswith("mqtts://")
    link = MqttLink(
        broker.url, NODE, ca_file=pki["ca"], client_cert=pki["client_cert"], client_key=pki["client_key"]
    )
    async with link:
        await link.wait_connected(timeout=10)
    assert link.state.connects == 1


async def test_tls_refuses_a_broker_signed_by_another_ca(
    make_broker: BrokerFactory, pki: dict[str, Path]
) -> None:
    broker = make_broker(tls=BrokerTls(pki["ca"], pki["server_cert"], pki["server_key"]))
    link = MqttLink(
        broker.url,
        NODE,
        ca_file=pki["other_ca"],
        client_cert=pki["client_cert"],
        client_key=pki["client_key"],
        backoff_min_s=0.1,
        backoff_max_s=0.2,
    )
    async with link:
        with pytest.raises(LinkDown):
            await link.wait_connected(timeout=1.5)
    assert link.state.connects == 0
    assert "certificate verify failed" in (link.state.last_error or "")


async def test_tls_checks_the_broker_hostname(make_broker: BrokerFactory, pki: dict[str, Path]) -> None:
    broker = make_broker(tls=BrokerTls(pki["ca"], pki["wrong_cert"], pki["wrong_key"]))
    link = MqttLink(
        broker.url,
        NODE,
        ca_file=pki["ca"],
        client_cert=pki["client_cert"],
        client_key=pki["client_key"],
        backoff_min_s=0.1,
        backoff_max_s=0.2,
    )
    async with link:
        with pytest.raises(LinkDown):
            await link.wait_connected(timeout=1.5)
    assert link.state.connects == 0
    assert "mismatch" in (link.state.last_error or ""), link.state.last_error


async def test_tls_broker_requires_our_client_certificate(
    make_broker: BrokerFactory, pki: dict[str, Path]
) -> None:
    broker = make_broker(tls=BrokerTls(pki["ca"], pki["server_cert"], pki["server_key"]))
    link = MqttLink(
        broker.url, NODE, ca_file=pki["ca"], backoff_min_s=0.1, backoff_max_s=0.2, connect_timeout_s=1
    )
    async with link:
        with pytest.raises(LinkDown):
            await link.wait_connected(timeout=1.5)
    assert link.state.connects == 0


async def test_unreadable_tls_files_fail_at_start(tmp_path: Path) -> None:
    link = MqttLink("mqtts://127.0.0.1:8883", NODE, ca_file=tmp_path / "missing.pem")
    with pytest.raises(LinkConfigError):
        await link.start()
