"""Reload merging: which config keys a SIGHUP or `config.set` applies at once, which wait for a restart."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from gateway.config import GatewayConfig, as_dict

# Config keys a SIGHUP applies at once; every other change waits for a restart.
LIVE_KEYS = (
    "log.level",
    "api.allowed_uids",
    "api.max_sessions",
    "api.session_idle_timeout_s",
    "api.idle_warning_s",
    "api.sse_heartbeat_s",
    "ops.telemetry_interval_s",
)

_LIVE_QUEUE = re.compile(r"^devices\.[a-z][a-z0-9_]*\.queue$")


def flatten(data: dict[str, Any]) -> dict[str, Any]:
    """`section.key` paths; a device is one entry (`devices.NAME`) plus its queue (`devices.NAME.queue`)."""
    flat: dict[str, Any] = {}
    for section, table in data.items():
        if section == "devices":
            for name, device in table.items():
                flat[f"devices.{name}"] = {k: v for k, v in device.items() if k != "queue"}
                flat[f"devices.{name}.queue"] = device.get("queue")
        elif isinstance(table, dict) and table:
            flat.update({f"{section}.{key}": value for key, value in table.items()})
        else:
            flat[section] = table
    return flat


def is_live(path: str) -> bool:
    """Whether a change at `path` applies live (a device's queue does; its driver and port do not)."""
    return path in LIVE_KEYS or bool(_LIVE_QUEUE.match(path))


def merge_reload(old: GatewayConfig, new: GatewayConfig) -> tuple[GatewayConfig, list[str], list[str]]:
    """Take the live-changeable values from `new`; return (effective, applied, needs_restart)."""
    old_flat, new_flat = flatten(as_dict(old)), flatten(as_dict(new))
    applied, restart = [], []
    merged = as_dict(old)
    for path in sorted(set(old_flat) | set(new_flat)):
        if old_flat.get(path) == new_flat.get(path):
            continue
        if is_live(path) and path in old_flat and path in new_flat:
            *parents, key = path.split(".")
            table = merged
            for part in parents:
                table = table[part]
            table[key] = new_flat[path]
            applied.append(path)
        else:
            restart.append(path)
    effective = msgspec.convert(merged, GatewayConfig)
    return msgspec.structs.replace(effective, source=new.source), applied, restart
