"""The shared backoff: the same waits the three reconnect loops had before they shared it.

The reference figures come from tenacity's own wait strategies (`wait_exponential`,
`wait_random`, `wait_random_exponential`) drawn from the same seeded `random` module state, and
from the PC/SC poll's former formula written out here; ranges are checked over many draws.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    wait_exponential,
    wait_random,
    wait_random_exponential,
)

from drivers.backoff import Backoff, Jitter
from gateway.uplink.reconnect import ReconnectPolicy


@pytest.fixture(autouse=True)
def _restore_random() -> Iterator[None]:
    """These tests seed the shared `random` module (the one tenacity draws from); put it back."""
    state = random.getstate()
    yield
    random.setstate(state)


def _attempt(number: int) -> RetryCallState:
    state = RetryCallState(AsyncRetrying(), fn=None, args=(), kwargs={})
    state.attempt_number = number
    return state


@pytest.mark.parametrize(("initial", "maximum"), [(0.2, 2.0), (0.5, 0.6), (1.0, 30.0)])
def test_serial_link_waits_match_the_tenacity_strategy_it_replaced(initial: float, maximum: float) -> None:
    tenacity_wait = wait_exponential(multiplier=initial, max=max(initial, maximum - initial)) + wait_random(
        0, initial
    )
    ours = Backoff(first=initial, cap=max(initial, maximum - initial), jitter=Jitter.ADD_FIRST)
    for failures in (1, 2, 3, 4, 5, 8, 40, 2000):
        random.seed(failures)
        expected = tenacity_wait(_attempt(failures))
        random.seed(failures)
        assert ours.wait(failures) == pytest.approx(expected, abs=1e-12)
        assert initial <= ours.wait(failures) <= max(maximum, 2 * initial)


@pytest.mark.parametrize(("low", "high"), [(1.0, 60.0), (0.1, 0.5), (0.2, 1.0)])
def test_mqtt_full_jitter_matches_tenacity_random_exponential(low: float, high: float) -> None:
    policy = ReconnectPolicy(backoff_min_s=low, backoff_max_s=high)
    reference = wait_random_exponential(multiplier=low, max=high)
    for failures in (0, 1, 2, 3, 7, 30, 5000):
        random.seed(failures)
        expected = reference(_attempt(max(1, failures)))
        random.seed(failures)
        assert policy.full_jitter(failures) == pytest.approx(expected, abs=1e-12)
    draws = [policy.full_jitter(1) for _ in range(500)]
    assert min(draws) >= 0.0 and max(draws) <= low
    assert max(policy.full_jitter(50) for _ in range(500)) <= high


@pytest.mark.parametrize("poll", [0.05, 0.25, 1.0])
def test_pcsc_poll_backoff_matches_its_former_formula(poll: float) -> None:
    ours = Backoff(first=2 * poll, cap=min(2.0, 32 * poll), jitter=Jitter.SPREAD)
    for failures in range(1, 12):
        random.seed(failures)
        expected = min(poll * 2 ** min(failures, 5), 2.0) * random.uniform(0.8, 1.2)
        random.seed(failures)
        assert ours.wait(failures) == pytest.approx(expected, abs=1e-12)


def test_capped_doubles_from_the_first_wait_and_stops_at_the_cap() -> None:
    backoff = Backoff(first=0.25, cap=3.0)
    assert [backoff.capped(n) for n in range(0, 7)] == [0.25, 0.25, 0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff.capped(10**6) == 3.0, "a huge failure count does not overflow"
    assert all(0.0 <= backoff.wait(3) <= 1.0 for _ in range(300))


def test_negative_waits_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        Backoff(first=-1.0, cap=1.0)
    with pytest.raises(ValueError, match="negative"):
        Backoff(first=1.0, cap=-1.0)
