"""Read systemd unit files and tmpfiles.d lines as systemd does, so tests check what it would see."""

from __future__ import annotations

import shlex
from pathlib import Path

Unit = dict[str, dict[str, list[str]]]


def parse_unit(path: Path) -> Unit:
    """Sections to keys to every assigned value in order (systemd allows repeated keys)."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        if section is None or "=" not in line:
            raise ValueError(f"{path}: not a unit file line: {raw!r}")
        key, value = line.split("=", 1)
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def last(unit: Unit, section: str, key: str) -> str:
    """The value systemd uses for a single-valued setting: the last assignment."""
    values = unit.get(section, {}).get(key)
    if not values:
        raise KeyError(f"[{section}] {key}= is not set")
    return values[-1]


def tmpfiles_entries(path: Path) -> dict[str, tuple[str, str, str, str]]:
    """Path to (type, mode, user, group) for each tmpfiles.d line."""
    entries: dict[str, tuple[str, str, str, str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = shlex.split(line)
        kind, target, mode, user, group = fields[:5]
        entries[target] = (kind, mode, user, group)
    return entries
