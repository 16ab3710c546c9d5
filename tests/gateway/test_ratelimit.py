"""Rate-limited reporting: the first of each kind at once, then one count per interval; safe echoes."""

from __future__ import annotations

from typing import Any

from gateway.api.limits import api_limits
from gateway.api.listener import FD_RESERVE, connection_cap
from gateway.config import ApiConfig
from gateway.ratelimit import ECHO_MAX_CHARS, Tally, echo


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_first_of_each_kind_is_reported_then_one_count_per_interval() -> None:
    clock = Clock()
    reports: list[tuple[str, int, dict[str, Any], bool]] = []
    tally = Tally(lambda *args: reports.append(args), interval_s=60, clock=clock)
    assert tally.record("forged", topic="a") is True
    for _ in range(999):
        assert tally.record("forged", topic="b") is False
    assert tally.record("malformed") is True
    assert reports == [("forged", 1, {"topic": "a"}, True), ("malformed", 1, {}, True)]
    clock.now = 59.9
    tally.flush()
    assert len(reports) == 2, "nothing before the interval ends"
    clock.now = 60.0
    tally.flush()
    assert reports[2:] == [("forged", 999, {"topic": "b"}, False)]
    # The next event opens a new window and is reported at once again.
    assert tally.record("forged") is True
    assert tally.totals == {"forged": 1001, "malformed": 1}
    tally.flush(force=True)
    assert len(reports) == 4, "a window with nothing suppressed ends silently"


def test_a_late_event_closes_the_old_window_with_its_count() -> None:
    clock = Clock()
    reports: list[tuple[str, int, bool]] = []
    tally = Tally(
        lambda kind, count, _f, first: reports.append((kind, count, first)), interval_s=10, clock=clock
    )
    tally.record("x")
    tally.record("x")
    clock.now = 11
    tally.record("x")
    assert reports == [("x", 1, True), ("x", 1, False), ("x", 1, True)]


def test_kinds_are_bounded() -> None:
    reports: list[str] = []
    tally = Tally(lambda kind, *_: reports.append(kind), max_kinds=3)
    for index in range(100):
        tally.record(f"kind-{index}")
    assert set(tally.totals) == {"kind-0", "kind-1", "kind-2", "other"}
    assert tally.total == 100


def test_echo_keeps_short_text_and_cuts_long_text_with_length_and_hash() -> None:
    assert echo("edge/node/down/ping") == "edge/node/down/ping"
    huge = "k" * 2_900_000
    cut = echo(huge)
    assert len(cut) < ECHO_MAX_CHARS + 60
    assert cut.startswith("k" * ECHO_MAX_CHARS) and "[2900000 bytes sha256:" in cut
    assert echo(huge) == cut and echo(huge + "x") != cut, "the hash tells long values apart"
    assert echo(b"\xff\xfe\x00abc") == "\ufffd\ufffd?abc"
    assert "\n" not in echo("line\nbreak\x1b[31m")


def test_the_connection_cap_stays_below_the_file_limit() -> None:
    assert connection_cap(0, 1024) == 1024 - FD_RESERVE
    assert connection_cap(5000, 1024) == 1024 - FD_RESERVE
    assert connection_cap(100, 1024) == 100
    assert connection_cap(0, 100) == 16
    limits = api_limits(ApiConfig(max_connections=40, reserved_connections=32), file_limit=1024)
    assert (limits.max_connections, limits.reserved_connections) == (40, 20)
