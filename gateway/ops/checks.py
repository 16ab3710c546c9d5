"""What a diag check ends with (verdict, one-line detail, fix, raw figures) and how it words figures."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

UNIT: Final = "edge-gateway.service"
DEFAULT_TIMEOUT: Final = 3.0


class Verdict(enum.StrEnum):
    """How one check ended."""

    PASS = "pass"  # noqa: S105 - a verdict, not a password
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One named check: its verdict, a one-line detail, the fix when it failed, and raw figures."""

    name: str
    status: Verdict
    detail: str
    fix: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "detail": self.detail,
            "fix": self.fix,
            "data": dict(self.data),
        }


def ago(then: float | None, now: float) -> str:
    """`5 s ago`, `3 min ago`, or `never`."""
    if then is None:
        return "never"
    return f"{duration(max(0.0, now - then))} ago"


def duration(seconds: float) -> str:
    """A span in the unit that reads best: ms, s, min, h, d."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


def size(n: float) -> str:
    """Bytes in B, KiB, MiB or GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
