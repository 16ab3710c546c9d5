"""Rate-limited reporting of repeated events: the first of each kind at once, then a count per interval.

A peer that can make the gateway log or alert once per thing it sends can flood the log and the
uplink. `Tally` turns a stream of such events into at most two reports per kind per interval: the
first one as it happens, and, at the end of the interval, one summary with how many followed.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

# Attacker-controlled text echoed into a log line or an alert is cut to this many characters.
ECHO_MAX_CHARS: Final = 64


def echo(value: object, limit: int = ECHO_MAX_CHARS) -> str:
    """Text safe to echo: short values as they are, longer ones cut, with their length and a hash."""
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        text = raw.decode("utf-8", "replace")
    else:
        text = str(value)
        raw = text.encode("utf-8", "surrogatepass")
    text = "".join(ch if ch.isprintable() else "?" for ch in text[: limit + 1])
    if len(raw) <= limit and len(text) <= limit:
        return text
    digest = hashlib.sha256(raw).hexdigest()[:16]
    return f"{text[:limit]}…[{len(raw)} bytes sha256:{digest}]"


@dataclass
class _Window:
    started: float
    suppressed: int = 0
    last: dict[str, Any] = field(default_factory=dict)


Report = Callable[[str, int, dict[str, Any], bool], None]


class Tally:
    """Counts events by kind; reports the first of each kind per interval and then one summary.

    `report(kind, count, fields, first)` is called with (1, first=True) for the first event of a
    window, and with the number of events that followed, first=False, when the window closes
    (only if any did).
    """

    def __init__(
        self,
        report: Report,
        *,
        interval_s: float = 60.0,
        max_kinds: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.report = report
        self.interval_s = interval_s
        self.max_kinds = max_kinds
        self._clock = clock
        self.totals: dict[str, int] = {}
        self._windows: dict[str, _Window] = {}

    def record(self, kind: str, **fields: Any) -> bool:
        """Count one event; True when it was reported at once (the first of its window)."""
        if kind not in self.totals and len(self.totals) >= self.max_kinds:
            kind = "other"
        self.totals[kind] = self.totals.get(kind, 0) + 1
        now = self._clock()
        window = self._windows.get(kind)
        if window is not None and now - window.started >= self.interval_s:
            self._close(kind, window)
            window = None
        if window is None:
            self._windows[kind] = _Window(started=now)
            self.report(kind, 1, fields, True)
            return True
        window.suppressed += 1
        window.last = fields
        return False

    def flush(self, *, force: bool = False) -> None:
        """Close every window older than the interval (all of them with `force`), reporting counts."""
        now = self._clock()
        for kind, window in list(self._windows.items()):
            if force or now - window.started >= self.interval_s:
                self._close(kind, window)

    def _close(self, kind: str, window: _Window) -> None:
        del self._windows[kind]
        if window.suppressed:
            self.report(kind, window.suppressed, window.last, False)

    @property
    def total(self) -> int:
        return sum(self.totals.values())
