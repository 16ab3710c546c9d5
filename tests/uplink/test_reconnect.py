"""The reconnection policy and the presence ordering rule, without a network."""

from __future__ import annotations

import json
import random

import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.uplink.presence import Presence, PresenceError, PresenceTracker
from gateway.uplink.reconnect import ReconnectPolicy, parse_server_reference

POLICY = ReconnectPolicy(
    backoff_min_s=1.0, backoff_max_s=60.0, first_connect_jitter_s=2.0, reconnect_spread_s=8.0
)


def test_probe_interval_grows_with_the_outage_not_the_failures() -> None:
    rng = random.Random(1)
    for down_for, low, high in ((0.0, 0.5, 1.5), (10.0, 0.5, 1.5), (60.0, 0.9, 2.7), (600.0, 9.0, 27.0)):
        waits = [POLICY.probe_interval(down_for, rng) for _ in range(300)]
        assert low <= min(waits) and max(waits) <= high, (down_for, min(waits), max(waits))
    assert all(POLICY.probe_interval(86_400.0, rng) <= 60.0 for _ in range(300)), "capped by backoff_max_s"


def test_spread_and_first_connect_stay_in_their_windows_and_under_the_cap() -> None:
    rng = random.Random(2)
    spreads = [POLICY.spread(rng) for _ in range(1000)]
    assert 0 <= min(spreads) < 0.5 and 7.5 < max(spreads) <= 8.0
    firsts = [POLICY.first_connect(rng) for _ in range(1000)]
    assert min(firsts) >= 0 and max(firsts) <= 2.0
    capped = ReconnectPolicy(
        backoff_min_s=0.1, backoff_max_s=1.0, first_connect_jitter_s=5, reconnect_spread_s=9
    )
    assert max(capped.spread(rng) for _ in range(300)) <= 1.0
    assert max(capped.first_connect(rng) for _ in range(300)) <= 1.0
    assert ReconnectPolicy().spread(rng) == 0.0


def test_a_busy_server_gets_the_longest_backoff_others_full_jitter() -> None:
    rng = random.Random(3)
    for code in (0x89, 0x97, 0x9F):
        waits = [POLICY.after_failed_connect(1, code, rng) for _ in range(200)]
        assert min(waits) >= 30.0 and max(waits) <= 60.0
    plain = [POLICY.after_failed_connect(1, 0x87, rng) for _ in range(200)]
    assert max(plain) <= 1.0


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        ReconnectPolicy(backoff_min_s=5, backoff_max_s=1)
    with pytest.raises(ValueError):
        ReconnectPolicy(reconnect_spread_s=-1)


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("broker2.example", ("broker2.example", 8883)),
        ("broker2.example:1884", ("broker2.example", 1884)),
        ("[::1]:1884 other:1", ("::1", 1884)),
        ("[::1]", ("::1", 8883)),
        ("10.0.0.2:8883", ("10.0.0.2", 8883)),
        ("", None),
        ("mqtt://h:1", None),
        ("h:99999", None),
        ("h:x", None),
        ("user@h", None),
        ("::1", None),
        ("[::1", None),
        ("[::1]x", None),
        (":1884", None),
    ],
)
def test_server_reference_forms(reference: str, expected: tuple[str, int] | None) -> None:
    assert parse_server_reference(reference, default_port=8883) == expected


def presence(state: str, epoch: int, conn: int, ts: str = "2026-11-30T05:00:00.000Z") -> bytes:
    doc = {"v": 1, "node": "n1", "state": state, "epoch": epoch, "conn": conn, "ts": ts, "version": "0.1.0"}
    return json.dumps(doc).encode()


def test_a_late_will_never_overrides_a_newer_online() -> None:
    tracker = PresenceTracker()
    assert tracker.apply(presence("online", 1000, 1))
    assert tracker.apply(presence("online", 1000, 2))  # reconnected elsewhere
    assert not tracker.apply(presence("offline", 1000, 1))  # the old connection's will, late
    assert tracker.state("n1") == "online"
    assert tracker.apply(presence("offline", 1000, 2))  # that connection's own end counts
    assert tracker.state("n1") == "offline"
    assert not tracker.apply(presence("online", 1000, 2))  # its online, delivered after its will
    assert tracker.apply(presence("online", 2000, 1))  # a restart: a new epoch beats any counter
    assert not tracker.apply(presence("offline", 1000, 9))
    assert tracker.state("n1") == "online" and tracker.ignored == 3
    assert tracker.state("other") is None


@pytest.mark.parametrize(
    "payload",
    [
        b"online",
        b"[]",
        b'{"v":2,"state":"online"}',
        presence("gone", 1, 1),
        presence("online", -1, 1),
        presence("online", 1, True),
        presence("online", 1, 1).replace(b'"node": "n1"', b'"node": 5'),
        b"\xff\xfe",
    ],
)
def test_bad_presence_payloads_are_refused_clearly(payload: bytes) -> None:
    with pytest.raises(PresenceError):
        Presence.parse(payload)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('keep_on_no_subscribers = ["tx", "bogus"]', "uplink.keep_on_no_subscribers"),
        ("session_expiry_s = -1", "uplink.session_expiry_s"),
        ("session_expiry_s = 4294967296", "uplink.session_expiry_s"),
        ("reconnect_spread_s = -0.5", "uplink.reconnect_spread_s"),
        ("first_connect_jitter_s = 7200", "uplink.first_connect_jitter_s"),
        ("backoff_min_s = 5.0\nbackoff_max_s = 1.0", "backoff_min_s must not exceed backoff_max_s"),
        ("no_subscribers_retry_max_s = 0.5", "no_subscribers_retry_max_s must be at least backoff_min_s"),
    ],
)
def test_fleet_settings_are_checked_at_start(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(f"[uplink]\n{text}\n", source="t.toml")


def test_fleet_settings_defaults() -> None:
    up = parse_config("", source="t.toml").uplink
    assert (up.first_connect_jitter_s, up.reconnect_spread_s, up.session_expiry_s) == (2.0, 8.0, 3600)
    assert up.keep_on_no_subscribers == ["tx", "audit"] and up.no_subscribers_retry_max_s == 30.0
    none_kept = parse_config("[uplink]\nkeep_on_no_subscribers = []\n", source="t.toml").uplink
    assert none_kept.keep_on_no_subscribers == []
