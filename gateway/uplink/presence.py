"""Presence payloads on `edge/{node}/status` and the rule a consumer orders them by.

A node publishes `{"v":1,"node":..,"state":"online"|"offline","epoch":MS,"conn":N,"ts":..,
"version":..}`: `epoch` is when the node's link was created (ms since 1970, so it grows across
restarts), `conn` counts connection attempts within the epoch, and the will registered with a
connection carries that connection's (epoch, conn). The rule: a message counts only if its
(epoch, conn) is newer than the last one applied for the node, or equal with `offline` after
`online` (the end of that same connection). So a will that arrives late, from a broker cluster
member that noticed the drop after the node came back elsewhere, or through another consumer of
a shared subscription, never overrides a newer `online`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard

from gateway import __version__
from gateway.uplink.keys import format_rfc3339

STATES = ("online", "offline")
PRESENCE_VERSION = 1


def presence_payload(node: str, state: str, *, epoch: int, conn: int) -> bytes:
    """The presence payload a node publishes (retained) and registers as its will."""
    doc = {
        "v": PRESENCE_VERSION,
        "node": node,
        "state": state,
        "epoch": epoch,
        "conn": conn,
        "ts": format_rfc3339(datetime.now(UTC)),
        "version": __version__,
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


class PresenceError(ValueError):
    """The payload is not a presence object of a version this code knows."""


@dataclass(frozen=True, order=True)
class Presence:
    """One presence message; ordering compares (epoch, conn, state rank)."""

    epoch: int
    conn: int
    rank: int
    node: str
    ts: str
    version: str

    @property
    def state(self) -> str:
        return STATES[self.rank]

    @classmethod
    def parse(cls, payload: bytes) -> Presence:
        """Parse and check a presence payload; PresenceError says what is wrong."""
        try:
            doc: Any = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as err:
            raise PresenceError(f"presence is not JSON: {err}") from err
        if not isinstance(doc, dict) or doc.get("v") != 1:
            raise PresenceError("presence must be a JSON object with v = 1")
        state, epoch, conn = doc.get("state"), doc.get("epoch"), doc.get("conn")
        if state not in STATES:
            raise PresenceError(f"presence state must be online or offline, got {state!r}")
        if not _count(epoch) or not _count(conn):
            raise PresenceError("presence epoch and conn must be non-negative integers")
        node, ts, version = doc.get("node"), doc.get("ts"), doc.get("version")
        if not isinstance(node, str) or not isinstance(ts, str) or not isinstance(version, str):
            raise PresenceError("presence node, ts and version must be strings")
        return cls(epoch, conn, STATES.index(state), node, ts, version)


def _count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class PresenceTracker:
    """The consumer rule: per node, keep the newest presence; stale ones are ignored."""

    def __init__(self) -> None:
        self.current: dict[str, Presence] = {}
        self.ignored = 0

    def apply(self, payload: bytes) -> bool:
        """Apply one message; True if it changed what is known, False if it was stale."""
        presence = Presence.parse(payload)
        known = self.current.get(presence.node)
        if known is not None and presence <= known:
            self.ignored += 1
            return False
        self.current[presence.node] = presence
        return True

    def state(self, node: str) -> str | None:
        """`online`, `offline`, or None for a node never heard of."""
        known = self.current.get(node)
        return None if known is None else known.state
