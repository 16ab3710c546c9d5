"""The Device-protocol plumbing every serial driver shares: state, events, start/close, probe, waits."""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Callable
from typing import Generic, TypeVar

from drivers.base import DeviceState, DeviceStatus, DriverError, Listener, StatusTracker
from drivers.serialio.correlation import CommandGate
from drivers.serialio.link import LinkProtocol, SerialLink

P = TypeVar("P", bound=LinkProtocol)


class SerialDevice(abc.ABC, Generic[P]):
    """A supervised serial device: a SerialLink, one command in flight, a background loop."""

    driver: str

    def __init__(
        self,
        name: str,
        port: str,
        *,
        baudrate: int,
        protocol_factory: Callable[[], P],
        backoff_initial: float,
        backoff_max: float,
    ) -> None:
        self.name = name
        self.port = port
        self.baudrate = baudrate
        self._tracker = StatusTracker(name, DeviceState.OFFLINE)
        self._gate = CommandGate()
        self._link: SerialLink[P] = SerialLink(
            device=name,
            port=port,
            baudrate=baudrate,
            tracker=self._tracker,
            protocol_factory=protocol_factory,
            on_up=self._on_up,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
        self._background: asyncio.Task[None] | None = None

    @abc.abstractmethod
    async def _on_up(self, protocol: P) -> None:
        """Check the device after every (re)open and set its state."""

    @abc.abstractmethod
    async def _background_loop(self) -> None:
        """Runs while started: presence polling, status monitoring."""

    @abc.abstractmethod
    async def _health_check(self, timeout: float | None) -> None:
        """The device's status command; its answer sets the state."""

    @property
    def status(self) -> DeviceStatus:
        return self._tracker.status

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        return self._tracker.subscribe(listener)

    async def start(self) -> None:
        self._tracker.set(DeviceState.NO_DEVICE, f"opening {self.port}")
        await self._link.start()
        if self._background is None:
            self._background = asyncio.create_task(self._background_loop(), name=f"{self.name}-background")

    async def close(self) -> None:
        task, self._background = self._background, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._link.close()
        self._tracker.set(DeviceState.OFFLINE, "closed")

    async def probe(self, *, timeout: float | None = None) -> DeviceStatus:
        """Run the status command now; the state reflects the answer (or its absence). Never raises."""
        with contextlib.suppress(DriverError):
            await self._health_check(timeout)
        return self.status

    async def wait_online(self, *, timeout: float) -> DeviceStatus:
        """Wait until the device can take work (start-up ordering, tests)."""
        ready = asyncio.Event()
        unsubscribe = self.subscribe(lambda _e: ready.set() if self.status.state.usable else None)
        try:
            if not self.status.state.usable:
                async with asyncio.timeout(timeout):
                    await ready.wait()
        finally:
            unsubscribe()
        return self.status
