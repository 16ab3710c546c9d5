"""The diag `device:NAME` and `station:NAME` checks: from /v1/status, else the driver registry's probe.

What a device's target is, how to look at it without the daemon and what fix to suggest all come
from its driver's entry in `gateway.drivers_registry`; this module only judges and words them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final

from gateway.config import DeviceConfig, GatewayConfig
from gateway.drivers_registry import DRIVERS, SIM_PREFIX, entry_for
from gateway.ops.checks import DEFAULT_TIMEOUT, UNIT, CheckResult, Verdict, ago
from gateway.status import DeviceEntry, GatewayStatus

_STATE_VERDICT: Final = {
    "online": Verdict.PASS,
    "busy": Verdict.PASS,
    "user_error": Verdict.WARN,
    "offline": Verdict.FAIL,
    "no_device": Verdict.FAIL,
    "hardware_error": Verdict.FAIL,
}


def _device_fix(driver: str, target: str) -> str:
    entry = DRIVERS.get(driver)
    return entry.fix(target) if entry is not None else "see the daemon's log for this device"


def device_from_status(item: DeviceEntry, config: GatewayConfig, *, now: float) -> CheckResult:
    """One device as the daemon reports it: state, reason, last error, last success."""
    cfg = config.devices.get(item.name)
    target = entry_for(cfg).target(cfg) if cfg is not None else "?"
    verdict = _STATE_VERDICT.get(item.state, Verdict.WARN)
    parts = [item.state]
    if item.reason:
        parts[0] += f" ({item.reason})"
    if item.simulated:
        parts.append("simulated")
    if item.last_error:
        parts.append(f"last error {ago(item.last_error_at, now)}: {item.last_error}")
    parts.append(f"last success {ago(item.last_success_at, now)}")
    if item.queue.queued:
        parts.append(f"{item.queue.queued} queued")
    fix = (
        _device_fix(item.driver or (entry_for(cfg).driver if cfg else ""), target)
        if verdict is not Verdict.PASS
        else None
    )
    data = {
        "state": item.state,
        "reason": item.reason,
        "driver": item.driver,
        "last_error": item.last_error,
        "last_error_at": item.last_error_at,
        "last_success_at": item.last_success_at,
    }
    return CheckResult(f"device:{item.name}", verdict, "; ".join(parts), fix=fix, data=data)


async def device_direct(name: str, cfg: DeviceConfig, *, timeout: float) -> CheckResult:
    """Without the daemon: does what the config points at exist? (the driver's own probe)"""
    check = f"device:{name}"
    entry = entry_for(cfg)
    target = entry.target(cfg)
    if target.startswith(SIM_PREFIX):
        data = {"driver": entry.driver, "source": "direct"}
        return CheckResult(check, Verdict.PASS, f"simulated ({target})", data=data)
    return await entry.probe(check, cfg, entry.fix(target), timeout)


async def check_devices(
    config: GatewayConfig,
    status: GatewayStatus | None,
    *,
    names: Sequence[str] | None = None,
    now: float,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[CheckResult]:
    """Each device: from /v1/status when the daemon answers, else directly from config."""
    wanted = list(names) if names is not None else list(config.devices)
    results: list[CheckResult] = []
    if status is not None and status.devices is not None:
        reported = {d.name: d for d in status.devices}
        for name in wanted:
            if name in reported:
                results.append(device_from_status(reported[name], config, now=now))
            else:
                results.append(
                    CheckResult(
                        f"device:{name}",
                        Verdict.FAIL,
                        "configured but the daemon does not run it (config changed since it started?)",
                        fix=f"`systemctl restart {UNIT}` to apply the config",
                    )
                )
        if names is None:
            results.extend(
                device_from_status(d, config, now=now) for n, d in reported.items() if n not in config.devices
            )
        return results
    return list(
        await asyncio.gather(*(device_direct(name, config.devices[name], timeout=timeout) for name in wanted))
    )


def check_stations(config: GatewayConfig, devices: Sequence[CheckResult]) -> list[CheckResult]:
    """Each configured station: can it serve a citizen? Every kind it uses needs a working device
    (a pool, at least one working member). Judged from the device checks."""
    verdicts = {r.name.removeprefix("device:"): r.status for r in devices}
    results = []
    for name, station in config.stations.items():
        worst = Verdict.PASS
        parts: list[str] = []
        broken: list[str] = []
        for kind, target in station.uses().items():
            members = config.pools[target].devices if target in config.pools else [target]
            ok = [m for m in members if verdicts.get(m) in (Verdict.PASS, Verdict.SKIP)]
            broken.extend(m for m in members if m not in ok)
            if not ok:
                worst = Verdict.FAIL
            elif len(ok) < len(members) and worst is Verdict.PASS:
                worst = Verdict.WARN
            label = f"pool {target} {len(ok)}/{len(members)}" if target in config.pools else target
            parts.append(f"{kind} {label}{'' if ok else ' DOWN'}")
        title = f"{station.label}: " if station.label else ""
        fix = f"see {', '.join(f'device:{d}' for d in broken)}" if broken else None
        data = {"label": station.label, "uses": station.uses()}
        results.append(CheckResult(f"station:{name}", worst, title + "; ".join(parts), fix=fix, data=data))
    return results
