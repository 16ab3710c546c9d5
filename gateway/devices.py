"""The device manager: builds drivers (and sim:// simulators) from config, one queue per device."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import structlog

from drivers.base import Device, DeviceEvent, DeviceState, DeviceUnavailable
from gateway.config import (
    DeviceConfig,
    EscposDevice,
    GatewayConfig,
    HttpCameraDevice,
    PcscDevice,
    SamvDevice,
    V4l2Device,
    device_kind,
    driver_name,
)
from gateway.errors import GatewayError
from gateway.queueing import DeviceQueue
from gateway.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

SIM_PREFIX = "sim://"


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

    def describe(self) -> dict[str, Any]:
        status = self.device.status
        return {
            "name": self.name,
            "kind": self.kind,
            "driver": self.device.driver,
            "simulated": self.simulator is not None,
            **status.as_dict(),
            "queue": self.queue.snapshot(),
        }

    def require_usable(self) -> None:
        """Raise at once, with the state, when the device cannot take work."""
        status = self.device.status
        if not status.state.usable:
            raise DeviceUnavailable(
                f"{self.name} is {status.state.value}: {status.reason}",
                device=self.name,
                state=status.state,
            )


async def _build(name: str, cfg: DeviceConfig, stack: AsyncExitStack) -> tuple[Device, Any]:
    """Create the driver (starting the simulator first for sim:// ports)."""
    simulator: Any = None
    if isinstance(cfg, SamvDevice):
        from drivers.idcard.driver import SamvReader

        port = cfg.port
        if port.startswith(SIM_PREFIX):
            from drivers.idcard.simulator import IdCardSimulator

            simulator = IdCardSimulator(
                name=name, baudrate=cfg.baudrate, auto_present=True, card=cfg.sim_card
            )
            port = await simulator.start()
            stack.push_async_callback(simulator.stop)
        return (
            SamvReader(
                name,
                port,
                baudrate=cfg.baudrate,
                poll_interval=cfg.poll_interval_s,
                read_timeout=cfg.read_timeout_s,
            ),
            simulator,
        )
    if isinstance(cfg, EscposDevice):
        from drivers.printer.driver import EscPosPrinter

        port = cfg.port
        if port.startswith(SIM_PREFIX):
            from drivers.printer.simulator import PrinterSimulator

            simulator = PrinterSimulator(name=name, baudrate=cfg.baudrate, print_time=cfg.sim_print_time_s)
            port = await simulator.start()
            stack.push_async_callback(simulator.stop)
        from drivers.printer.job import PrinterProfile

        printer = EscPosPrinter(
            name,
            port,
            baudrate=cfg.baudrate,
            status_back=cfg.status_back,
            confirm_print=cfg.confirm_print,
            xonxoff=cfg.flow_control == "xonxoff",
            profile=PrinterProfile(
                cut=cfg.cut,
                charset=cfg.font_charset,
                unprintable=cfg.unprintable,
                placeholder=cfg.placeholder,
                width_dots=cfg.paper_width_dots,
                raster_fonts=tuple(cfg.raster_fonts),
            ),
        )
        return printer, simulator
    if isinstance(cfg, PcscDevice):
        from drivers.cardreader.driver import PcscCardReader

        reader = cfg.reader
        if cfg.simulate:
            from drivers.cardreader.vcard import VIRTUAL_READER, VirtualCard, personality

            simulator = VirtualCard(personality(cfg.simulate), port=cfg.sim_vpcd_port)
            reader = reader or VIRTUAL_READER
            stack.push_async_callback(simulator.remove)
            # The card goes into vpcd's slot once pcscd is there; without pcscd the reader says so.
            task = asyncio.create_task(_insert_virtual_card(name, simulator), name=f"{name}-vcard")
            stack.push_async_callback(cancel_and_wait, task)
        return (
            PcscCardReader(
                name,
                reader=reader,
                poll_interval=cfg.poll_interval_s,
                apdu_timeout=cfg.apdu_timeout_s,
            ),
            simulator,
        )
    if isinstance(cfg, HttpCameraDevice):
        from drivers.camera.http import HttpCamera

        url = cfg.url
        if url.startswith(SIM_PREFIX):
            from drivers.camera.simulator import CameraSimulator

            simulator = CameraSimulator()
            url = await simulator.start()
            stack.push_async_callback(simulator.stop)
        return (
            HttpCamera(
                name,
                url,
                username=cfg.username or None,
                password=cfg.password or None,
                auth=cfg.auth,
                stream=cfg.stream,
                timeout=cfg.timeout_s,
                max_bytes=cfg.max_bytes,
            ),
            simulator,
        )
    if isinstance(cfg, V4l2Device):
        from drivers.camera.v4l2 import V4l2Camera

        camera = V4l2Camera(
            name,
            cfg.device,
            input_format=cfg.input_format,
            width=cfg.width,
            height=cfg.height,
            skip_frames=cfg.skip_frames,
            timeout=cfg.timeout_s,
            max_bytes=cfg.max_bytes,
        )
        return camera, None
    raise GatewayError(f"devices.{name}: unsupported driver")


async def _insert_virtual_card(name: str, card: Any) -> None:
    from drivers.cardreader.vcard import VirtualCardError

    try:
        await card.insert(timeout=30.0)
    except VirtualCardError as err:
        log.warning("virtual_card_not_inserted", device=name, error=str(err))


class DeviceManager:
    """Owns every configured device and its queue; relays device events to its subscribers."""

    def __init__(self) -> None:
        self.devices: dict[str, ManagedDevice] = {}
        self._listeners: list[Callable[[DeviceEvent], None]] = []

    def subscribe(self, listener: Callable[[DeviceEvent], None]) -> None:
        self._listeners.append(listener)

    def _relay(self, event: DeviceEvent) -> None:
        if event.kind == "state":
            log.info("device_state", device=event.device, **dict(event.data))
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("device_listener_failed", device=event.device)

    async def start(self, configs: dict[str, DeviceConfig], stack: AsyncExitStack) -> None:
        """Build and start each device with its queue; an unplugged one still starts, a build error raises."""
        for name, cfg in configs.items():
            device, simulator = await _build(name, cfg, stack)
            queue = DeviceQueue(name, depth=cfg.queue.depth, deadline_s=cfg.queue.deadline_s)
            managed = ManagedDevice(name, device_kind(cfg), device, queue, cfg, simulator)
            self.devices[name] = managed
            device.subscribe(self._relay)
            queue.start()
            stack.push_async_callback(queue.close)
            await device.start()
            stack.push_async_callback(device.close)
            log.info("device_added", device=name, driver=driver_name(cfg), simulated=simulator is not None)

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

    def describe(self) -> list[dict[str, Any]]:
        return [m.describe() for m in self.devices.values()]

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
