"""RFC 8037 test vectors and interoperability with joserfc, an independent JOSE implementation."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import cast

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jws
from joserfc.errors import BadSignatureError
from joserfc.jwk import OKPKey
from joserfc.jws import FlattenedJSONSerialization, HeaderDict

from gateway.uplink.envelope import (
    GENESIS_PREV,
    TYP,
    Sealer,
    WrongAlgorithm,
    envelope_digest,
    open_envelope,
    sign_flattened,
    to_compact,
    verify_signature,
)
from gateway.uplink.keys import KeyRing, NodeKey, b64url_decode, b64url_encode, jwk_thumbprint

from .conftest import NODE

# RFC 8037 Appendix A.1 (private key) / A.2 (its public JWK) / A.3 (thumbprint) / A.4 (signature).
A1_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
A2_JWK = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
A3_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
A4_PAYLOAD = b"Example of Ed25519 signing"
A4_COMPACT = (
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)


def _a1_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(b64url_decode(A1_D))


def _okp(jwk: Mapping[str, str]) -> OKPKey:
    return OKPKey.import_key(dict[str, str | list[str]](jwk))


def _flattened(raw: bytes) -> FlattenedJSONSerialization:
    return cast(FlattenedJSONSerialization, json.loads(raw))


def _joserfc_private(key: NodeKey) -> OKPKey:
    return _okp(dict(key.public_jwk, d=b64url_encode(key.private_key.private_bytes_raw())))


def test_rfc8037_a2_public_key_matches_a1_private_key() -> None:
    public = _a1_key().public_key().public_bytes_raw()
    assert b64url_encode(public) == A2_JWK["x"]


def test_rfc8037_a3_thumbprint_of_a2_key() -> None:
    assert jwk_thumbprint(A2_JWK) == A3_THUMBPRINT


def test_thumbprint_matches_joserfc_for_a_fresh_key(node_key: NodeKey) -> None:
    theirs = _okp(node_key.public_jwk).thumbprint()
    assert node_key.thumbprint == theirs
    assert node_key.kid == f"{NODE}:{theirs}"


def test_rfc8037_a4_signature_reproduced_byte_for_byte() -> None:
    flattened = sign_flattened({"alg": "EdDSA"}, A4_PAYLOAD, _a1_key())
    assert to_compact(flattened) == A4_COMPACT


def test_rfc8037_a4_signature_verifies_and_tampering_does_not() -> None:
    protected, payload, signature = A4_COMPACT.split(".")
    public = _a1_key().public_key()
    assert verify_signature(protected, payload, signature, public)
    other_payload = b64url_encode(b"Example of Ed25519 signinG")
    assert not verify_signature(protected, other_payload, signature, public)
    assert not verify_signature(protected, payload, signature[:-4], public)


def test_gateway_envelope_verifies_with_joserfc(node_key: NodeKey) -> None:
    raw = Sealer(node_key, NODE).seal(
        stream="tx", seq=1, prev=GENESIS_PREV, type="service_request", body={"name": "Zhāng"}
    )
    # joserfc treats the RFC 9864 name "Ed25519" as non-default, so it must be allowed explicitly.
    result = jws.deserialize_json(_flattened(raw), _okp(node_key.public_jwk), algorithms=["Ed25519"])
    assert result.headers() == {"alg": "Ed25519", "kid": node_key.kid, "typ": TYP}
    payload = json.loads(result.payload)
    assert payload["node"] == NODE
    assert payload["seq"] == 1
    assert payload["prev"] == GENESIS_PREV
    assert payload["body"] == {"name": "Zhāng"}


def test_joserfc_rejects_gateway_envelope_under_another_key(node_key: NodeKey) -> None:
    raw = Sealer(node_key, NODE).seal(stream="tx", seq=1, prev=GENESIS_PREV, type="t", body={})
    stranger = _okp(NodeKey.generate(NODE).public_jwk)
    with pytest.raises(BadSignatureError):
        jws.deserialize_json(_flattened(raw), stranger, algorithms=["Ed25519"])


def test_open_envelope_accepts_what_joserfc_signs(node_key: NodeKey, node_ring: KeyRing) -> None:
    payload = {
        "node": NODE,
        "stream": "audit",
        "seq": 3,
        "ts": "2026-11-26T09:13:03Z",
        "prev": GENESIS_PREV,
        "type": "session_end",
        "body": {"reason": "idle"},
    }
    member: HeaderDict = {"protected": {"alg": "Ed25519", "kid": node_key.kid, "typ": TYP}}
    signed = jws.serialize_json(
        member, json.dumps(payload), _joserfc_private(node_key), algorithms=["Ed25519"]
    )
    # joserfc's own member order and default json.dumps spacing: not our canonical form, still valid.
    env = open_envelope(json.dumps(signed, indent=2), node_ring)
    assert env.kid == node_key.kid
    assert (env.node, env.stream, env.seq, env.type) == (NODE, "audit", 3, "session_end")
    assert env.body == {"reason": "idle"}


def test_open_envelope_refuses_eddsa_even_with_a_valid_signature(
    node_key: NodeKey, node_ring: KeyRing
) -> None:
    payload = {
        "node": NODE,
        "stream": "tx",
        "seq": 1,
        "ts": "2026-11-26T09:13:03Z",
        "prev": GENESIS_PREV,
        "type": "t",
        "body": {},
    }
    flattened = sign_flattened(
        {"alg": "EdDSA", "kid": node_key.kid}, json.dumps(payload).encode(), node_key.private_key
    )
    with pytest.raises(WrongAlgorithm) as info:
        open_envelope(json.dumps(flattened), node_ring)
    assert info.value.alg == "EdDSA"


def test_stored_bytes_are_the_canonical_compact_sorted_json(node_key: NodeKey) -> None:
    raw = Sealer(node_key, NODE).seal(
        stream="tx", seq=9, prev=GENESIS_PREV, type="t", body={"b": 1, "a": "ü"}
    )
    canonical = json.dumps(json.loads(raw), separators=(",", ":"), sort_keys=True).encode()
    assert raw == canonical
    assert b"\n" not in raw and b" " not in raw
    assert list(json.loads(raw)) == ["payload", "protected", "signature"]
    assert envelope_digest(raw) != GENESIS_PREV
