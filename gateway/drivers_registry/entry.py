"""What the gateway knows of one driver: config table, kind (capability), builder, diag target, probe, fix."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from drivers.base import Device
from gateway.drivers_registry.capabilities import Capability
from gateway.ops.checks import CheckResult

SIM_PREFIX = "sim://"

C = TypeVar("C", bound=msgspec.Struct)

# The driver, and the simulator started for it (None for a real device).
Built = tuple[Device, Any]
Builder = Callable[[str, C, AsyncExitStack], Awaitable[Built]]
# Without the daemon: `probe(check_name, config, fix, timeout)` says whether the target is there.
Probe = Callable[[str, C, str, float], Awaitable[CheckResult]]


class Simulator(Protocol):
    """A built-in simulator: started, it answers at a port or URL the driver then opens."""

    async def start(self) -> str: ...

    async def stop(self) -> None: ...


async def started(simulator: Simulator, stack: AsyncExitStack) -> str:
    """Start `simulator` (stopped when `stack` closes); the port or URL the driver opens."""
    address = await simulator.start()
    stack.push_async_callback(simulator.stop)
    return address


@dataclass(frozen=True, slots=True)
class DriverEntry(Generic[C]):
    """One driver kind, everything the gateway side knows about it in one place."""

    config: type[C]
    capability: Capability[Any]
    build: Builder[C]
    target: Callable[[C], str]
    probe: Probe[C]
    fix: Callable[[str], str]
    # Whether the table starts a built-in simulator (gateway.simulation: only then may the dev cloud run).
    simulated: Callable[[C], bool]

    @property
    def kind(self) -> str:
        """idcard, cardreader, printer or camera: what stations and routes name it by."""
        return self.capability.kind

    @property
    def driver(self) -> str:
        """The `driver` tag of its [devices.NAME] table."""
        return str(self.config.__struct_config__.tag)
