"""Kill -9 rounds against the producer process; shared by the test and bench/soak_kill.py."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from gateway.uplink.keys import KeyRing
from gateway.uplink.outbox import incidents
from gateway.uplink.verifier import VerifyReport, verify_lines
from tests.support.walcut import cut_last_commits
from tests.uplink.helpers import Collector, payload_of

REPO = Path(__file__).resolve().parents[2]


@dataclass
class KillReport:
    """What the cloud got compared with what the producer acknowledged."""

    rounds: int = 0
    killed_before_ready: int = 0
    acknowledged: int = 0
    delivered: int = 0
    duplicated: int = 0
    lost: list[tuple[str, int]] = field(default_factory=list)
    conflicts: list[tuple[str, int]] = field(default_factory=list)
    reused: list[tuple[str, int]] = field(default_factory=list)
    verify: VerifyReport | None = None
    # WAL-tail cuts between rounds (a disk that lied about fsync): how many, how many commits
    # they dropped, the seqs the outbox reported as possibly lost, and lost seqs it did not report.
    cuts: int = 0
    commits_cut: int = 0
    reported: set[tuple[str, int]] = field(default_factory=set)
    unreported_lost: list[tuple[str, int]] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"rounds={self.rounds} acknowledged={self.acknowledged} delivered={self.delivered} "
            f"lost={len(self.lost)} duplicated={self.duplicated} conflicts={len(self.conflicts)} "
            f"seq_reused={len(self.reused)} killed_before_ready={self.killed_before_ready} "
            f"cuts={self.cuts} commits_cut={self.commits_cut} reported_possibly_lost={len(self.reported)} "
            f"lost_unreported={len(self.unreported_lost)}"
        )


async def _spawn(args: list[str], log: Path) -> asyncio.subprocess.Process:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with log.open("ab") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.uplink.producer_proc",
            *args,
            cwd=REPO,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )


async def run_kill_rounds(
    workdir: Path,
    *,
    broker_url: str,
    cloud: Collector,
    key_path: Path,
    ring: KeyRing,
    node: str,
    rounds: int,
    seed: int = 1,
    run_s: tuple[float, float] = (0.05, 0.6),
    cut_commits: int = 0,
) -> KillReport:
    """Start, SIGKILL at a random moment, repeat; then drain once and compare.

    With `cut_commits`, each kill is followed by dropping the last 1..cut_commits commits from
    the WAL (and the -shm), as a disk that lied about fsync would.
    """
    rng = random.Random(seed)
    report = KillReport()
    # Per round, per stream: the seqs acknowledged on stdout.
    acked: list[dict[str, list[int]]] = []
    db = workdir / "outbox.db"
    log = workdir / "producer.log"
    base = ["--db", str(db), "--broker", broker_url, "--key", str(key_path), "--node", node]
    for n in range(rounds):
        proc = await _spawn([*base, "--seed", str(seed * 100_000 + n)], log)
        assert proc.stdout is not None
        early = rng.random() < 0.15  # sometimes die while still opening the outbox
        if not early:
            async with asyncio.timeout(30):
                line = await proc.stdout.readline()
            assert line == b"READY\n", f"producer failed to start: {line!r}, see {log}"
        await asyncio.sleep(rng.uniform(*run_s))
        proc.send_signal(signal.SIGKILL)
        out = await proc.stdout.read()
        await proc.wait()
        report.rounds += 1
        this_round: dict[str, list[int]] = defaultdict(list)
        acked.append(this_round)
        lines = out.decode().splitlines()
        if early and "READY" not in lines:
            report.killed_before_ready += 1
        for text in lines:
            if text.startswith("ACK "):
                _, stream, seq = text.split()
                this_round[stream].append(int(seq))
        if cut_commits and db.with_name(db.name + "-wal").exists():
            drop = rng.randint(1, cut_commits)
            try:
                cut_last_commits(db, drop)
            except AssertionError:
                pass  # too few commits in the WAL this round
            else:
                report.cuts += 1
                report.commits_cut += drop
    # One clean run to deliver whatever the last kill left in the outbox.
    proc = await _spawn([*base, "--drain"], log)
    async with asyncio.timeout(90):
        out, _ = await proc.communicate()
    assert proc.returncode == 0 and b"DRAINED" in out, f"drain failed ({proc.returncode}), see {log}"

    for incident in incidents.load(incidents.journal_path(db)):
        for stream, (first, last) in incident.unaccounted.items():
            report.reported.update((stream, q) for q in range(first, last + 1))
    want = {(s, q) for r in acked for s, seqs in r.items() for q in seqs} - report.reported
    await cloud.wait_for(lambda: want <= _received_keys(cloud), timeout=30)
    _compare(report, acked, cloud, ring)
    report.unreported_lost = [key for key in report.lost if key not in report.reported]
    return report


def _received_keys(cloud: Collector) -> set[tuple[str, int]]:
    keys = set()
    for raw in cloud.envelopes():
        payload = payload_of(raw)
        seq = payload["seq"]
        assert isinstance(seq, int)
        keys.add((str(payload["stream"]), seq))
    return keys


def _compare(report: KillReport, acked: list[dict[str, list[int]]], cloud: Collector, ring: KeyRing) -> None:
    by_key: dict[tuple[str, int], set[bytes]] = defaultdict(set)
    receptions = 0
    for raw in cloud.envelopes():
        payload = payload_of(raw)
        seq = payload["seq"]
        assert isinstance(seq, int)
        by_key[(str(payload["stream"]), seq)].add(raw)
        receptions += 1
    report.delivered = len(by_key)
    report.duplicated = receptions - len(by_key)
    report.conflicts = sorted(k for k, v in by_key.items() if len(v) > 1)
    highest: dict[str, int] = defaultdict(int)
    seen: set[tuple[str, int]] = set()
    for this_round in acked:
        for stream, seqs in this_round.items():
            report.acknowledged += len(seqs)
            report.lost += [(stream, q) for q in seqs if (stream, q) not in by_key]
            # A seq is acknowledged once, and a restart only ever hands out higher ones.
            report.reused += [(stream, q) for q in seqs if (stream, q) in seen or q <= highest[stream]]
            seen.update((stream, q) for q in seqs)
        for stream, seqs in this_round.items():
            highest[stream] = max(highest[stream], *seqs)
    report.verify = verify_lines(cloud.envelopes(), ring)
