"""The live verifier judges each envelope as the batch verifier (`edge-gateway verify`) would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.devcloud.live import LiveVerifier
from gateway.uplink.envelope import GENESIS_PREV, Sealer, envelope_digest
from gateway.uplink.keys import KeyRing, NodeKey, format_rfc3339
from gateway.uplink.verifier import verify_lines

NODE = "edge-live"


def chain(sealer: Sealer, stream: str, count: int, start: int = 1) -> list[bytes]:
    out, prev = [], GENESIS_PREV
    for seq in range(start, start + count):
        raw = sealer.seal(stream=stream, seq=seq, prev=prev, type="t", body={"seq": seq})
        out.append(raw)
        prev = envelope_digest(raw)
    return out


def kinds(verifier: LiveVerifier, raw: bytes, topic: str | None = None) -> list[str]:
    return [p.kind for p in verifier.check(raw, topic=topic).problems]


def test_a_clean_stream_verifies_and_a_resend_is_a_duplicate_not_a_problem() -> None:
    key = NodeKey.generate(NODE)
    live = LiveVerifier(KeyRing.from_jwks([key.public_jwk]))
    envelopes = chain(Sealer(key, NODE), "event", 4)
    for raw in envelopes:
        verdict = live.check(raw, topic=f"edge/{NODE}/up/event")
        assert verdict.verified and not verdict.duplicate
    again = live.check(envelopes[2])
    assert again.duplicate and again.verified
    assert (live.valid, live.invalid, live.duplicates, live.problems) == (5, 0, 1, 0)
    assert verify_lines([*envelopes, envelopes[2]], KeyRing.from_jwks([key.public_jwk])).ok


def test_gap_chain_conflict_and_reorder_are_the_reference_verifiers_kinds() -> None:
    key = NodeKey.generate(NODE)
    ring = KeyRing.from_jwks([key.public_jwk])
    sealer = Sealer(key, NODE)
    envelopes = chain(sealer, "tx", 6)
    live = LiveVerifier(ring)
    assert kinds(live, envelopes[0]) == []
    assert kinds(live, envelopes[1]) == []
    # seq 3 lost: seq 4 shows the gap at once.
    assert kinds(live, envelopes[3]) == ["gap"]
    # seq 3 arrives late: out of order, but its chain links on both sides hold.
    assert kinds(live, envelopes[2]) == ["reorder"]
    # A seq 5 whose prev is not seq 4's digest: the chain is broken.
    bad = sealer.seal(stream="tx", seq=5, prev=GENESIS_PREV, type="t", body={"seq": 5})
    assert kinds(live, bad) == ["chain_broken"]
    # The genuine seq 5 after it: same seq, other bytes.
    assert kinds(live, envelopes[4]) == ["conflict"]
    # The batch verifier finds the same kinds in the same lines.
    batch = verify_lines([envelopes[0], envelopes[1], envelopes[3], envelopes[2], bad, envelopes[4]], ring)
    assert {p.kind for p in batch.problems} == {"reorder", "chain_broken", "conflict"}


def test_forgeries_are_refused_with_their_kind() -> None:
    key = NodeKey.generate(NODE)
    live = LiveVerifier(KeyRing.from_jwks([key.public_jwk]))
    stranger = Sealer(NodeKey.generate(NODE), NODE)
    raw = stranger.seal(stream="tx", seq=1, prev=GENESIS_PREV, type="transaction", body={})
    assert kinds(live, raw) == ["unknown_key"]
    assert live.peek_type(raw) == "transaction"
    # A node's genuine key signing for another node's id.
    other = Sealer(key, "edge-other").seal(stream="tx", seq=1, prev=GENESIS_PREV, type="t", body={})
    assert kinds(live, other) == ["node_mismatch"]
    assert kinds(live, b"not json at all") == ["malformed"]
    genuine = Sealer(key, NODE).seal(stream="tx", seq=1, prev=GENESIS_PREV, type="t", body={})
    assert kinds(live, genuine, topic="edge/edge-other/up/tx") == ["topic_mismatch"]
    assert live.invalid == 3


def test_a_rotation_announcement_teaches_the_new_key() -> None:
    old = NodeKey.generate(NODE)
    new = NodeKey.generate(NODE)
    live = LiveVerifier(KeyRing.from_jwks([old.public_jwk]))
    signed_by_new = Sealer(new, NODE).seal(stream="event", seq=1, prev=GENESIS_PREV, type="t", body={})
    assert kinds(live, signed_by_new) == ["unknown_key"]
    body = {
        "new_jwk": new.public_jwk,
        "old_kid": old.kid,
        "old_not_after": format_rfc3339(datetime.now(UTC) + timedelta(hours=1)),
    }
    announcement = Sealer(old, NODE).seal(
        stream="audit", seq=1, prev=GENESIS_PREV, type="key_rotated", body=body
    )
    verdict = live.check(announcement)
    assert verdict.verified and verdict.learned_kid == new.kid
    assert kinds(live, signed_by_new) == []


async def test_the_cloud_never_raises_into_its_transport() -> None:
    """A failure inside the dev cloud (here: its console) must not cost the node its link."""
    from gateway.devcloud.cloud import DevCloud
    from gateway.devcloud.feed import Feed

    def broken_console(_line: str) -> None:
        raise OSError("console gone")

    key = NodeKey.generate(NODE)
    cloud = DevCloud(NodeKey.generate("devcloud"), KeyRing.from_jwks([key.public_jwk]), Feed(broken_console))
    raw = Sealer(key, NODE).seal(stream="event", seq=1, prev=GENESIS_PREV, type="t", body={})
    cloud.on_message(f"edge/{NODE}/up/event", raw)
    cloud.on_message(f"edge/{NODE}/status", b"online")
    assert cloud.verifier.valid == 1
