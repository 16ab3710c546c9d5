"""The driver registry: one entry per driver tag, its builder gives a device with its kind's capability."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest

from gateway.config import DEVICE_KINDS, KIND_OF_DRIVER, DeviceConfig, GatewayConfig, parse_config
from gateway.drivers_registry import DRIVERS, entry_for
from gateway.drivers_registry.capabilities import (
    CAMERA,
    CARD_READER,
    IDCARD_READER,
    PRINTER,
    Capability,
)
from gateway.ops.checks import Verdict
from gateway.ops.device_checks import device_direct
from gateway.simulation import device_simulated

# driver tag -> (a device table, the capability its kind promises, whether it is a simulator)
SAMPLES: dict[str, tuple[dict[str, Any], Capability[Any], bool]] = {
    "samv": ({"port": "sim://idcard"}, IDCARD_READER, True),
    "escpos": ({"port": "sim://printer"}, PRINTER, True),
    "pcsc": ({"reader": "Some Reader 00 00"}, CARD_READER, False),
    "v4l2": ({"device": "/dev/video9"}, CAMERA, False),
    "http": ({"url": "sim://camera"}, CAMERA, True),
}


def device_table(driver: str) -> DeviceConfig:
    table, _, _ = SAMPLES[driver]
    config: GatewayConfig = parse_config(
        f"[devices.d]\ndriver = {driver!r}\n"
        + "".join(f"{key} = {value!r}\n" for key, value in table.items()),
        source="test",
    )
    return config.devices["d"]


def test_every_config_table_has_one_entry_of_a_known_kind() -> None:
    tables = get_args(DeviceConfig)
    assert sorted(DRIVERS) == sorted(str(t.__struct_config__.tag) for t in tables) == sorted(SAMPLES)
    for tag, entry in DRIVERS.items():
        assert entry.driver == tag and entry.config in tables
        assert entry.kind in DEVICE_KINDS and KIND_OF_DRIVER[tag] == entry.kind


@pytest.mark.parametrize("driver", sorted(SAMPLES))
async def test_the_builder_gives_a_device_with_its_kinds_capability(driver: str) -> None:
    cfg = device_table(driver)
    entry = entry_for(cfg)
    _, capability, simulated = SAMPLES[driver]
    assert capability.kind == entry.kind
    async with AsyncExitStack() as stack:
        device, simulator = await entry.build("d", cfg, stack)
        assert device.name == "d" and device.driver == driver
        assert capability.of(device) is device
        assert (simulator is not None) is simulated
        others = [c for c in (IDCARD_READER, CARD_READER, PRINTER, CAMERA) if c.kind != entry.kind]
        for other in others:
            with pytest.raises(TypeError, match="is not a"):
                other.of(device)
    assert entry.simulated(cfg) is simulated is device_simulated(cfg)


def test_a_simulated_pcsc_table_counts_as_a_simulator() -> None:
    cfg = msgspec.convert({"driver": "pcsc", "simulate": "sscard"}, DeviceConfig)
    assert device_simulated(cfg) and entry_for(cfg).simulated(cfg)


async def test_diag_probes_a_device_with_its_drivers_probe_and_fix(tmp_path: Path) -> None:
    missing = device_table("v4l2")
    result = await device_direct("cam", missing, timeout=1.0)
    assert result.name == "device:cam" and result.status is Verdict.FAIL
    assert result.detail == "video device /dev/video9 does not exist"
    assert result.fix == entry_for(missing).fix("/dev/video9") and "v4l2-ctl" in result.fix
    present = msgspec.structs.replace(missing, device="/dev/null")
    result = await device_direct("cam", present, timeout=1.0)
    assert result.status is Verdict.PASS and result.fix is None
    assert result.detail == "video device /dev/null present (daemon down: state not known)"
    not_char = tmp_path / "video0"
    not_char.write_bytes(b"")
    result = await device_direct("cam", msgspec.structs.replace(missing, device=str(not_char)), timeout=1.0)
    assert result.status is Verdict.WARN and result.fix is not None


async def test_diag_probes_a_serial_url_by_its_tcp_endpoint() -> None:
    from tests.support.mosquitto import free_port

    port = free_port()
    cfg = msgspec.convert({"driver": "escpos", "port": f"socket://127.0.0.1:{port}"}, DeviceConfig)
    result = await device_direct("printer", cfg, timeout=1.0)
    assert result.status is Verdict.FAIL and "refused" in result.detail
    assert result.data == {"driver": "escpos", "source": "direct"}
    assert result.fix is not None and "dialout" in result.fix
