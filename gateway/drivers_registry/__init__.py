"""The driver registry: one entry per driver, each in its own module of this package.

An entry holds the driver's config table, its kind (the capability Protocol its devices satisfy,
`capabilities.py`), how to build it (real or simulated), what diag looks at without the daemon, the
fix diag suggests, and whether a table starts a simulator. Adding a driver of a known kind: its
folder under `drivers/`, a module here built from the driver's public API, and its table in
`DeviceConfig` and entry in `DRIVERS` below. A new kind also needs its capability and a station key
(`StationConfig`). The `drivers` package never imports the gateway; this package is where they meet.
"""

from __future__ import annotations

from typing import Any

from gateway.drivers_registry.entry import SIM_PREFIX, DriverEntry
from gateway.drivers_registry.escpos import EscposDevice
from gateway.drivers_registry.http_camera import HttpCameraDevice
from gateway.drivers_registry.pcsc import PcscDevice
from gateway.drivers_registry.samv import SamvDevice
from gateway.drivers_registry.v4l2 import V4l2Device

from . import escpos, http_camera, pcsc, samv, v4l2

__all__ = [
    "DRIVERS",
    "SIM_PREFIX",
    "DeviceConfig",
    "DriverEntry",
    "EscposDevice",
    "HttpCameraDevice",
    "PcscDevice",
    "SamvDevice",
    "V4l2Device",
    "driver_name",
    "entry_for",
]

DeviceConfig = SamvDevice | EscposDevice | PcscDevice | V4l2Device | HttpCameraDevice

# driver tag -> entry
DRIVERS: dict[str, DriverEntry[Any]] = {
    entry.driver: entry for entry in (samv.ENTRY, escpos.ENTRY, pcsc.ENTRY, v4l2.ENTRY, http_camera.ENTRY)
}


def driver_name(cfg: DeviceConfig) -> str:
    """The `driver` tag a device table was parsed with."""
    return str(cfg.__struct_config__.tag)


def entry_for(cfg: DeviceConfig) -> DriverEntry[Any]:
    """The registry entry of the driver this device table names."""
    return DRIVERS[driver_name(cfg)]
