"""kill -9 soak: N rounds of produce-then-SIGKILL against a real mosquitto, then compare.

Run: .venv/bin/python bench/soak_kill.py [--rounds 100]
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
    print(f"seq reused:    {len(report.reused)}")
    verdict = report.verify.format_report().splitlines()[-1] if report.verify else "n/a"
    print(f"verify_lines:  {verdict}")
    print(f"elapsed:       {elapsed:.1f}s")
    ok = not report.lost and not report.conflicts and not report.reused and report.verify and report.verify.ok
    if ok:
        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"kept {base} for inspection")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    sys.path.insert(0, str(REPO))
    sys.exit(asyncio.run(main(parser.parse_args())))
