"""The cloud-side reference verifier: signatures, sequence gaps, duplicates and the hash chain.

Several consumers may share one stream (an MQTT shared subscription spreads a node's messages
over them): their logs are checked together as one merged input, where each (node, stream) is
ordered by seq and deduplicated before gaps and the chain are judged, and the arrival order
across logs means nothing, so it is not reported.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.uplink.envelope import (
    BadSignature,
    Envelope,
    EnvelopeError,
    KeyRetired,
    MalformedEnvelope,
    UnknownKey,
    WrongAlgorithm,
    open_envelope,
    peek_envelope,
)
from gateway.uplink.keys import (
    KeyFormatError,
    KeyRing,
    jwk_thumbprint,
    parse_rfc3339,
    public_key_from_jwk,
)

ROTATION_TYPE = "key_rotated"
_THUMBPRINT_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True)
class Problem:
    """One finding; `kind` is stable (bad_signature, gap, chain_broken, ...), `message` is for humans."""

    kind: str
    message: str
    line: int | None = None
    node: str | None = None
    stream: str | None = None
    seq: int | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line is not None else self.message

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "kind": self.kind,
            "message": str(self),
            "line": self.line,
            "node": self.node,
            "stream": self.stream,
            "seq": self.seq,
        }


@dataclass
class StreamStats:
    """What one (node, stream) contained."""

    node: str
    stream: str
    envelopes: int = 0
    duplicates: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    missing: int = 0
    problems: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "node": self.node,
            "stream": self.stream,
            "envelopes": self.envelopes,
            "duplicates": self.duplicates,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "missing": self.missing,
            "problems": self.problems,
        }


@dataclass
class VerifyReport:
    """The verdict over a batch of envelopes."""

    lines: int = 0
    valid: int = 0
    invalid: int = 0
    streams: dict[tuple[str, str], StreamStats] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    learned_kids: list[str] = field(default_factory=list)
    # Arrival order was not checked: the input is several consumers' logs merged.
    merged: bool = False

    @property
    def ok(self) -> bool:
        """True when every envelope verified and no stream has a gap, conflict, reorder or break."""
        return not self.problems

    def format_report(self) -> str:
        """A human summary, one finding per line."""
        out = [f"{self.lines} envelope(s): {self.valid} valid, {self.invalid} invalid"]
        if self.merged:
            out.append("  merged input: ordered by seq per stream, arrival order not checked")
        for stats in sorted(self.streams.values(), key=lambda s: (s.node, s.stream)):
            span = f"seq {stats.first_seq}..{stats.last_seq}" if stats.envelopes else "empty"
            out.append(
                f"  {stats.node} {stats.stream}: {stats.envelopes} envelope(s), {span}, "
                f"{stats.duplicates} duplicate(s), {stats.missing} missing"
            )
        for kid in self.learned_kids:
            out.append(f"  learned key {kid} from a key_rotated announcement")
        if self.problems:
            out.append(f"{len(self.problems)} problem(s):")
            out.extend(f"  {problem}" for problem in self.problems)
        out.append("OK" if self.ok else "FAILED")
        return "\n".join(out)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for `verify --json`."""
        return {
            "ok": self.ok,
            "merged": self.merged,
            "lines": self.lines,
            "valid": self.valid,
            "invalid": self.invalid,
            "streams": [s.as_dict() for s in sorted(self.streams.values(), key=lambda s: (s.node, s.stream))],
            "learned_kids": list(self.learned_kids),
            "problems": [p.as_dict() for p in self.problems],
        }


@dataclass
class _Seen:
    digest: str
    prev: str
    line: int


@dataclass
class _StreamState:
    seqs: dict[int, _Seen] = field(default_factory=dict)
    max_seq: int | None = None
    # (kind, line, seq, message template with {label})
    events: list[tuple[str, int, int, str]] = field(default_factory=list)
    duplicates: int = 0


def problem_kind(err: EnvelopeError) -> str:
    if isinstance(err, KeyRetired):
        return "key_retired"
    if isinstance(err, UnknownKey):
        return "unknown_key"
    if isinstance(err, BadSignature):
        return "bad_signature"
    if isinstance(err, WrongAlgorithm):
        return "wrong_algorithm"
    if isinstance(err, MalformedEnvelope):
        return "malformed"
    return "invalid"


def kid_node(kid: str) -> str | None:
    """The node part of a node kid `<node>:<thumbprint>`; None for other kid forms (cloud keys)."""
    node, sep, thumbprint = kid.rpartition(":")
    return node if sep and _THUMBPRINT_RE.match(thumbprint) else None


def learn_rotation(env: Envelope, ring: KeyRing) -> str | None:
    """Trust the new key a valid announcement carries; return why it is refused, or None."""
    body = env.body
    jwk, old_kid, not_after_text = body.get("new_jwk"), body.get("old_kid"), body.get("old_not_after")
    if not isinstance(jwk, dict) or not isinstance(old_kid, str) or not isinstance(not_after_text, str):
        return "key_rotated body needs new_jwk (object), old_kid and old_not_after (strings)"
    if old_kid != env.kid:
        return f"key_rotated names old_kid {old_kid} but is signed by {env.kid}"
    try:
        public_key_from_jwk(jwk)
        not_after = parse_rfc3339(not_after_text)
    except (KeyFormatError, ValueError) as err:
        return f"key_rotated carries an invalid key or time: {err}"
    new_kid = jwk.get("kid")
    expected = f"{env.node}:{jwk_thumbprint(jwk)}"
    if new_kid != expected:
        return f"key_rotated new kid {new_kid!r} is not {expected!r} (node id + thumbprint)"
    if expected not in ring:
        ring.add_jwk(jwk)
    current = ring.get(env.kid)
    if current is not None and (current.not_after is None or not_after < current.not_after):
        ring.retire(env.kid, not_after)
    return None


def _normalise(line: bytes | str) -> bytes:
    data = line.encode("utf-8") if isinstance(line, str) else bytes(line)
    return data.strip()


def verify_lines(lines: Iterable[bytes | str], keys: KeyRing, *, merged: bool = False) -> VerifyReport:
    """Verify envelopes, one per line, and check each (node, stream) for gaps, duplicates and breaks.

    `merged`: the lines come from several consumers of one stream, so arrival order is not a
    finding (gaps, conflicts and the chain are judged by seq either way)."""
    entries = [(n, raw) for n, line in enumerate(lines, start=1) if (raw := _normalise(line))]
    report = VerifyReport(lines=len(entries), merged=merged)
    ring = keys.copy()
    announcement_problems = _learn_rotations(entries, ring, report)

    states: dict[tuple[str, str], _StreamState] = {}
    for lineno, raw in entries:
        try:
            env = open_envelope(raw, ring)
        except EnvelopeError as err:
            report.invalid += 1
            report.problems.append(Problem(problem_kind(err), str(err), line=lineno))
            continue
        owner = kid_node(env.kid)
        if owner is not None and owner != env.node:
            report.invalid += 1
            report.problems.append(
                Problem(
                    "node_mismatch",
                    f"envelope claims node {env.node!r} but is signed by {env.kid}",
                    line=lineno,
                    node=env.node,
                    stream=env.stream,
                    seq=env.seq,
                )
            )
            continue
        report.valid += 1
        if lineno in announcement_problems:
            report.problems.append(
                Problem(
                    "bad_announcement",
                    announcement_problems[lineno],
                    line=lineno,
                    node=env.node,
                    stream=env.stream,
                    seq=env.seq,
                )
            )
        _track(states.setdefault((env.node, env.stream), _StreamState()), env, lineno, check_order=not merged)

    _finish(states, report)
    report.problems.sort(key=lambda p: p.line if p.line is not None else 0)
    return report


def _learn_rotations(entries: list[tuple[int, bytes]], ring: KeyRing, report: VerifyReport) -> dict[int, str]:
    """Learn keys from announcements first, so envelopes signed by a new key verify in any order."""
    pending: list[tuple[int, bytes]] = []
    for lineno, raw in entries:
        try:
            _, payload = peek_envelope(raw)
        except EnvelopeError:
            continue
        if payload["type"] == ROTATION_TYPE:
            pending.append((lineno, raw))
    refused: dict[int, str] = {}
    progress = True
    # A chain of rotations may appear in any order: repeat until no announcement adds a key.
    while pending and progress:
        progress = False
        waiting: list[tuple[int, bytes]] = []
        for lineno, raw in pending:
            try:
                env = open_envelope(raw, ring)
            except UnknownKey:
                waiting.append((lineno, raw))
                continue
            except EnvelopeError:
                continue
            if kid_node(env.kid) not in (None, env.node):
                continue
            reason = learn_rotation(env, ring)
            if reason is None:
                progress = True
                new_kid = f"{env.node}:{jwk_thumbprint(env.body['new_jwk'])}"
                if new_kid not in report.learned_kids:
                    report.learned_kids.append(new_kid)
            else:
                refused[lineno] = reason
        pending = waiting
    return refused


def verify_logs(logs: Iterable[Iterable[bytes | str]], keys: KeyRing) -> VerifyReport:
    """Verify several consumers' logs of the same streams as one merged input (lines numbered
    across the logs in the order given)."""
    return verify_lines(itertools.chain.from_iterable(logs), keys, merged=True)


def _track(state: _StreamState, env: Envelope, lineno: int, *, check_order: bool = True) -> None:
    digest, seq = env.digest, env.seq
    seen = state.seqs.get(seq)
    if seen is not None:
        if seen.digest == digest:
            state.duplicates += 1
        else:
            state.events.append(
                (
                    "conflict",
                    lineno,
                    seq,
                    f"{{label}}: seq {seq} seen twice with different content "
                    f"(lines {seen.line} and {lineno})",
                )
            )
        return
    if check_order and state.max_seq is not None and seq < state.max_seq:
        before = state.seqs[state.max_seq]
        state.events.append(
            (
                "reorder",
                lineno,
                seq,
                f"{{label}}: seq {seq} arrived after seq {state.max_seq} (line {before.line}), out of order",
            )
        )
    state.seqs[seq] = _Seen(digest, env.prev, lineno)
    if state.max_seq is None or seq > state.max_seq:
        state.max_seq = seq


def _finish(states: dict[tuple[str, str], _StreamState], report: VerifyReport) -> None:
    """Gaps and chain breaks are judged on the whole batch, so a late arrival is not a gap."""
    several_nodes = len({node for node, _ in states}) > 1
    for (node, stream), state in states.items():
        label = f"stream {node}/{stream}" if several_nodes else f"stream {stream}"
        stats = StreamStats(node, stream, envelopes=len(state.seqs), duplicates=state.duplicates)
        found: list[Problem] = [
            Problem(kind, template.format(label=label), line=line, node=node, stream=stream, seq=seq)
            for kind, line, seq, template in state.events
        ]
        ordered = sorted(state.seqs)
        stats.first_seq, stats.last_seq = ordered[0], ordered[-1]
        for low, high in itertools.pairwise(ordered):
            if high - low > 1:
                stats.missing += high - low - 1
                what = f"seq {low + 1}" if high - low == 2 else f"seqs {low + 1}-{high - 1}"
                found.append(
                    Problem(
                        "gap",
                        f"{label}: {what} missing between {low} and {high}",
                        line=state.seqs[high].line,
                        node=node,
                        stream=stream,
                        seq=low + 1,
                    )
                )
        for seq in ordered:
            before = state.seqs.get(seq - 1)
            if before is not None and state.seqs[seq].prev != before.digest:
                found.append(
                    Problem(
                        "chain_broken",
                        f"{label}: prev of seq {seq} does not match seq {seq - 1} (chain broken)",
                        line=state.seqs[seq].line,
                        node=node,
                        stream=stream,
                        seq=seq,
                    )
                )
        stats.problems = len(found)
        report.streams[(node, stream)] = stats
        report.problems.extend(found)
