"""Key files on disk: creation, permissions, refusal to overwrite, rotation; the key ring."""

from __future__ import annotations

import json
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.errors import GatewayError
from gateway.uplink.envelope import GENESIS_PREV, KeyRetired, Sealer, open_envelope
from gateway.uplink.keys import (
    KeyExistsError,
    KeyFormatError,
    KeyMissingError,
    KeyPermissionError,
    KeyRing,
    NodeKey,
    b64url_encode,
    format_rfc3339,
    init_key,
    load_key,
    load_previous_key,
    parse_rfc3339,
    previous_key_path,
    rotate_key,
)

from .conftest import NODE, T0


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_creates_0600_key_in_a_new_0700_directory(tmp_path: Path) -> None:
    path = tmp_path / "state" / "keys" / "node.ed25519"
    key = init_key(path, NODE)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert key.kid.startswith(f"{NODE}:")
    assert [p.name for p in path.parent.iterdir()] == ["node.ed25519"]  # no temp file left


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "node.ed25519"
    first = init_key(path, NODE)
    before = path.read_bytes()
    with pytest.raises(KeyExistsError) as info:
        init_key(path, NODE)
    assert str(path) in str(info.value)
    assert "rotate" in str(info.value)
    assert isinstance(info.value, GatewayError)
    assert path.read_bytes() == before
    assert load_key(path, NODE).kid == first.kid


def test_load_returns_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "node.ed25519"
    created = init_key(path, NODE)
    loaded = load_key(path, NODE)
    assert loaded.kid == created.kid
    assert loaded.public_jwk == created.public_jwk


def test_load_refuses_a_world_readable_key_and_says_how_to_fix(tmp_path: Path) -> None:
    path = tmp_path / "node.ed25519"
    init_key(path, NODE)
    path.chmod(0o644)
    with pytest.raises(KeyPermissionError) as info:
        load_key(path, NODE)
    message = str(info.value)
    assert str(path) in message
    assert f"chmod 600 {path}" in message
    assert info.value.path == path


def test_load_refuses_group_writable_key(tmp_path: Path) -> None:
    path = tmp_path / "node.ed25519"
    init_key(path, NODE)
    path.chmod(0o620)
    with pytest.raises(KeyPermissionError):
        load_key(path, NODE)


def test_load_missing_key(tmp_path: Path) -> None:
    with pytest.raises(KeyMissingError) as info:
        load_key(tmp_path / "absent.ed25519", NODE)
    assert "keys init" in str(info.value)


def test_load_garbage_key(tmp_path: Path) -> None:
    path = tmp_path / "node.ed25519"
    path.write_bytes(b"not a key\n")
    path.chmod(0o600)
    with pytest.raises(KeyFormatError):
        load_key(path, NODE)


def test_public_jwk_form(node_key: NodeKey) -> None:
    jwk = node_key.public_jwk
    assert set(jwk) == {"kty", "crv", "x", "kid"}
    assert (jwk["kty"], jwk["crv"]) == ("OKP", "Ed25519")
    assert jwk["kid"] == f"{NODE}:{node_key.thumbprint}"
    assert "private" not in repr(node_key) and "Ed25519PrivateKey" not in repr(node_key)


def test_rotation_keeps_old_key_valid_for_the_overlap(tmp_path: Path) -> None:
    path = tmp_path / "node.ed25519"
    old = init_key(path, NODE)
    rotation = rotate_key(path, NODE, overlap_s=3600, now=T0)
    assert rotation.old.kid == old.kid
    assert rotation.new.kid != old.kid
    assert rotation.old_not_after == T0 + timedelta(hours=1)
    assert load_key(path, NODE).kid == rotation.new.kid
    assert _mode(path) == 0o600
    assert _mode(previous_key_path(path)) == 0o600

    retired = load_previous_key(path, NODE)
    assert retired is not None
    assert retired.key.kid == old.kid
    assert retired.not_after == T0 + timedelta(hours=1)

    body = rotation.announcement_body()
    assert body == {
        "new_jwk": rotation.new.public_jwk,
        "old_kid": old.kid,
        "old_not_after": format_rfc3339(T0 + timedelta(hours=1)),
    }

    ring = KeyRing.from_jwks([old.public_jwk, rotation.new.public_jwk])
    ring.retire(old.kid, rotation.old_not_after)
    inside = Sealer(rotation.old, NODE).seal(
        stream="tx",
        seq=1,
        prev=GENESIS_PREV,
        type="t",
        body={},
        ts=format_rfc3339(T0 + timedelta(minutes=59)),
    )
    after = Sealer(rotation.old, NODE).seal(
        stream="tx",
        seq=2,
        prev=GENESIS_PREV,
        type="t",
        body={},
        ts=format_rfc3339(T0 + timedelta(minutes=61)),
    )
    by_new = Sealer(rotation.new, NODE).seal(
        stream="tx",
        seq=3,
        prev=GENESIS_PREV,
        type="t",
        body={},
        ts=format_rfc3339(T0 + timedelta(minutes=61)),
    )
    assert open_envelope(inside, ring).kid == old.kid
    assert open_envelope(by_new, ring).kid == rotation.new.kid
    with pytest.raises(KeyRetired):
        open_envelope(after, ring)
    # Checked against an explicit time instead of the envelope's own ts.
    with pytest.raises(KeyRetired):
        open_envelope(inside, ring, at=T0 + timedelta(hours=2))


def test_no_previous_key_before_any_rotation(tmp_path: Path) -> None:
    path = tmp_path / "node.ed25519"
    init_key(path, NODE)
    assert load_previous_key(path, NODE) is None


def test_rotation_needs_an_existing_key(tmp_path: Path) -> None:
    with pytest.raises(KeyMissingError):
        rotate_key(tmp_path / "node.ed25519", NODE, overlap_s=60)


def test_key_ring_from_jwk_and_jwk_set_files(tmp_path: Path, node_key: NodeKey) -> None:
    a, b = NodeKey.generate("cloud"), NodeKey.generate("cloud")
    single = tmp_path / "cloud.jwk"
    single.write_text(json.dumps(node_key.public_jwk))
    jwks = tmp_path / "cloud.jwks"
    jwks.write_text(json.dumps({"keys": [a.public_jwk, b.public_jwk]}))
    ring = KeyRing.from_files([single, jwks])
    assert ring.kids() == sorted([node_key.kid, a.kid, b.kid])
    assert len(ring) == 3
    assert a.kid in ring


def test_key_ring_without_kid_uses_the_thumbprint(node_key: NodeKey) -> None:
    jwk = {k: v for k, v in node_key.public_jwk.items() if k != "kid"}
    ring = KeyRing.from_jwks([jwk])
    assert ring.kids() == [node_key.thumbprint]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"crv": "X25519"}, "not an Ed25519 key"),
        ({"kty": "EC"}, "not an Ed25519 key"),
        ({"d": "AAAA"}, "private"),
        ({"x": "AAAA"}, "32"),
        ({"x": "not base64!"}, "base64url"),
        ({"use": "enc"}, "use"),
    ],
)
def test_key_ring_refuses_bad_jwks(node_key: NodeKey, change: dict[str, str], needle: str) -> None:
    jwk = dict(node_key.public_jwk, **change)
    with pytest.raises(KeyFormatError) as info:
        KeyRing.from_jwks([jwk])
    assert needle in str(info.value)


def test_key_ring_file_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyMissingError):
        KeyRing.from_files([tmp_path / "missing.jwk"])
    bad = tmp_path / "bad.jwk"
    bad.write_text("{nope")
    with pytest.raises(KeyFormatError) as info:
        KeyRing.from_files([bad])
    assert str(bad) in str(info.value)


def test_rfc3339_parsing() -> None:
    assert parse_rfc3339("2026-11-26T09:13:03.123Z") == T0
    assert parse_rfc3339("2026-11-26T17:13:03.123+08:00") == T0
    assert parse_rfc3339("2026-11-26t09:13:03.123456789z").microsecond == 123456
    assert format_rfc3339(T0) == "2026-11-26T09:13:03.123Z"
    for bad in ("2026-11-26 09:13:03Z", "2026-11-26T09:13:03", "yesterday", "2026-13-01T00:00:00Z"):
        with pytest.raises(ValueError):
            parse_rfc3339(bad)


def test_b64url_is_unpadded() -> None:
    assert b64url_encode(b"\xff\xfe") == "__4"
