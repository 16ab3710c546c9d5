"""What `config.set` and `outbox.requeue` accept, and the one-line reason each refusal gives."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.commands.config_set import REMOTE_CONFIG_KEYS, remote_config
from gateway.commands.requeue import requeue_target
from gateway.config import parse_config
from gateway.reload import LIVE_KEYS
from gateway.remote import CommandFailed

BASE = '[log]\nlevel = "info"\n[api]\nmax_sessions = 20\n'


def test_config_set_applies_live_keys_and_keeps_source() -> None:
    current = parse_config(BASE, source="/etc/edge-gateway/gateway.toml")
    effective, applied = remote_config(current, {"values": {"api.max_sessions": 150, "log.level": "debug"}})
    assert applied == ["api.max_sessions", "log.level"]
    assert (effective.api.max_sessions, effective.log.level) == (150, "debug")
    assert effective.source == current.source
    assert current.api.max_sessions == 20, "the running config is not changed in place"


def test_remote_keys_are_a_subset_of_the_live_keys() -> None:
    assert set(REMOTE_CONFIG_KEYS) <= set(LIVE_KEYS)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (None, "config.set needs"),
        ({}, "config.set needs"),
        ({"values": {}}, "config.set needs"),
        ({"values": ["api.max_sessions"]}, "config.set needs"),
        ({"values": {"node.id": "stolen", "api.max_sessions": 3}}, "not settable remotely: node.id"),
        ({"values": {"api.allowed_uids": [0]}}, "not settable remotely: api.allowed_uids"),
        ({"values": {"api.max_sessions": "many"}}, "invalid value"),
        ({"values": {"log.level": "shout"}}, "invalid value"),
    ],
)
def test_config_set_refuses_and_changes_nothing(body: Any, reason: str) -> None:
    current = parse_config(BASE, source="cfg")
    with pytest.raises(CommandFailed, match=reason):
        remote_config(current, body)
    assert current.api.max_sessions == 20 and current.log.level == "info"


def test_requeue_target_reads_stream_and_seqs() -> None:
    assert requeue_target(None) == (None, None)
    assert requeue_target({}) == (None, None)
    assert requeue_target({"stream": "audit"}) == ("audit", None)
    assert requeue_target({"stream": "audit", "seqs": [4, 5]}) == ("audit", [4, 5])


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "outbox.requeue takes"),
        ({"stream": "audit", "extra": 1}, "outbox.requeue takes"),
        ({"stream": "nope"}, "unknown stream 'nope'"),
        ({"stream": "audit", "seqs": []}, "seqs must be"),
        ({"stream": "audit", "seqs": [0]}, "seqs must be"),
        ({"stream": "audit", "seqs": [True]}, "seqs must be"),
        ({"stream": "audit", "seqs": "1"}, "seqs must be"),
        ({"stream": "audit", "seqs": list(range(1, 10_002))}, "seqs must be"),
    ],
)
def test_requeue_target_refuses_bad_bodies(body: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        requeue_target(body)
