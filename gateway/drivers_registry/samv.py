"""The SAM_V ID card reader (`driver = "samv"`): its config table and how the gateway builds it."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any, Literal

from gateway.configbase import PositiveFloat
from gateway.drivers_registry.capabilities import IDCARD_READER
from gateway.drivers_registry.entry import SIM_PREFIX, Built, started
from gateway.drivers_registry.serial import SerialOptions, serial_entry


class SamvDevice(SerialOptions, tag_field="driver", tag="samv"):
    poll_interval_s: PositiveFloat = 0.25
    read_timeout_s: PositiveFloat = 3.0
    # Simulator only: the card a sim:// reader presents ("unknown_type": a type code no reader
    # names, answered as unsupported_card_type).
    sim_card: Literal[
        "resident", "foreign_permanent", "hmt_residence", "foreign_permanent_2023", "unknown_type"
    ] = "resident"


async def build(name: str, cfg: SamvDevice, stack: AsyncExitStack) -> Built:
    """The reader; a sim:// port starts the simulated reader first."""
    from drivers.idcard.driver import SamvReader

    port = cfg.port
    simulator: Any = None
    if port.startswith(SIM_PREFIX):
        from drivers.idcard.simulator import IdCardSimulator

        simulator = IdCardSimulator(name=name, baudrate=cfg.baudrate, auto_present=True, card=cfg.sim_card)
        port = await started(simulator, stack)
    reader = SamvReader(
        name,
        port,
        baudrate=cfg.baudrate,
        poll_interval=cfg.poll_interval_s,
        read_timeout=cfg.read_timeout_s,
    )
    return reader, simulator


ENTRY = serial_entry(SamvDevice, IDCARD_READER, build)
