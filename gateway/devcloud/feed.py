"""The development cloud's console feed: one readable, masked line per event (or one JSON object)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from gateway.logs import mask_value

# Besides the personal keys the logs mask: images in face requests, and the answers' codes.
_IMAGE_KEYS = frozenset({"probe", "reference", "photo", "image"})
# One-time codes a kiosk submits: a real cloud never writes them down either.
_SECRET_KEYS = frozenset({"code", "pin", "otp"})
_MAX_VALUE = 60
_MAX_SUMMARY = 160


def masked(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body with personal data masked and images reduced to their size."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key in _IMAGE_KEYS and isinstance(value, str):
            out[key] = f"<image, {len(value)} base64 chars>"
        elif key in _SECRET_KEYS and value not in (None, ""):
            out[key] = "<masked>"
        elif isinstance(value, Mapping):
            out[key] = masked(value)
        else:
            out[key] = mask_value(key, value)
    return out


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 3] + "..."


def summary(body: Mapping[str, Any]) -> str:
    """`key=value` pairs of a masked body, each value and the whole line cut short."""
    text = " ".join(f"{key}={_short(value)}" for key, value in masked(body).items())
    return text if len(text) <= _MAX_SUMMARY else text[: _MAX_SUMMARY - 3] + "..."


class Feed:
    """Writes events as console lines, or as JSON lines with `as_json`."""

    def __init__(
        self,
        write: Callable[[str], None],
        *,
        as_json: bool = False,
        clock: Callable[[], float] = time.time,
        prefix: str = "",
    ) -> None:
        self._write = write
        self.as_json = as_json
        self._clock = clock
        self.prefix = prefix

    def emit(self, event: str, text: str, **fields: Any) -> None:
        """One event: `text` for people, `fields` (already masked) for machines."""
        now = self._clock()
        if self.as_json:
            record = {"ts": round(now, 3), "event": event, **fields}
            self._write(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
        else:
            stamp = time.strftime("%H:%M:%S", time.localtime(now))
            self._write(f"{self.prefix}{stamp} {text}")
