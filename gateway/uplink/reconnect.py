"""When the MQTT link tries again: first-connect jitter, probing while down, spread return, backoff.

A fleet shares one broker cluster, so every wait here is random and every wait is capped by
`backoff_max_s`:

- the first connect of a process waits uniform(0, first_connect_jitter_s), so a site's power
  return or a fleet-wide restart does not arrive at once;
- while the broker is unreachable the link only opens a TCP connection (no TLS, no MQTT) every
  `down_for * PROBE_RATIO` seconds (at least backoff_min_s, at most backoff_max_s, x0.5..1.5
  jitter): the wait grows with the outage instead of with the failure count, so a node notices
  the broker's return within a few seconds even after a long outage;
- once a probe succeeds after a lost connection, the full connect waits uniform(0,
  reconnect_spread_s): the fleet comes back spread over that window, not in one burst;
- a full connect that fails while the broker is reachable (TLS, credentials, a refused CONNACK)
  backs off exponentially with full jitter; a CONNACK that says the server is busy, over its
  quota or over its connection rate (MQTT v5 reason codes 0x89, 0x97, 0x9F) waits the longest
  backoff, uniform(backoff_max_s / 2, backoff_max_s).

Reason codes: OASIS MQTT v5.0 §3.2.2.2 (CONNACK Reason Code table); the same values are listed in
paho-mqtt's `paho/mqtt/reasoncodes.py` and in Epic's MQTTCore `EMQTTReasonCode`
(ServerBusy = 0x89, QuotaExceeded = 0x97, UseAnotherServer = 0x9C, ServerMoved = 0x9D,
ConnectionRateExceeded = 0x9F).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from drivers.backoff import Backoff, Jitter

# The wait between probes is this share of the time the link has been down.
PROBE_RATIO: Final = 0.03
# CONNACK / DISCONNECT reason codes (MQTT v5.0 §2.4, §3.2.2.2).
SERVER_BUSY: Final = 0x89
SERVER_SHUTTING_DOWN: Final = 0x8B
QUOTA_EXCEEDED: Final = 0x97
USE_ANOTHER_SERVER: Final = 0x9C
SERVER_MOVED: Final = 0x9D
CONNECTION_RATE_EXCEEDED: Final = 0x9F
BUSY_CODES: Final = frozenset({SERVER_BUSY, QUOTA_EXCEEDED, CONNECTION_RATE_EXCEEDED})
REDIRECT_CODES: Final = frozenset({USE_ANOTHER_SERVER, SERVER_MOVED})


@dataclass(frozen=True)
class ReconnectPolicy:
    """The waits of one link; every figure is capped by backoff_max_s."""

    backoff_min_s: float = 1.0
    backoff_max_s: float = 60.0
    first_connect_jitter_s: float = 0.0
    reconnect_spread_s: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.backoff_min_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_min_s <= backoff_max_s")
        if self.first_connect_jitter_s < 0 or self.reconnect_spread_s < 0:
            raise ValueError("jitter and spread must not be negative")

    def first_connect(self, rng: random.Random) -> float:
        """Wait before the first connect of the process."""
        return rng.uniform(0.0, min(self.first_connect_jitter_s, self.backoff_max_s))

    def spread(self, rng: random.Random) -> float:
        """Wait between a successful probe (after a loss) and the full connect."""
        return rng.uniform(0.0, min(self.reconnect_spread_s, self.backoff_max_s))

    def probe_interval(self, down_for: float, rng: random.Random) -> float:
        """Wait before the next reachability probe, growing with the outage, not the failures."""
        base = min(max(down_for * PROBE_RATIO, self.backoff_min_s), self.backoff_max_s)
        return min(base * rng.uniform(0.5, 1.5), self.backoff_max_s)

    def after_failed_connect(self, failures: int, reason_code: int | None, rng: random.Random) -> float:
        """Wait after a full connect failed with the broker reachable."""
        if reason_code in BUSY_CODES:
            return rng.uniform(self.backoff_max_s / 2, self.backoff_max_s)
        return self.full_jitter(failures)

    def full_jitter(self, failures: int) -> float:
        """Capped exponential backoff with full jitter: uniform(0, min(min_s * 2**(n-1), max_s))."""
        return Backoff(first=self.backoff_min_s, cap=self.backoff_max_s, jitter=Jitter.FULL).wait(failures)


def parse_server_reference(reference: str, *, default_port: int) -> tuple[str, int] | None:
    """`host`, `host:port` or `[v6]:port` (the first of a space-separated list); None if unusable."""
    first = reference.strip().split(" ")[0] if reference.strip() else ""
    if not first or len(first) > 255 or any(c in first for c in "/@?#\\"):
        return None
    host, port_text = first, ""
    if first.startswith("["):
        end = first.find("]")
        if end < 0:
            return None
        host, rest = first[1:end], first[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:]
    elif first.count(":") == 1:
        host, port_text = first.split(":")
    elif ":" in first:
        return None
    if not host:
        return None
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return host, int(port_text)
