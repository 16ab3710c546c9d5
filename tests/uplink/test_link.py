"""The MQTT link against a real mosquitto: presence, downlink, silent network, backoff, TLS."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from pathlib import Path

import aiomqtt
import pytest

from gateway.config import UplinkConfig
from gateway.status import LinkState
from gateway.uplink.mqtt import BrokerAddress, LinkConfigError, LinkDown, LinkSettings, MqttLink
from gateway.uplink.outbox import OutboxConfig
from gateway.uplink.presence import Presence
from tests.support.mosquitto import BrokerFactory, BrokerTls, free_port
from tests.uplink.conftest import NODE
from tests.uplink.helpers import Collector, SilentProxy, until
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
    link = MqttLink(LinkSettings(broker.url), NODE)
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

    async with MqttLink(LinkSettings(broker.url), NODE, on_command=on_command) as link:
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
            LinkSettings(
                f"mqtt://127.0.0.1:{proxy.port}",
                keepalive_s=keepalive,
                backoff_min_s=0.2,
                backoff_max_s=1.0,
                connect_timeout_s=2.0,
            ),
            NODE,
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
        LinkSettings(f"mqtt://127.0.0.1:{port}", backoff_min_s=0.1, backoff_max_s=0.3, connect_timeout_s=1),
        NODE,
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
    link = MqttLink(LinkSettings("mqtt://127.0.0.1:1883", backoff_min_s=1.0, backoff_max_s=60.0), NODE)
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


def test_link_settings_from_config_take_every_uplink_and_outbox_figure() -> None:
    uplink = UplinkConfig(
        broker="mqtts://broker.example:8884",
        ca_file="/etc/edge/ca.pem",
        keepalive_s=45,
        backoff_min_s=2.0,
        backoff_max_s=90.0,
        first_connect_jitter_s=3.0,
        reconnect_spread_s=9.0,
        session_expiry_s=7200,
        stable_after_s=40.0,
        connect_timeout_s=12.0,
    )
    settings = LinkSettings.from_config(uplink, OutboxConfig(publish_timeout_s=25.0, inflight=7))
    assert settings == LinkSettings(
        "mqtts://broker.example:8884",
        ca_file="/etc/edge/ca.pem",
        keepalive_s=45,
        backoff_min_s=2.0,
        backoff_max_s=90.0,
        first_connect_jitter_s=3.0,
        reconnect_spread_s=9.0,
        session_expiry_s=7200,
        stable_after_s=40.0,
        connect_timeout_s=12.0,
        publish_timeout_s=25.0,
        inflight=7,
    )
    assert settings.address == BrokerAddress(True, "broker.example", 8884)
    for bad in ({"session_expiry_s": -1}, {"client_cert": "/etc/edge/node.pem"}):
        with pytest.raises(LinkConfigError):
            LinkSettings("mqtt://h", **bad)


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
        LinkSettings(
            broker.url, ca_file=pki["ca"], client_cert=pki["client_cert"], client_key=pki["client_key"]
        ),
        NODE,
    )
    async with link:
        await link.wait_connected(timeout=10)
    assert link.state.connects == 1


async def test_tls_refuses_a_broker_signed_by_another_ca(
    make_broker: BrokerFactory, pki: dict[str, Path]
) -> None:
    broker = make_broker(tls=BrokerTls(pki["ca"], pki["server_cert"], pki["server_key"]))
    link = MqttLink(
        LinkSettings(
            broker.url,
            ca_file=pki["other_ca"],
            client_cert=pki["client_cert"],
            client_key=pki["client_key"],
            backoff_min_s=0.1,
            backoff_max_s=0.2,
        ),
        NODE,
    )
    async with link:
        with pytest.raises(LinkDown):
            await link.wait_connected(timeout=1.5)
    assert link.state.connects == 0
    assert "certificate verify failed" in (link.state.last_error or "")


async def test_tls_checks_the_broker_hostname(make_broker: BrokerFactory, pki: dict[str, Path]) -> None:
    broker = make_broker(tls=BrokerTls(pki["ca"], pki["wrong_cert"], pki["wrong_key"]))
    link = MqttLink(
        LinkSettings(
            broker.url,
            ca_file=pki["ca"],
            client_cert=pki["client_cert"],
            client_key=pki["client_key"],
            backoff_min_s=0.1,
            backoff_max_s=0.2,
        ),
        NODE,
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
        LinkSettings(
            broker.url, ca_file=pki["ca"], backoff_min_s=0.1, backoff_max_s=0.2, connect_timeout_s=1
        ),
        NODE,
    )
    async with link:
        with pytest.raises(LinkDown):
            await link.wait_connected(timeout=1.5)
    assert link.state.connects == 0


async def test_unreadable_tls_files_fail_at_start(tmp_path: Path) -> None:
    link = MqttLink(LinkSettings("mqtts://127.0.0.1:8883", ca_file=tmp_path / "missing.pem"), NODE)
    with pytest.raises(LinkConfigError):
        await link.start()


# ------------------------------------------------------------------ fleet behaviour of one link


class RefusingBroker:
    """Answers every MQTT CONNECT with one fixed CONNACK (real bytes) and counts TCP probes.

    CONNACK layout, MQTT v5.0 §3.2: fixed header 0x20, remaining length, acknowledge flags,
    reason code, property length, properties (Server Reference is identifier 0x1C followed by a
    UTF-8 string: 2-byte length + bytes, §3.2.2.3.16). mosquitto's own test helper builds the
    same bytes (test/mosq_test.py `gen_connack`: flags, rc, then the encoded properties).
    """

    def __init__(self, connack: bytes, *, then: bytes = b"") -> None:
        self.connack = connack
        # Sent after the client's next packet (e.g. a DISCONNECT naming another server).
        self.then = then
        self.connects: list[float] = []
        self.probes = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RefusingBroker:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                first = await reader.read(1)
                if first != b"\x10":
                    self.probes += 1
                    return
                length, shift = 0, 0
                while True:
                    byte = (await reader.readexactly(1))[0]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                await reader.readexactly(length)
                self.connects.append(time.monotonic())
                writer.write(self.connack)
                await writer.drain()
                await reader.read(1)  # the client hangs up, or sends its next packet
                if self.then:
                    writer.write(self.then)
                    await writer.drain()
                    await reader.read(1)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def connack(reason: int, properties: bytes = b"") -> bytes:
    """A v5 CONNACK with Session Present 0 (properties shorter than 128 bytes)."""
    assert len(properties) < 128
    body = bytes([0x00, reason, len(properties)]) + properties
    return bytes([0x20, len(body)]) + body


def server_reference(reference: str) -> bytes:
    data = reference.encode()
    return bytes([0x1C]) + len(data).to_bytes(2, "big") + data


async def test_server_busy_connack_waits_the_longest_backoff() -> None:
    # 0x89 Server busy (MQTT v5.0 §3.2.2.2).
    async with RefusingBroker(connack(0x89)) as fake:
        link = MqttLink(
            LinkSettings(
                f"mqtt://127.0.0.1:{fake.port}", backoff_min_s=0.05, backoff_max_s=1.0, connect_timeout_s=2
            ),
            NODE,
        )
        async with link:
            await until(lambda: len(fake.connects) >= 3, timeout=15)
        assert not link.state.connected and link.state.connects == 0
    gaps = [b - a for a, b in itertools.pairwise(fake.connects)]
    # A busy server is left alone for at least half the longest backoff, every time.
    assert all(gap >= 0.5 for gap in gaps), gaps
    assert "Server busy" in (link.state.last_error or ""), link.state.last_error


async def test_use_another_server_sends_the_next_attempt_to_the_server_reference(
    make_broker: BrokerFactory,
) -> None:
    broker = make_broker()
    # 0x9C Use another server, with Server Reference "127.0.0.1:<port of a real broker>".
    async with RefusingBroker(connack(0x9C, server_reference(f"127.0.0.1:{broker.port}"))) as fake:
        link = MqttLink(
            LinkSettings(f"mqtt://127.0.0.1:{fake.port}", backoff_min_s=0.05, backoff_max_s=0.2), NODE
        )
        async with link:
            await link.wait_connected(timeout=10)
            assert link.state.server == f"mqtt://127.0.0.1:{broker.port}"
            assert (await retained_status(broker.port)).state == "online"
        assert len(fake.connects) == 1


async def test_a_server_disconnect_naming_another_server_moves_the_link_there(
    make_broker: BrokerFactory,
) -> None:
    broker = make_broker()
    # DISCONNECT (MQTT v5.0 §3.14): 0xE0, remaining length, reason 0x9D Server moved, properties
    # with a Server Reference (0x1C), sent right after the client's first packet.
    reference = server_reference(f"127.0.0.1:{broker.port}")
    body = bytes([0x9D, len(reference)]) + reference
    disconnect = bytes([0xE0, len(body)]) + body
    async with RefusingBroker(connack(0x00), then=disconnect) as fake:
        link = MqttLink(
            LinkSettings(f"mqtt://127.0.0.1:{fake.port}", backoff_min_s=0.05, backoff_max_s=0.2), NODE
        )
        async with link:
            await until(lambda: link.state.server == f"mqtt://127.0.0.1:{broker.port}", timeout=10)
            await link.wait_connected(timeout=10)
            assert (await retained_status(broker.port)).state == "online"
        assert len(fake.connects) == 1 and link.state.connects == 2


async def test_a_server_reference_that_is_not_host_port_is_ignored() -> None:
    async with RefusingBroker(connack(0x9D, server_reference("http://evil.example/x"))) as fake:
        link = MqttLink(
            LinkSettings(f"mqtt://127.0.0.1:{fake.port}", backoff_min_s=0.05, backoff_max_s=0.1), NODE
        )
        async with link:
            await until(lambda: len(fake.connects) >= 2, timeout=10)
            assert link.state.server == f"mqtt://127.0.0.1:{fake.port}"
        assert not link.state.connected


async def test_commands_sent_while_the_node_is_away_wait_in_its_session(make_broker: BrokerFactory) -> None:
    broker = make_broker()
    got: list[bytes] = []

    async def on_command(topic: str, payload: bytes) -> None:
        got.append(payload)

    first = MqttLink(LinkSettings(broker.url, session_expiry_s=600), NODE, on_command=on_command)
    async with first:
        await first.wait_connected(timeout=10)
        assert first.state.session_present is False
    # The node is away (a restart): the cloud's commands wait in its session on the broker.
    async with aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5) as cloud:
        for i in range(3):
            await cloud.publish(f"edge/{NODE}/down/ping", f"while-away-{i}".encode(), qos=1)
    second = MqttLink(LinkSettings(broker.url, session_expiry_s=600), NODE, on_command=on_command)
    async with second:
        await second.wait_connected(timeout=10)
        assert second.state.session_present is True
        await until(lambda: len(got) >= 3, timeout=10)
        # The resumed session kept the subscription (the link did not subscribe again).
        async with aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5) as cloud:
            await cloud.publish(f"edge/{NODE}/down/ping", b"after", qos=1)
        await until(lambda: len(got) >= 4, timeout=10)
    assert got == [b"while-away-0", b"while-away-1", b"while-away-2", b"after"]
    assert second.epoch >= first.epoch


async def test_without_a_session_expiry_commands_sent_while_away_are_gone(make_broker: BrokerFactory) -> None:
    broker = make_broker()
    got: list[bytes] = []

    async def on_command(topic: str, payload: bytes) -> None:
        got.append(payload)

    async with MqttLink(LinkSettings(broker.url, session_expiry_s=0), NODE, on_command=on_command) as link:
        await link.wait_connected(timeout=10)
    async with aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5) as cloud:
        await cloud.publish(f"edge/{NODE}/down/ping", b"lost", qos=1)
    async with MqttLink(LinkSettings(broker.url, session_expiry_s=0), NODE, on_command=on_command) as link:
        await link.wait_connected(timeout=10)
        assert link.state.session_present is False
        async with aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5) as cloud:
            await cloud.publish(f"edge/{NODE}/down/ping", b"now", qos=1)
        await until(lambda: bool(got), timeout=10)
    assert got == [b"now"]


async def test_the_broker_server_keep_alive_replaces_ours(make_broker: BrokerFactory) -> None:
    # mosquitto's max_keepalive: a v5 client asking for more gets Server Keep Alive in the CONNACK.
    broker = make_broker(extra=("max_keepalive 10",))
    async with MqttLink(LinkSettings(broker.url, keepalive_s=60), NODE) as link:
        await link.wait_connected(timeout=10)
        assert link.state.keepalive_s == 10


def test_keepalive_phase_is_spread_within_a_quarter() -> None:
    link = MqttLink(LinkSettings("mqtt://127.0.0.1:1883", keepalive_s=40), NODE, rng=random.Random(3))
    values = {link.clients.keepalive() for _ in range(200)}
    assert min(values) >= 30 and max(values) <= 40
    assert len(values) > 5, "nodes that connect together must not all ping in phase"
    tiny = MqttLink(LinkSettings("mqtt://127.0.0.1:1883", keepalive_s=2), NODE)
    assert {tiny.clients.keepalive() for _ in range(20)} == {2}


async def test_the_will_and_offline_expire_with_the_session(make_broker: BrokerFactory) -> None:
    broker = make_broker()
    async with MqttLink(LinkSettings(broker.url, session_expiry_s=900), NODE) as link:
        await link.wait_connected(timeout=10)
    async with aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe(f"edge/{NODE}/status", qos=1)
        async with asyncio.timeout(5):
            message = await anext(aiter(client.messages))
    assert message.properties is not None
    expiry = getattr(message.properties, "MessageExpiryInterval", None)
    assert expiry is not None and 0 < expiry <= 900


async def test_a_broker_that_lost_the_session_gets_the_subscription_again(make_broker: BrokerFactory) -> None:
    broker = make_broker()  # no persistence: a restart forgets every session
    got: list[bytes] = []

    async def on_command(topic: str, payload: bytes) -> None:
        got.append(payload)

    link = MqttLink(
        LinkSettings(broker.url, backoff_min_s=0.1, backoff_max_s=0.5), NODE, on_command=on_command
    )
    async with link:
        await link.wait_connected(timeout=10)
        await broker.astop()
        await link.wait_disconnected(timeout=10)
        await broker.astart()
        await link.wait_connected(timeout=15)
        assert link.state.session_present is False and link.state.sessions_lost == 1
        async with aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5) as cloud:
            await cloud.publish(f"edge/{NODE}/down/ping", b"after-restart", qos=1)
        await until(lambda: got == [b"after-restart"], timeout=10)
    assert link.state.connects == 2
