"""Which configs are simulations: only they may use the development cloud and the simulated face check.

A config is a simulation when it has at least one device and every device is a built-in
simulator (a `sim://` port or URL, or a `pcsc` device with `simulate`). Anything else, a box with
one real peripheral or none configured, is production: there `uplink.broker = "sim://cloud"` and
`[auth.face] verifier = "sim"` are configuration errors, so a simulation can never stand in for
the real cloud or a real face check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import DeviceConfig, GatewayConfig

SIM_BROKER = "sim://cloud"
SIM_PREFIX = "sim://"


def device_simulated(cfg: DeviceConfig) -> bool:
    """Whether this device table starts a built-in simulator (its driver's registry entry says)."""
    from gateway.drivers_registry import entry_for

    return entry_for(cfg).simulated(cfg)


def is_simulation(devices: Mapping[str, DeviceConfig]) -> bool:
    """At least one device, and all of them simulators."""
    return bool(devices) and all(device_simulated(cfg) for cfg in devices.values())


def simulation_errors(config: GatewayConfig) -> list[str]:
    """`key: reason` for each simulation-only setting a production config uses."""
    if is_simulation(config.devices):
        return []
    why = "only a simulation config (every device a sim:// simulator) may use it"
    errors = []
    if config.uplink.broker == SIM_BROKER:
        errors.append(f"uplink.broker: {SIM_BROKER} is the in-process development cloud; {why}")
    if config.auth.face.verifier == "sim":
        errors.append(f"auth.face.verifier: 'sim' is a SIMULATED face comparison; {why}")
    return errors
