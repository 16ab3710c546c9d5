"""`config.set`: the few live config keys a signed command may change, validated as a whole."""

from __future__ import annotations

from typing import Any, Final

import msgspec

from gateway.config import GatewayConfig, as_dict
from gateway.reload import merge_reload
from gateway.remote import CommandFailed

# What a signed `config.set` command may change (a subset of what SIGHUP applies).
REMOTE_CONFIG_KEYS: Final = frozenset(
    {
        "log.level",
        "api.max_sessions",
        "api.session_idle_timeout_s",
        "api.idle_warning_s",
        "ops.telemetry_interval_s",
    }
)


def remote_config(current: GatewayConfig, body: Any) -> tuple[GatewayConfig, list[str]]:
    """`{"values": {"api.max_sessions": 150}}` applied to `current`: (effective config, keys applied)."""
    values = body.get("values") if isinstance(body, dict) else None
    if not isinstance(values, dict) or not values:
        raise CommandFailed('config.set needs {"values": {"key.path": value, ...}}')
    refused = sorted(k for k in values if k not in REMOTE_CONFIG_KEYS)
    if refused:
        raise CommandFailed(f"not settable remotely: {', '.join(refused)}")
    data = as_dict(current)
    for path, value in values.items():
        section, key = path.split(".", 1)
        data[section][key] = value
    try:
        new = msgspec.convert(data, GatewayConfig)
    except msgspec.ValidationError as err:
        raise CommandFailed(f"invalid value: {err}") from err
    new = msgspec.structs.replace(new, source=current.source, devices=current.devices)
    effective, applied, _restart = merge_reload(current, new)
    return effective, applied
