"""kill -9 soak: N rounds of produce-then-SIGKILL against a real mosquitto, then compare.

Run: .venv/bin/python bench/soak_kill.py [--rounds 100] [--cut-wal 5]

--cut-wal N also drops the last 1..N commits from the outbox's WAL after each kill (what a disk
that lies about fsync does at a power cut). Then messages may be lost, but only seqs the outbox
reported as possibly lost; a seq is never reused (both must be 0 for the run to pass).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


async def main(args: argparse.Namespace) -> int:
    from gateway.uplink.keys import KeyRing, init_key
    from tests.support.mosquitto import Mosquitto
    from tests.uplink.crash import run_kill_rounds
    from tests.uplink.helpers import Collector

    node = "edge-soak"
    base = Path(tempfile.mkdtemp(prefix="soak-kill-"))
    broker = Mosquitto(base / "broker")
    broker.start()
    try:
        key_path = base / "keys" / "node.ed25519"
        ring = KeyRing.from_jwks([init_key(key_path, node).public_jwk])
        started = time.perf_counter()
        async with Collector("127.0.0.1", broker.port) as cloud:
            report = await run_kill_rounds(
                base,
                broker_url=broker.url,
                cloud=cloud,
                key_path=key_path,
                ring=ring,
                node=node,
                rounds=args.rounds,
                seed=args.seed,
                cut_commits=args.cut_wal,
            )
        elapsed = time.perf_counter() - started
    finally:
        broker.stop()
    print(f"rounds:        {report.rounds} ({report.killed_before_ready} killed while starting)")
    print(f"acknowledged:  {report.acknowledged}")
    print(f"delivered:     {report.delivered} distinct (stream, seq)")
    print(f"lost:          {len(report.lost)}")
    print(f"duplicated:    {report.duplicated} (same bytes resent)")
    print(f"conflicts:     {len(report.conflicts)} (same seq, different bytes)")
    print(f"seq reused:    {len(report.reused)} (must be 0)")
    if args.cut_wal:
        print(f"WAL cuts:      {report.cuts} ({report.commits_cut} commits dropped)")
        print(f"reported:      {len(report.reported)} seqs reported as possibly lost")
        print(f"lost, unreported: {len(report.unreported_lost)} (must be 0)")
    verdict = report.verify.format_report().splitlines()[-1] if report.verify else "n/a"
    if args.cut_wal and report.verify is not None and not report.verify.ok:
        kinds = sorted({p.kind for p in report.verify.problems})
        covered = sum((p.stream, p.seq) in report.reported for p in report.verify.problems)
        verdict += (
            f" ({len(report.verify.problems)} problem(s): {', '.join(kinds)}; {covered} at reported seqs)"
        )
    print(f"verify_lines:  {verdict}")
    print(f"elapsed:       {elapsed:.1f}s")
    if args.cut_wal:
        # Lost messages are allowed only within reported gaps; the verifier may see only those gaps.
        gaps_ok = report.verify is not None and all(
            p.kind == "gap" and (p.stream, p.seq) in report.reported for p in report.verify.problems
        )
        ok = not report.unreported_lost and not report.conflicts and not report.reused and gaps_ok
    else:
        ok = bool(
            not report.lost
            and not report.conflicts
            and not report.reused
            and report.verify
            and report.verify.ok
        )
    if ok:
        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"kept {base} for inspection")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--cut-wal", type=int, default=0, metavar="N", help="drop 1..N WAL commits after each kill"
    )
    sys.path.insert(0, str(REPO))
    sys.exit(asyncio.run(main(parser.parse_args())))
