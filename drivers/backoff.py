"""Capped exponential backoff with jitter: how long a reconnect loop waits after its n-th failure.

One helper for every loop that tries again (the serial link's reopen, the PC/SC reader's poll,
the MQTT link's full connect). The wait after the n-th consecutive failure is
`first * 2**(n-1)`, at most `cap`, then jittered in one of three ways:

- `Jitter.ADD_FIRST`: plus uniform(0, first) (the serial link: keep `cap + first` as the ceiling);
- `Jitter.SPREAD`: times uniform(0.8, 1.2) (the PC/SC poll);
- `Jitter.FULL`: uniform(0, wait), "full jitter" (the MQTT link's failed full connects).

Full jitter and the capped doubling are the AWS Architecture Blog's "Exponential Backoff And
Jitter" (Marc Brooker, 2015); the capped doubling and the two jitters that tenacity has are
tenacity's own strategies (`wait_exponential`, `wait_random`, `wait_random_exponential`), asked
for the n-th wait. `gateway/` may import this module; `drivers/` never imports `gateway/`.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from types import SimpleNamespace
from typing import cast

from tenacity import RetryCallState, wait_exponential, wait_random, wait_random_exponential

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
        return float(wait_exponential(multiplier=self.first, max=self.cap)(_attempt(failures)))

    def wait(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failure in a row (1 for the first)."""
        attempt = _attempt(failures)
        match self.jitter:
            case Jitter.ADD_FIRST:
                strategy = wait_exponential(multiplier=self.first, max=self.cap) + wait_random(0, self.first)
                return float(strategy(attempt))
            case Jitter.SPREAD:
                return self.capped(failures) * random.uniform(SPREAD_LOW, SPREAD_HIGH)
            case Jitter.FULL:
                return float(wait_random_exponential(multiplier=self.first, max=self.cap)(attempt))


def _attempt(failures: int) -> RetryCallState:
    """What tenacity's wait strategies read of a retry: the attempt number (at least 1)."""
    return cast(RetryCallState, SimpleNamespace(attempt_number=max(1, failures)))
