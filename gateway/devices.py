"""The device manager: builds drivers (and sim:// simulators) from config, one queue per device."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from drivers.base import Device, DeviceEvent, DeviceState, DeviceUnavailable
from gateway.config import DeviceConfig, GatewayConfig
from gateway.drivers_registry import entry_for
from gateway.drivers_registry.capabilities import Capability
from gateway.errors import GatewayError
from gateway.queueing import DeviceQueue
from gateway.status import DeviceEntry

log = structlog.get_logger(__name__)

_WORKING = frozenset({DeviceState.ONLINE.value, DeviceState.BUSY.value})

T = TypeVar("T")


class NoSuchDevice(GatewayError):
    """No configured device of the kind a request needs."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"no {kind} device is configured on this gateway")
        self.kind = kind


class UnknownDevice(GatewayError):
    """No device of that name is configured."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no device named {name!r}")
        self.name = name


@dataclass
class ManagedDevice:
    """A device with its queue and config."""

    name: str
    kind: str
    device: Device
    queue: DeviceQueue
    config: DeviceConfig
    simulator: Any = None

    def describe(
        self, stations: list[str], *, station: str | None = None, pool: str | None = None
    ) -> DeviceEntry:
        """The device as /v1/devices and /v1/status show it, with where it serves (from the stations)."""
        status = self.device.status
        return DeviceEntry(
            name=self.name,
            kind=self.kind,
            driver=self.device.driver,
            simulated=self.simulator is not None,
            state=status.state.value,
            reason=status.reason,
            since=status.since,
            warnings=list(status.warnings),
            last_error=status.last_error,
            last_error_at=status.last_error_at,
            last_success_at=status.last_success_at,
            queue=self.queue.snapshot(),
            stations=stations,
            station=station,
            pool=pool,
        )

    def capable(self, capability: Capability[T]) -> T:
        """The driver as what its kind can do (drivers_registry.capabilities)."""
        return capability.of(self.device)

    def require_usable(self) -> None:
        """Raise at once, with the state, when the device cannot take work."""
        status = self.device.status
        if not status.state.usable:
            raise DeviceUnavailable(
                f"{self.name} is {status.state.value}: {status.reason}",
                device=self.name,
                state=status.state,
            )


class DeviceManager:
    """Owns every configured device and its queue; relays device events to its subscribers."""

    def __init__(self) -> None:
        self.devices: dict[str, ManagedDevice] = {}
        self._listeners: list[Callable[[DeviceEvent], None]] = []

    def subscribe(self, listener: Callable[[DeviceEvent], None]) -> None:
        self._listeners.append(listener)

    def _relay(self, event: DeviceEvent) -> None:
        if event.kind == "state":
            # A device going busy and back for every request is at work, not news: debug only.
            working = {event.data.get("state"), event.data.get("previous")} <= _WORKING
            (log.debug if working else log.info)("device_state", device=event.device, **dict(event.data))
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("device_listener_failed", device=event.device)

    async def start(self, configs: dict[str, DeviceConfig], stack: AsyncExitStack) -> None:
        """Build and start each device with its queue; an unplugged one still starts, a build error raises."""
        for name, cfg in configs.items():
            entry = entry_for(cfg)
            device, simulator = await entry.build(name, cfg, stack)
            queue = DeviceQueue(name, depth=cfg.queue.depth, deadline_s=cfg.queue.deadline_s)
            managed = ManagedDevice(name, entry.kind, device, queue, cfg, simulator)
            self.devices[name] = managed
            device.subscribe(self._relay)
            queue.start()
            stack.push_async_callback(queue.close)
            await device.start()
            stack.push_async_callback(device.close)
            log.info("device_added", device=name, driver=entry.driver, simulated=simulator is not None)

    def configure_queues(self, config: GatewayConfig) -> None:
        """Live reload: each queue takes its new depth and deadline."""
        for name, managed in self.devices.items():
            cfg = config.devices.get(name)
            if cfg is not None:
                managed.queue.depth = cfg.queue.depth
                managed.queue.deadline_s = cfg.queue.deadline_s

    def named(self, name: str) -> ManagedDevice:
        managed = self.devices.get(name)
        if managed is None:
            raise UnknownDevice(name)
        return managed

    def cancel_session(self, session_id: str, reason: str) -> int:
        return sum(m.queue.cancel_session(session_id, reason) for m in self.devices.values())

    async def reset(self, name: str) -> dict[str, Any]:
        """Close and reopen a device; its queued requests are cancelled."""
        managed = self.named(name)
        cancelled = managed.queue.purge("the device is being reset")
        await managed.device.close()
        await managed.device.start()
        return {"device": name, "cancelled": cancelled, "state": managed.device.status.state.value}

    def health(self) -> dict[str, Any]:
        down = {
            name: m.device.status.state.value
            for name, m in self.devices.items()
            if m.device.status.state not in (DeviceState.ONLINE, DeviceState.BUSY)
        }
        return {
            "status": "degraded" if down else "ok",
            "devices": {name: m.device.status.state.value for name, m in self.devices.items()},
            **({"down": down} if down else {}),
        }
