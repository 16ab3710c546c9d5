"""What the serial drivers (SAM_V reader, ESC/POS printer) share: the port table, its probe and fix."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec

from gateway.configbase import QueueConfig, Section
from gateway.drivers_registry.capabilities import Capability
from gateway.drivers_registry.entry import SIM_PREFIX, Builder, DriverEntry
from gateway.drivers_registry.probes import char_device, url_endpoint
from gateway.ops.checks import CheckResult


class SerialOptions(Section):
    # A path, a pyserial URL (socket://host:port) or sim://NAME for the built-in simulator.
    port: str
    baudrate: Annotated[int, msgspec.Meta(ge=1200, le=921_600)] = 115_200
    queue: QueueConfig = msgspec.field(default_factory=QueueConfig)


S = TypeVar("S", bound="SerialOptions")


def serial_entry(config: type[S], capability: Capability[Any], build: Builder[S]) -> DriverEntry[S]:
    """The entry of a driver on a serial port: port target, tty or TCP probe, cable-and-group fix."""
    return DriverEntry(
        config=config,
        capability=capability,
        build=build,
        target=serial_target,
        probe=serial_probe,
        fix=serial_fix,
        simulated=serial_simulated,
    )


def serial_target(cfg: SerialOptions) -> str:
    return cfg.port


async def serial_probe(check: str, cfg: SerialOptions, fix: str, timeout: float) -> CheckResult:
    """A pyserial URL: its TCP endpoint; a path: the tty device node."""
    if "://" in cfg.port:
        driver = str(cfg.__struct_config__.tag)
        return await url_endpoint(check, cfg.port, driver, fix, timeout)
    return char_device(Path(cfg.port), "serial port", fix, check)


def serial_simulated(cfg: SerialOptions) -> bool:
    return cfg.port.startswith(SIM_PREFIX)


def serial_fix(target: str) -> str:
    return (
        f"check the cable and that {target} exists (`ls -l {target}`); the gateway's user needs "
        "the dialout group; `edge-gateway` reopens the port by itself once it is back"
    )
