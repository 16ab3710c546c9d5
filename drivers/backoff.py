"""Capped exponential backoff with jitter: how long a reconnect loop waits after its n-th failure.

One helper for every loop that tries again (the serial link's reopen, the PC/SC reader's poll,
the MQTT link's full connect). The wait after the n-th consecutive failure is
`first * 2**(n-1)`, at most `cap`, then jittered in one of three ways:

- `Jitter.ADD_FIRST`: plus uniform(0, first) (the serial link: keep `cap + first` as the ceiling);
- `Jitter.SPREAD`: times uniform(0.8, 1.2) (the PC/SC poll);
- `Jitter.FULL`: uniform(0, wait), "full jitter" (the MQTT link's failed full connects).

Full jitter and the capped doubling are the AWS Architecture Blog's "Exponential Backoff And
Jitter" (Marc Brooker, 2015) and tenacity's `wait_exponential` / `wait_random_exponential`, whose
figures these reproduce (the same randomness source: the `random` module unless given one).
`gateway/` may import this module; `drivers/` never imports `gateway/`.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

# The PC/SC poll's jitter: the wait times a factor in this range.
SPREAD_LOW = 0.8
SPREAD_HIGH = 1.2


class Jitter(enum.Enum):
    """How the capped wait is made random."""

    ADD_FIRST = "add_first"
    SPREAD = "spread"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class Backoff:
    """Wait after the n-th consecutive failure: first * 2**(n-1), at most cap, then jittered."""

    first: float
    cap: float
    jitter: Jitter = Jitter.FULL

    def __post_init__(self) -> None:
        if self.first < 0 or self.cap < 0:
            raise ValueError("backoff waits must not be negative")

    def capped(self, failures: int) -> float:
        """The wait before jitter; the first failure (and anything below) waits `first`."""
        exponent = max(0, failures - 1)
        try:
            wait = self.first * 2.0**exponent
        except OverflowError:
            return self.cap
        return max(0.0, min(wait, self.cap))

    def wait(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the `failures`-th failure in a row (1 for the first)."""
        uniform = rng.uniform if rng is not None else random.uniform
        wait = self.capped(failures)
        match self.jitter:
            case Jitter.ADD_FIRST:
                return wait + uniform(0.0, self.first)
            case Jitter.SPREAD:
                return wait * uniform(SPREAD_LOW, SPREAD_HIGH)
            case Jitter.FULL:
                return uniform(0.0, wait)
