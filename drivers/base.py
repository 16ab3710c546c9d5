"""What every peripheral driver shares: device states, the error root, status tracking, events."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class DeviceState(enum.StrEnum):
    """The device states the API reports (design.md: GET /v1/devices)."""

    ONLINE = "online"
    OFFLINE = "offline"
    NO_DEVICE = "no_device"
    HARDWARE_ERROR = "hardware_error"
    USER_ERROR = "user_error"
    BUSY = "busy"

    @property
    def usable(self) -> bool:
        """Whether work may be sent to a device in this state."""
        return self in (DeviceState.ONLINE, DeviceState.BUSY)


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """A device's state with the reason and wall-clock time of the last change."""

    state: DeviceState
    reason: str
    since: float
    warnings: tuple[str, ...] = ()
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """Something a device reports on its own: a state change, a card presented or removed."""

    device: str
    kind: str
    data: Mapping[str, Any] = field(default_factory=dict)


Listener = Callable[[DeviceEvent], None]


class DriverError(Exception):
    """Root of every error a driver raises."""

    def __init__(self, message: str, *, device: str | None = None) -> None:
        super().__init__(message)
        self.device = device


class DeviceUnavailable(DriverError):
    """The device cannot take work now (unplugged, offline, in error); carries its state."""

    def __init__(
        self, message: str, *, device: str | None = None, state: DeviceState = DeviceState.OFFLINE
    ) -> None:
        super().__init__(message, device=device)
        self.state = state


class DeviceTimeout(DriverError, TimeoutError):
    """The device did not answer in time."""


class FrameError(DriverError):
    """Bytes that do not form a valid frame of the device's protocol."""


class DeviceRejected(DriverError):
    """The device answered with an error status; `code` is the protocol's status value."""

    def __init__(self, message: str, *, device: str | None = None, code: int | str = 0) -> None:
        super().__init__(message, device=device)
        self.code = code


class UserActionNeeded(DriverError):
    """The device needs the user: no card presented, card removed mid-read, paper out."""


class StatusTracker:
    """Holds a device's status and fans out events to listeners; never raises from a listener."""

    def __init__(self, device: str, initial: DeviceState = DeviceState.OFFLINE) -> None:
        self.device = device
        self._status = DeviceStatus(initial, "starting", time.time())
        self._listeners: list[Listener] = []

    @property
    def status(self) -> DeviceStatus:
        return self._status

    def set(self, state: DeviceState, reason: str, *, warnings: tuple[str, ...] = ()) -> None:
        """Change state (emitting a `state` event) when state, reason or warnings differ."""
        old = self._status
        if old.state == state and old.reason == reason and old.warnings == warnings:
            return
        since = old.since if old.state == state else time.time()
        self._status = DeviceStatus(
            state,
            reason,
            since,
            warnings,
            old.last_error,
            old.last_error_at,
            old.last_success_at,
        )
        self.emit("state", state=state.value, reason=reason, previous=old.state.value)

    def record_success(self) -> None:
        s = self._status
        self._status = DeviceStatus(
            s.state, s.reason, s.since, s.warnings, s.last_error, s.last_error_at, time.time()
        )

    def record_error(self, error: str) -> None:
        s = self._status
        self._status = DeviceStatus(
            s.state, s.reason, s.since, s.warnings, error, time.time(), s.last_success_at
        )

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a listener; returns the function that removes it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def emit(self, kind: str, **data: Any) -> None:
        event = DeviceEvent(self.device, kind, data)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # noqa: S112 - a broken listener must not break the driver
                continue


@runtime_checkable
class Device(Protocol):
    """What the gateway needs from every driver, whatever its transport."""

    name: str
    driver: str

    @property
    def status(self) -> DeviceStatus: ...

    def subscribe(self, listener: Listener) -> Callable[[], None]: ...

    async def start(self) -> None:
        """Begin supervising the device; returns at once even when the device is absent."""

    async def close(self) -> None:
        """Stop supervision, fail pending work, release the transport."""

    async def probe(self, *, timeout: float | None = None) -> DeviceStatus:
        """Ask the device for its health now (the priority-lane health probe)."""
