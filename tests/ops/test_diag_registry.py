"""diag's registry of checks and the broker check's steps."""

from __future__ import annotations

from pathlib import Path

from gateway.config import parse_config
from gateway.ops.broker_check import BROKER_STEPS, check_broker
from gateway.ops.diag import CHECK_NAMES, CHECKS, Verdict
from tests.support.mosquitto import free_port


def test_the_checks_run_in_the_documented_order_and_say_if_they_need_the_daemon() -> None:
    assert CHECK_NAMES == (
        "config",
        "key",
        "clock",
        "disk",
        "daemon",
        "device",
        "station",
        "broker",
        "outbox",
        "systemd",
    )
    assert {c.name for c in CHECKS if c.needs_daemon} == {"daemon", "device", "station", "outbox"}


def test_the_broker_check_is_dns_tcp_tls_mqtt() -> None:
    assert [step.__name__ for step in BROKER_STEPS] == ["resolve", "connect", "handshake", "mqtt_connect"]


async def test_a_closed_broker_port_stops_at_the_tcp_step(tmp_path: Path) -> None:
    port = free_port()
    config = parse_config(
        f'[node]\nstate_dir = "{tmp_path}"\n[uplink]\nbroker = "mqtt://127.0.0.1:{port}"\n', source="t"
    )
    result = await check_broker(config, timeout=1.0)
    assert result.status is Verdict.FAIL and result.detail.startswith(f"TCP connect to 127.0.0.1:{port}")
    steps = result.data["steps"]
    assert steps["dns"] == ["127.0.0.1"] and "refused" in steps["tcp"]
    assert "tls" not in steps and "mqtt" not in steps
