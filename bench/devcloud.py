"""The development cloud's live verification vs the batch reference verifier, over the same envelopes.

Run: .venv/bin/python bench/devcloud.py [--count 2000] [--json]
Target: live verification (one envelope at a time, with the feed) keeps >= 0.5 of the batch
verifier's rate on the same envelopes; both are dominated by the Ed25519 check.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# The repo first: bench/drivers.py would otherwise shadow the drivers package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.devcloud.cloud import DevCloud
from gateway.devcloud.feed import Feed
from gateway.devcloud.live import LiveVerifier
from gateway.uplink.envelope import GENESIS_PREV, Sealer, envelope_digest
from gateway.uplink.keys import KeyRing, NodeKey
from gateway.uplink.verifier import verify_lines

TARGET_RATIO = 0.5
NODE = "edge-001"
BODY = {"service": "certificate.residence", "data": {"copies": 2}, "factors": ["idcard", "face"]}


def envelopes(key: NodeKey, count: int) -> list[bytes]:
    sealer, out, prev = Sealer(key, NODE), [], GENESIS_PREV
    for seq in range(1, count + 1):
        raw = sealer.seal(stream="tx", seq=seq, prev=prev, type="transaction", body=BODY)
        out.append(raw)
        prev = envelope_digest(raw)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=2000, help="envelopes per measurement")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    key = NodeKey.generate(NODE)
    ring = KeyRing.from_jwks([key.public_jwk])
    batch = envelopes(key, args.count)

    start = time.perf_counter()
    report = verify_lines(batch, ring)
    batch_rate = args.count / (time.perf_counter() - start)
    assert report.ok, report.format_report()

    live = LiveVerifier(ring)
    start = time.perf_counter()
    assert all(live.check(raw, topic=f"edge/{NODE}/up/tx").verified for raw in batch)
    live_rate = args.count / (time.perf_counter() - start)

    lines: list[str] = []
    cloud = DevCloud(NodeKey.generate("devcloud"), ring, Feed(lines.append))
    start = time.perf_counter()
    for raw in batch:
        cloud.on_message(f"edge/{NODE}/up/tx", raw)
    feed_rate = args.count / (time.perf_counter() - start)
    assert len(lines) == args.count

    figures = {
        "count": args.count,
        "batch_verify_per_s": round(batch_rate),
        "live_verify_per_s": round(live_rate),
        "devcloud_with_feed_per_s": round(feed_rate),
        "live_vs_batch": round(live_rate / batch_rate, 3),
        "feed_vs_batch": round(feed_rate / batch_rate, 3),
        "target_ratio": TARGET_RATIO,
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:>26}: {value}")
    return 0 if figures["feed_vs_batch"] >= TARGET_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
