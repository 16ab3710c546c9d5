"""Stations (kiosks and counters) of one node: which device or pool serves each station, per kind.

A session belongs to one station; every device route resolves the station's device of the kind here,
so a card presented at one kiosk can only ever be read for that kiosk's sessions. A pool hands each
request to its usable member with the shortest expected wait, so a failed member takes no new work.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from drivers.base import DeviceState, DeviceUnavailable
from gateway.config import DEFAULT_STATION, DEVICE_KINDS, GatewayConfig, device_kind
from gateway.devices import DeviceManager, ManagedDevice, NoSuchDevice
from gateway.errors import GatewayError
from gateway.status import DeviceEntry, StationDevice, StationEntry, StationFigures


class StationError(GatewayError):
    """Root of station errors."""


class UnknownStation(StationError):
    """No station of that name is configured."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"no station named {name!r}; configured: {', '.join(known)}")
        self.name = name


class StationRequired(StationError):
    """More than one station is configured and the request did not say which."""

    def __init__(self, known: list[str]) -> None:
        super().__init__(f"this node serves several stations; name one of: {', '.join(known)}")


class StationForbidden(StationError):
    """The calling local uid is not in the station's `uids`."""

    def __init__(self, name: str, uid: int | None) -> None:
        super().__init__(f"uid {uid} may not open sessions at station {name!r}")
        self.name = name


@dataclass(frozen=True)
class Station:
    """One station: its label, who may use it, and per kind the device or pool it uses."""

    name: str
    label: str
    uids: frozenset[int]
    uses: dict[str, str]

    def admits(self, uid: int | None) -> bool:
        # A peer without a uid (the TCP listeners) is governed by those listeners' own rules.
        return not self.uids or uid is None or uid in self.uids


def stations_of(config: GatewayConfig) -> dict[str, Station]:
    """The configured stations, or the implicit `default` station using the first device of each kind
    (as before stations existed; further devices of a kind serve maintenance only until stations
    say who uses them)."""
    if config.stations:
        return {
            name: Station(name, table.label, frozenset(table.uids), table.uses())
            for name, table in config.stations.items()
        }
    uses: dict[str, str] = {}
    for name, cfg in config.devices.items():
        uses.setdefault(device_kind(cfg), name)
    return {DEFAULT_STATION: Station(DEFAULT_STATION, "", frozenset(), uses)}


class StationMap:
    """Resolves (station, kind) to a device; pools pick a usable member with the shortest wait."""

    def __init__(self, config: GatewayConfig, devices: DeviceManager) -> None:
        self.devices = devices
        self.stations = stations_of(config)
        self.pools = {name: list(table.devices) for name, table in config.pools.items()}
        self._turn = itertools.count()
        # Who each device serves, worked out once (stations and pools change only with a restart):
        # every device event and the failure-share rule ask it.
        self._pool_of = {device: pool for pool, names in self.pools.items() for device in names}
        self._using = {device: self._stations_using(device) for device in devices.devices}

    @property
    def names(self) -> list[str]:
        return list(self.stations)

    def get(self, name: str) -> Station:
        station = self.stations.get(name)
        if station is None:
            raise UnknownStation(name, self.names)
        return station

    def for_new_session(self, requested: str | None, uid: int | None) -> Station:
        """The station a new session belongs to: named, or the only one; the caller must be admitted."""
        if requested is None:
            if len(self.stations) != 1:
                raise StationRequired(self.names)
            station = next(iter(self.stations.values()))
        else:
            station = self.get(requested)
        if not station.admits(uid):
            raise StationForbidden(station.name, uid)
        return station

    def members(self, station: str, kind: str) -> list[ManagedDevice]:
        """Every device that may serve this station's `kind` (one, or the pool's members)."""
        target = self.get(station).uses.get(kind)
        if target is None:
            raise NoSuchDevice(kind)
        names = self.pools.get(target, [target])
        return [self.devices.named(name) for name in names]

    def device_for(self, station: str, kind: str) -> ManagedDevice:
        """The device that takes this station's next `kind` request; DeviceUnavailable when none can."""
        members = self.members(station, kind)
        if len(members) == 1:
            return members[0]
        usable = [m for m in members if m.device.status.state.usable]
        if not usable:
            first = members[0]
            raise DeviceUnavailable(
                f"no device of pool {self.get(station).uses[kind]!r} can take work "
                f"({', '.join(f'{m.name} {m.device.status.state.value}' for m in members)})",
                device=first.name,
                state=first.device.status.state,
            )
        # Shortest expected wait; a rotating start spreads ties (idle members) evenly.
        start = next(self._turn) % len(usable)
        rotated = usable[start:] + usable[:start]
        return min(rotated, key=lambda m: m.queue.estimate_wait(m.queue.queued))

    def pool_of(self, device: str) -> str | None:
        return self._pool_of.get(device)

    def stations_using(self, device: str) -> list[str]:
        """The stations a device serves, directly or through its pool (none for an unknown name)."""
        return list(self._using.get(device, ()))

    def _stations_using(self, device: str) -> list[str]:
        pool = self.pool_of(device)
        return sorted(
            name
            for name, station in self.stations.items()
            if device in station.uses.values() or (pool is not None and pool in station.uses.values())
        )

    def describe_devices(self) -> list[DeviceEntry]:
        """GET /v1/devices and /v1/status: each device with the stations and pool it serves."""
        entries = []
        for name, managed in self.devices.devices.items():
            users, pool = self.stations_using(name), self.pool_of(name)
            only = users[0] if pool is None and len(users) == 1 else None
            entries.append(managed.describe(users, station=only, pool=pool))
        return entries

    def describe_station(
        self, name: str, *, sessions: int = 0, usage: StationFigures | None = None
    ) -> StationEntry:
        """One station's devices (a pool as one, with how many members are online) and their states."""
        station = self.get(name)
        kinds: dict[str, StationDevice] = {}
        for kind in DEVICE_KINDS:
            target = station.uses.get(kind)
            if target is None:
                continue
            if target in self.pools:
                states = [m.device.status.state for m in self.members(name, kind)]
                online = sum(1 for s in states if s.usable)
                kinds[kind] = StationDevice(
                    pool=target, state=_pool_state(states), online=online, devices=len(states)
                )
            else:
                state = self.devices.named(target).device.status.state
                kinds[kind] = StationDevice(device=target, state=state.value)
        return StationEntry(name=name, label=station.label, devices=kinds, sessions=sessions, usage=usage)


def _pool_state(states: list[DeviceState]) -> str:
    """A pool is online while any member can take work; else it shows its first member's state."""
    usable = [s for s in states if s.usable]
    if usable:
        return DeviceState.BUSY.value if all(s is DeviceState.BUSY for s in usable) else "online"
    return states[0].value
