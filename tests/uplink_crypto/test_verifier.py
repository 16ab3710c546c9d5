"""The reference verifier: signatures, gaps, duplicates, reorders, chain breaks, key rotation."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from gateway.uplink.envelope import GENESIS_PREV, Sealer, envelope_digest, sign_flattened
from gateway.uplink.keys import (
    KeyRing,
    NodeKey,
    b64url_decode,
    b64url_encode,
    format_rfc3339,
    init_key,
    rotate_key,
)
from gateway.uplink.verifier import VerifyReport, verify_lines

from .conftest import NODE, T0, StreamBuilder


def _messages(report: VerifyReport) -> list[str]:
    return [str(p) for p in report.problems]


def test_clean_streams_pass(node_ring: KeyRing, make_stream: StreamBuilder) -> None:
    tx, audit = make_stream(40), make_stream(25, stream="audit")
    lines = [line for pair in zip(tx, audit + [b""] * 15, strict=True) for line in pair]
    report = verify_lines(lines, node_ring)
    assert report.ok, report.format_report()
    assert (report.lines, report.valid, report.invalid) == (65, 65, 0)
    assert report.streams[(NODE, "tx")].envelopes == 40
    assert report.streams[(NODE, "tx")].last_seq == 40
    assert report.streams[(NODE, "audit")].envelopes == 25
    assert report.format_report().endswith("OK")
    json.dumps(report.as_dict())


def test_accepts_text_lines_with_newlines(node_ring: KeyRing, make_stream: StreamBuilder) -> None:
    text = "".join(raw.decode() + "\n" for raw in make_stream(5)) + "\n"
    assert verify_lines(text.splitlines(keepends=True), node_ring).ok


def test_changed_payload_byte(node_key: NodeKey, node_ring: KeyRing, make_stream: StreamBuilder) -> None:
    lines = make_stream(6)
    outer = json.loads(lines[2])
    outer["payload"] = b64url_encode(b64url_decode(outer["payload"]).replace(b'"n":2', b'"n":7'))
    lines[2] = json.dumps(outer, separators=(",", ":"), sort_keys=True).encode()
    report = verify_lines(lines, node_ring)
    assert not report.ok
    assert f"line 3: bad signature for kid {node_key.kid}" in _messages(report)
    assert report.invalid == 1


def test_changed_header(node_key: NodeKey, node_ring: KeyRing, make_stream: StreamBuilder) -> None:
    lines = make_stream(4)
    outer = json.loads(lines[1])
    header = json.loads(b64url_decode(outer["protected"]))
    header["typ"] = "JOSE"
    outer["protected"] = b64url_encode(json.dumps(header).encode())
    lines[1] = json.dumps(outer).encode()
    report = verify_lines(lines, node_ring)
    assert f"line 2: bad signature for kid {node_key.kid}" in _messages(report)


def test_signature_from_another_key(
    node_key: NodeKey, node_ring: KeyRing, make_stream: StreamBuilder
) -> None:
    lines = make_stream(4)
    outer = json.loads(lines[3])
    forged = sign_flattened(
        json.loads(b64url_decode(outer["protected"])),
        b64url_decode(outer["payload"]),
        NodeKey.generate(NODE).private_key,
    )
    lines[3] = json.dumps(forged).encode()
    report = verify_lines(lines, node_ring)
    assert _messages(report) == [f"line 4: bad signature for kid {node_key.kid}"]


def test_unknown_kid(node_ring: KeyRing, make_stream: StreamBuilder) -> None:
    stranger = NodeKey.generate("edge-002")
    report = verify_lines(make_stream(2) + make_stream(1, key=stranger), node_ring)
    assert _messages(report) == [f"line 3: unknown kid {stranger.kid}"]
    assert report.problems[0].kind == "unknown_key"


def test_dropped_message_is_a_gap(node_ring: KeyRing, make_stream: StreamBuilder) -> None:
    lines = make_stream(10)
    del lines[6]  # seq 7
    report = verify_lines(lines, node_ring)
    assert _messages(report) == ["line 7: stream tx: seq 7 missing between 6 and 8"]
    assert report.problems[0].kind == "gap"
    assert report.streams[(NODE, "tx")].missing == 1


def test_several_dropped_messages(node_ring: KeyRing, make_stream: StreamBuilder) -> None:
    lines = make_stream(10)
    del lines[3:6]  # seq 4, 5, 6
    report = verify_lines(lines, node_ring)
    assert _messages(report) == ["line 4: stream tx: seqs 4-6 missing between 3 and 7"]


def test_reordered_pair(node_ring: KeyRing, make_stream: StreamBuilder) -> None:
    lines = make_stream(8)
    lines[4], lines[5] = lines[5], lines[4]  # seq 6 arrives before seq 5
    report = verify_lines(lines, node_ring)
    assert _messages(report) == ["line 6: stream tx: seq 5 arrived after seq 6 (line 5), out of order"]
    assert report.problems[0].kind == "reorder"


def test_identical_duplicate_is_counted_not_failed(node_ring: KeyRing, make_stream: StreamBuilder) -> None:
    lines = make_stream(5)
    lines.insert(3, lines[1])
    report = verify_lines(lines, node_ring)
    assert report.ok, report.format_report()
    assert report.streams[(NODE, "tx")].duplicates == 1
    assert report.streams[(NODE, "tx")].envelopes == 5


def test_duplicate_with_different_bytes_is_a_conflict(
    node_key: NodeKey, node_ring: KeyRing, make_stream: StreamBuilder
) -> None:
    lines = make_stream(5)
    other = Sealer(node_key, NODE).seal(
        stream="tx",
        seq=3,
        prev=envelope_digest(lines[1]),
        type="service_request",
        body={"service": "something else"},
        ts=format_rfc3339(T0),
    )
    lines.append(other)
    report = verify_lines(lines, node_ring)
    assert _messages(report) == ["line 6: stream tx: seq 3 seen twice with different content (lines 3 and 6)"]
    assert report.problems[0].kind == "conflict"


def test_chain_break(node_key: NodeKey, node_ring: KeyRing, make_stream: StreamBuilder) -> None:
    lines = make_stream(11, stream="audit")
    # seq 12 signed correctly but chained to seq 10 instead of 11: a deleted-and-renumbered history.
    lines.append(
        Sealer(node_key, NODE).seal(
            stream="audit", seq=12, prev=envelope_digest(lines[9]), type="t", body={}, ts=format_rfc3339(T0)
        )
    )
    report = verify_lines(lines, node_ring)
    assert _messages(report) == ["line 12: stream audit: prev of seq 12 does not match seq 11 (chain broken)"]
    assert report.problems[0].kind == "chain_broken"
    assert "FAILED" in report.format_report()


def test_restarted_stream_with_genesis_prev_breaks_the_chain(
    node_ring: KeyRing, make_stream: StreamBuilder
) -> None:
    lines = make_stream(3) + make_stream(2, start=4)  # seq 4 claims to be a first message
    report = verify_lines(lines, node_ring)
    assert _messages(report) == ["line 4: stream tx: prev of seq 4 does not match seq 3 (chain broken)"]


def test_several_nodes_are_kept_apart(node_key: NodeKey, make_stream: StreamBuilder) -> None:
    other = NodeKey.generate("edge-002")
    ring = KeyRing.from_jwks([node_key.public_jwk, other.public_jwk])
    mine = make_stream(3)
    theirs = []
    prev = GENESIS_PREV
    for seq in (1, 3):
        raw = Sealer(other, "edge-002").seal(stream="tx", seq=seq, prev=prev, type="t", body={})
        theirs.append(raw)
        prev = envelope_digest(raw)
    report = verify_lines(mine + theirs, ring)
    assert _messages(report) == ["line 5: stream edge-002/tx: seq 2 missing between 1 and 3"]


def test_node_key_cannot_speak_for_another_node(node_key: NodeKey, node_ring: KeyRing) -> None:
    raw = Sealer(node_key, "edge-777").seal(stream="tx", seq=1, prev=GENESIS_PREV, type="t", body={})
    report = verify_lines([raw], node_ring)
    assert report.problems[0].kind == "node_mismatch"


def test_key_rotation_announcement_teaches_the_new_key(tmp_path: Path, make_stream: StreamBuilder) -> None:
    path = tmp_path / "node.ed25519"
    old = init_key(path, NODE)
    rotation = rotate_key(path, NODE, overlap_s=600, now=T0 + timedelta(seconds=30))
    ring = KeyRing.from_jwks([old.public_jwk])  # the cloud only knows the old key

    tx_old = make_stream(3, key=old)
    announce = Sealer(old, NODE).seal(
        stream="audit",
        seq=1,
        prev=GENESIS_PREV,
        type="key_rotated",
        body=rotation.announcement_body(),
        ts=format_rfc3339(T0 + timedelta(seconds=30)),
    )
    tx_new = make_stream(
        3, key=rotation.new, start=4, prev=envelope_digest(tx_old[-1]), t0=T0 + timedelta(seconds=40)
    )
    # New-key envelopes arrive before the announcement (another stream, delivered earlier).
    report = verify_lines(tx_old + tx_new + [announce], ring)
    assert report.ok, report.format_report()
    assert report.learned_kids == [rotation.new.kid]
    assert rotation.new.kid not in ring  # the caller's ring is left alone

    # After the overlap the old key no longer verifies.
    late = make_stream(1, key=old, start=7, prev=envelope_digest(tx_new[-1]), t0=T0 + timedelta(hours=1))
    report = verify_lines(tx_old + tx_new + [announce] + late, ring)
    assert [p.kind for p in report.problems] == ["key_retired"]


def test_announcement_for_a_key_of_another_node_is_refused(node_key: NodeKey, node_ring: KeyRing) -> None:
    foreign = NodeKey.generate("edge-002")
    body = {
        "new_jwk": foreign.public_jwk,
        "old_kid": node_key.kid,
        "old_not_after": format_rfc3339(T0 + timedelta(hours=1)),
    }
    announce = Sealer(node_key, NODE).seal(
        stream="audit", seq=1, prev=GENESIS_PREV, type="key_rotated", body=body, ts=format_rfc3339(T0)
    )
    by_foreign = Sealer(foreign, "edge-002").seal(stream="tx", seq=1, prev=GENESIS_PREV, type="t", body={})
    report = verify_lines([announce, by_foreign], node_ring)
    assert [p.kind for p in report.problems] == ["bad_announcement", "unknown_key"]
    assert report.learned_kids == []


def test_a_kid_that_is_not_a_node_kid_is_not_held_to_a_node(node_ring: KeyRing) -> None:
    ops = NodeKey(NodeKey.generate("x").private_key, "urn:ops:signer")
    ring = node_ring.copy()
    ring.add_jwk(ops.public_jwk)
    raw = Sealer(ops, NODE).seal(stream="event", seq=1, prev=GENESIS_PREV, type="t", body={})
    report = verify_lines([raw], ring)
    assert report.ok, report.format_report()
