"""`GET /metrics` from a live daemon, parsed with prometheus_client's own parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from gateway.ops.metrics import GatewayMetrics
from gateway.status import (
    AlertEntry,
    DeviceEntry,
    GatewayStatus,
    LoopStatus,
    OutboxClassStats,
    OutboxStatus,
    QueueSnapshot,
    UplinkStatus,
)
from tests.support.daemon import inprocess_daemon

SIM_DEVICES = """
[devices.idcard]
driver = "samv"
port = "sim://idcard"

[devices.spare]
driver = "samv"
port = "/nonexistent/ttyUSB7"
"""


def samples(text: str) -> dict[str, list[Sample]]:
    found: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def value(found: dict[str, list[Sample]], name: str, **labels: str) -> float:
    matches = [s.value for s in found.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, (name, labels, found.get(name))
    return float(matches[0])


async def test_metrics_endpoint_on_a_live_daemon(state_dir: Path) -> None:
    async with inprocess_daemon(state_dir, SIM_DEVICES) as ipd, ipd.client() as client:
        created = await client.post("/v1/sessions", json={})
        assert created.status == 201
        session = await created.json()
        for _ in range(3):
            assert (await client.get("/v1/devices")).status == 200
        assert (await client.get("/v1/no-such-route")).status == 404
        status: dict[str, Any] = await (await client.get("/v1/status")).json()
        resp = await client.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()

    found = samples(text)
    assert all(name.startswith("edge_gateway_") for name in found), sorted(found)
    assert (
        value(found, "edge_gateway_http_requests_total", method="GET", route="/v1/devices", status="200") == 3
    )
    assert (
        value(found, "edge_gateway_http_requests_total", method="POST", route="/v1/sessions", status="201")
        == 1
    )
    assert (
        value(found, "edge_gateway_http_requests_total", method="GET", route="unmatched", status="404") == 1
    )
    assert (
        value(found, "edge_gateway_http_request_duration_seconds_count", method="GET", route="/v1/devices")
        == 3
    )
    assert value(found, "edge_gateway_sessions_open") == 1
    assert value(found, "edge_gateway_sessions_created_total") >= 1
    assert value(found, "edge_gateway_device_up", device="idcard") == 1
    assert value(found, "edge_gateway_device_state", device="idcard", state="online") == 1
    assert value(found, "edge_gateway_device_state", device="spare", state="no_device") == 1
    assert value(found, "edge_gateway_device_up", device="spare") == 0
    assert value(found, "edge_gateway_device_queue_queued", device="idcard") == 0
    assert value(found, "edge_gateway_device_queue_served_total", device="idcard") >= 0
    assert value(found, "edge_gateway_outbox_messages", **{"class": "tx"}) >= 0
    assert value(found, "edge_gateway_outbox_max_bytes") > 0
    assert value(found, "edge_gateway_info", node="edge-test", version=status["version"]) == 1
    assert value(found, "edge_gateway_alerts_active", severity="red") == 0
    assert value(found, "edge_gateway_process_resident_memory_bytes") > 0
    # No session id or token ever becomes a label value.
    labels = {v for group in found.values() for s in group for v in s.labels.values()}
    assert session["id"] not in labels and session["token"] not in labels
    assert not any(session["id"] in label for label in labels)


def _status(**parts: Any) -> GatewayStatus:
    loop = LoopStatus(lag_s=0.001, max_lag_s=0.002)
    return GatewayStatus(
        node="n1", version="9.9", config="c.toml", started_at=1.0, listening=[], loop=loop, **parts
    )


def _device(name: str, state: str) -> DeviceEntry:
    queue = QueueSnapshot(depth_limit=8, queued=2, busy=False, service_estimate_s=0.5, served=7)
    return DeviceEntry(
        name=name,
        kind="printer",
        driver="escpos",
        simulated=True,
        state=state,
        reason="",
        since=0.0,
        warnings=[],
        last_error=None,
        last_error_at=None,
        last_success_at=None,
        queue=queue,
        stations=[],
    )


def test_render_reads_the_typed_status_and_leaves_out_missing_parts() -> None:
    metrics = GatewayMetrics(process=False)
    found = samples(metrics.render(_status()).decode())
    assert value(found, "edge_gateway_info", node="n1", version="9.9") == 1
    assert value(found, "edge_gateway_loop_max_lag_seconds") == 0.002
    # A part the status does not carry (an older daemon, no broker) yields none of its families.
    assert not {"edge_gateway_sessions_open", "edge_gateway_outbox_messages", "edge_gateway_device_up"} & set(
        found
    )
    status = _status(
        devices=[_device("printer", "user_error")],
        outbox=OutboxStatus(classes={"tx": OutboxClassStats(count=4, bytes=1200)}, count=4, bytes=1200),
        uplink=UplinkStatus(configured=True, connected=True, connects=2),
        alerts=[
            AlertEntry(
                id="a",
                severity="blue",
                rule="loop_lag",
                subject="s",
                detail="",
                value=1,
                threshold=1,
                raised_at=0,
            )
        ],
    )
    found = samples(metrics.render(status).decode())
    assert value(found, "edge_gateway_device_state", device="printer", state="online") == 0
    assert value(found, "edge_gateway_device_state", device="printer", state="user_error") == 1
    assert value(found, "edge_gateway_device_up", device="printer") == 0
    assert value(found, "edge_gateway_device_queue_queued", device="printer") == 2
    assert value(found, "edge_gateway_device_queue_served_total", device="printer") == 7
    assert value(found, "edge_gateway_outbox_messages", **{"class": "tx"}) == 4
    assert value(found, "edge_gateway_outbox_oldest_age_seconds", **{"class": "tx"}) == 0
    assert value(found, "edge_gateway_uplink_connected") == 1
    assert value(found, "edge_gateway_uplink_connects_total") == 2
    assert value(found, "edge_gateway_alerts_active", severity="blue") == 1
    assert value(found, "edge_gateway_alerts_active", severity="red") == 0
    # A device that vanished from the status disappears from the metrics.
    found = samples(metrics.render(_status(devices=[])).decode())
    assert "edge_gateway_device_state" not in found
