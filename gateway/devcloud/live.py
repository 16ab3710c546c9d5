"""Envelope-by-envelope verification as they arrive: the reference verifier's checks, kept live.

`gateway.uplink.verifier.verify_lines` judges a finished batch; a cloud judges each message as it
comes. The checks and their `kind` names are the same: signature (bad_signature, unknown_key,
key_retired, wrong_algorithm, malformed), node_mismatch, duplicates (same bytes again: not a
problem, delivery is at-least-once), conflict, reorder, gap and chain_broken. One more is only
possible live: `topic_mismatch`, an envelope published on another node's or stream's topic.
The first envelope seen of a stream is its baseline: what came before the cloud started is not a gap.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from gateway.uplink.envelope import Envelope, EnvelopeError, open_envelope, peek_envelope
from gateway.uplink.keys import KeyRing
from gateway.uplink.verifier import ROTATION_TYPE, Problem, kid_node, learn_rotation, problem_kind

# Digests remembered per stream for duplicate, conflict and chain checks (older ones are forgotten).
REMEMBER = 4096


@dataclass
class Verdict:
    """What the cloud concluded about one received message."""

    envelope: Envelope | None
    problems: list[Problem] = field(default_factory=list)
    duplicate: bool = False
    learned_kid: str | None = None

    @property
    def verified(self) -> bool:
        """Signature good and nothing wrong with its place in the stream."""
        return self.envelope is not None and not self.problems


@dataclass
class _Stream:
    digests: collections.OrderedDict[int, tuple[str, str]] = field(default_factory=collections.OrderedDict)
    max_seq: int | None = None


def topic_parts(topic: str) -> tuple[str, str] | None:
    """(node, stream) of `edge/{node}/up/{stream}`, or None for any other topic."""
    parts = topic.split("/")
    if len(parts) == 4 and parts[0] == "edge" and parts[2] == "up" and parts[1] and parts[3]:
        return parts[1], parts[3]
    return None


class LiveVerifier:
    """Verifies each uplink against the trusted node keys and its stream's history so far."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self._streams: dict[tuple[str, str], _Stream] = {}
        self.valid = 0
        self.invalid = 0
        self.duplicates = 0
        self.problems = 0

    def check(self, raw: bytes, *, topic: str | None = None) -> Verdict:
        """Verify one envelope; its problems name the same kinds as `edge-gateway verify`."""
        try:
            env = open_envelope(raw, self.ring)
        except EnvelopeError as err:
            self.invalid += 1
            self.problems += 1
            return Verdict(None, [Problem(problem_kind(err), str(err))])
        owner = kid_node(env.kid)
        if owner is not None and owner != env.node:
            self.invalid += 1
            self.problems += 1
            message = f"envelope claims node {env.node!r} but is signed by {env.kid}"
            return Verdict(
                None, [Problem("node_mismatch", message, node=env.node, stream=env.stream, seq=env.seq)]
            )
        self.valid += 1
        verdict = Verdict(env)
        if topic is not None and topic_parts(topic) != (env.node, env.stream):
            verdict.problems.append(
                Problem(
                    "topic_mismatch",
                    f"{env.node}/{env.stream} envelope published on {topic}",
                    node=env.node,
                    stream=env.stream,
                    seq=env.seq,
                )
            )
        self._track(env, verdict)
        if env.type == ROTATION_TYPE and not verdict.duplicate:
            self._learn(env, verdict)
        self.problems += len(verdict.problems)
        return verdict

    def _learn(self, env: Envelope, verdict: Verdict) -> None:
        before = set(self.ring.kids())
        reason = learn_rotation(env, self.ring)
        if reason is not None:
            verdict.problems.append(
                Problem("bad_announcement", reason, node=env.node, stream=env.stream, seq=env.seq)
            )
            return
        added = set(self.ring.kids()) - before
        verdict.learned_kid = added.pop() if added else None

    def _track(self, env: Envelope, verdict: Verdict) -> None:
        """Duplicates, conflicts, order, gaps and the hash chain of the envelope's stream."""
        state = self._streams.setdefault((env.node, env.stream), _Stream())
        label = f"stream {env.node}/{env.stream}"
        seq, digest = env.seq, env.digest

        def problem(kind: str, text: str) -> None:
            verdict.problems.append(
                Problem(kind, f"{label}: {text}", node=env.node, stream=env.stream, seq=seq)
            )

        seen = state.digests.get(seq)
        if seen is not None:
            if seen[0] == digest:
                verdict.duplicate = True
                self.duplicates += 1
            else:
                problem("conflict", f"seq {seq} seen twice with different content")
            return
        if state.max_seq is not None and seq < state.max_seq:
            problem("reorder", f"seq {seq} arrived after seq {state.max_seq}, out of order")
        elif state.max_seq is not None and seq > state.max_seq + 1:
            low, high = state.max_seq, seq
            what = f"seq {low + 1}" if high - low == 2 else f"seqs {low + 1}-{high - 1}"
            problem("gap", f"{what} missing between {low} and {high}")
        before = state.digests.get(seq - 1)
        if before is not None and env.prev != before[0]:
            problem("chain_broken", f"prev of seq {seq} does not match seq {seq - 1} (chain broken)")
        after = state.digests.get(seq + 1)
        if after is not None and after[1] != digest:
            problem("chain_broken", f"prev of seq {seq + 1} does not match seq {seq}")
        state.digests[seq] = (digest, env.prev)
        while len(state.digests) > REMEMBER:
            state.digests.popitem(last=False)
        if state.max_seq is None or seq > state.max_seq:
            state.max_seq = seq

    def peek_type(self, raw: bytes) -> str | None:
        """The claimed type of a message that did not verify (for the feed only, never trusted)."""
        try:
            return str(peek_envelope(raw)[1]["type"])
        except EnvelopeError:
            return None
