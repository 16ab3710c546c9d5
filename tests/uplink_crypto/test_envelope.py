"""Sealing and strict opening of envelopes."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from gateway.uplink.envelope import (
    GENESIS_PREV,
    BadSignature,
    EnvelopeError,
    KeyRetired,
    MalformedEnvelope,
    Sealer,
    UnknownKey,
    envelope_digest,
    open_envelope,
    peek_envelope,
    sign_flattened,
)
from gateway.uplink.keys import KeyRing, NodeKey, b64url_decode, b64url_encode

from .conftest import NODE, T0, StreamBuilder

TS = "2026-11-26T09:13:03.123Z"


def _payload(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "node": NODE,
        "stream": "tx",
        "seq": 1,
        "ts": TS,
        "prev": GENESIS_PREV,
        "type": "t",
        "body": {},
    }
    base.update(changes)
    return base


def _signed(key: NodeKey, payload: Any, header: dict[str, Any] | None = None) -> bytes:
    flattened = sign_flattened(
        header or {"alg": "Ed25519", "kid": key.kid},
        json.dumps(payload).encode(),
        key.private_key,
    )
    return json.dumps(flattened).encode()


def test_genesis_prev_is_32_zero_bytes() -> None:
    assert GENESIS_PREV == "A" * 43
    assert b64url_decode(GENESIS_PREV) == bytes(32)


def test_seal_then_open_round_trip(node_key: NodeKey, node_ring: KeyRing) -> None:
    raw = Sealer(node_key, NODE).seal(
        stream="alert", seq=42, prev=GENESIS_PREV, type="printer_paper_low", body={"level": 5}, ts=TS
    )
    env = open_envelope(raw, node_ring)
    assert (env.node, env.stream, env.seq, env.ts, env.prev, env.type) == (
        NODE,
        "alert",
        42,
        TS,
        GENESIS_PREV,
        "printer_paper_low",
    )
    assert env.body == {"level": 5}
    assert env.timestamp == T0
    assert env.raw == raw
    assert env.digest == envelope_digest(raw)
    assert env.header == {"alg": "Ed25519", "kid": node_key.kid, "typ": "edge-envelope+jws"}


def test_seal_is_deterministic_for_the_same_inputs(node_key: NodeKey) -> None:
    sealer = Sealer(node_key, NODE)
    args: dict[str, Any] = {"stream": "tx", "seq": 1, "prev": GENESIS_PREV, "type": "t", "ts": TS}
    assert sealer.seal(body={"a": 1, "b": 2}, **args) == sealer.seal(body={"b": 2, "a": 1}, **args)


def test_default_ts_is_rfc3339_utc_with_milliseconds(node_key: NodeKey, node_ring: KeyRing) -> None:
    raw = Sealer(node_key, NODE).seal(stream="tx", seq=1, prev=GENESIS_PREV, type="t", body={})
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", open_envelope(raw, node_ring).ts)


def test_extra_fields_for_commands(cloud_key: NodeKey, cloud_ring: KeyRing) -> None:
    raw = Sealer(cloud_key, NODE).seal(
        stream="down",
        seq=0,
        prev=GENESIS_PREV,
        type="ping",
        body={},
        extra={"id": "cmd-1", "exp": TS},
    )
    env = open_envelope(raw, cloud_ring)
    assert env.payload["id"] == "cmd-1"
    assert env.payload["exp"] == TS
    assert env.kid == "cloud-2026-1"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seq": -1},
        {"seq": True},
        {"seq": "1"},
        {"prev": ""},
        {"prev": "short"},
        {"stream": ""},
        {"type": ""},
        {"extra": {"node": "other"}},
        {"body": {"x": float("nan")}},
    ],
)
def test_seal_refuses_invalid_fields(node_key: NodeKey, kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {
        "stream": "tx",
        "seq": 1,
        "prev": GENESIS_PREV,
        "type": "t",
        "body": {},
        "ts": TS,
    }
    args.update(kwargs)
    with pytest.raises(ValueError):
        Sealer(node_key, NODE).seal(**args)


def test_repr_never_shows_the_body(node_key: NodeKey, node_ring: KeyRing) -> None:
    raw = Sealer(node_key, NODE).seal(
        stream="tx", seq=1, prev=GENESIS_PREV, type="t", body={"id_number": "110101199003072316"}
    )
    text = repr(open_envelope(raw, node_ring))
    assert "110101199003072316" not in text
    assert "seq=1" in text


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"", "envelope"),
        (b"not json", "envelope"),
        (b"[]", "envelope"),
        (b'{"payload":"e30","protected":"e30"}', "envelope"),
        (b'{"payload":"e30","protected":"e30","signature":"","header":{}}', "envelope"),
        (b'{"payload":"e30","protected":"e30","signature":"","payload":"e30"}', "envelope"),
        (b'{"payload":1,"protected":"e30","signature":""}', "payload"),
        (b'{"payload":"e30","protected":"e30=","signature":""}', "protected"),
        (b'{"payload":"e30","protected":"e30","signature":""}', "kid"),
        (b'{"payload":"e30","protected":"bm90IGpzb24","signature":""}', "protected"),
    ],
)
def test_malformed_structure(node_ring: KeyRing, data: bytes, field: str) -> None:
    with pytest.raises(MalformedEnvelope) as info:
        open_envelope(data, node_ring)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ([1, 2], "payload"),
        (_payload(seq=True), "seq"),
        (_payload(seq=-3), "seq"),
        (_payload(seq=1.5), "seq"),
        (_payload(ts="26/11/2026"), "ts"),
        (_payload(prev="abc"), "prev"),
        (_payload(body=[1]), "body"),
        (_payload(node=""), "node"),
        ({k: v for k, v in _payload().items() if k != "type"}, "payload"),
    ],
)
def test_malformed_payload_is_refused_after_signature_check(
    node_key: NodeKey, node_ring: KeyRing, payload: Any, field: str
) -> None:
    with pytest.raises(MalformedEnvelope) as info:
        open_envelope(_signed(node_key, payload), node_ring)
    assert info.value.field == field


def test_crit_header_is_refused(node_key: NodeKey, node_ring: KeyRing) -> None:
    header = {"alg": "Ed25519", "kid": node_key.kid, "crit": ["b64"], "b64": False}
    with pytest.raises(MalformedEnvelope) as info:
        open_envelope(_signed(node_key, _payload(), header), node_ring)
    assert info.value.field == "crit"


def test_unknown_kid(node_ring: KeyRing) -> None:
    stranger = NodeKey.generate("edge-999")
    with pytest.raises(UnknownKey) as info:
        open_envelope(_signed(stranger, _payload()), node_ring)
    assert info.value.kid == stranger.kid


def test_signature_by_another_key_under_our_kid(node_key: NodeKey, node_ring: KeyRing) -> None:
    impostor = NodeKey(NodeKey.generate(NODE).private_key, node_key.kid)
    with pytest.raises(BadSignature) as info:
        open_envelope(_signed(impostor, _payload()), node_ring)
    assert str(info.value) == f"bad signature for kid {node_key.kid}"


def test_changed_payload_byte(node_key: NodeKey, node_ring: KeyRing, make_stream: StreamBuilder) -> None:
    raw = make_stream(1)[0]
    outer = json.loads(raw)
    payload = b64url_decode(outer["payload"]).replace(b"certificate", b"certificatf")
    outer["payload"] = b64url_encode(payload)
    with pytest.raises(BadSignature):
        open_envelope(json.dumps(outer), node_ring)


def test_truncated_signature(node_ring: KeyRing, make_stream: StreamBuilder) -> None:
    outer = json.loads(make_stream(1)[0])
    outer["signature"] = outer["signature"][:40]
    with pytest.raises(BadSignature):
        open_envelope(json.dumps(outer), node_ring)


def test_retired_key_is_an_unknown_key(node_key: NodeKey, make_stream: StreamBuilder) -> None:
    ring = KeyRing()
    ring.add_jwk(node_key.public_jwk, not_after=T0)
    raw = make_stream(2)[1]  # ts = T0 + 1 s
    with pytest.raises(KeyRetired) as info:
        open_envelope(raw, ring)
    assert isinstance(info.value, UnknownKey)
    assert isinstance(info.value, EnvelopeError)


def test_oversized_envelope_refused(node_ring: KeyRing) -> None:
    with pytest.raises(MalformedEnvelope):
        open_envelope(b" " * (4 * 1024 * 1024 + 1), node_ring)


def test_peek_reads_without_a_key(make_stream: StreamBuilder, node_key: NodeKey) -> None:
    kid, payload = peek_envelope(make_stream(1)[0])
    assert kid == node_key.kid
    assert payload["seq"] == 1
