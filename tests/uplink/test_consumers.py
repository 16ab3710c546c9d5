"""Consumers at scale: a shared subscription spreads one node's streams over several consumers,
and the reference verifier checks their logs together (order by seq, dedupe)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path

from gateway.uplink.envelope import Sealer
from gateway.uplink.keys import KeyRing, NodeKey
from gateway.uplink.mqtt import LinkSettings, MqttLink
from gateway.uplink.outbox import Outbox
from gateway.uplink.publisher import Publisher
from gateway.uplink.verifier import verify_lines, verify_logs
from tests.support.mosquitto import BrokerFactory
from tests.uplink.conftest import NODE
from tests.uplink.helpers import Collector, payload_of, until

REPO = Path(__file__).resolve().parents[2]
SHARED = "$share/cloud/edge/+/up/#"


def run_verify(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "verify", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


async def test_a_shared_subscription_splits_streams_and_the_merged_logs_verify(
    tmp_path: Path, sealer: Sealer, ring: KeyRing, node_key: NodeKey, make_broker: BrokerFactory
) -> None:
    broker = make_broker()
    total = 240
    async with AsyncExitStack() as stack:
        consumers = [
            await stack.enter_async_context(
                Collector("127.0.0.1", broker.port, topic=SHARED, client_id=f"consumer-{i}")
            )
            for i in range(3)
        ]
        outbox = await stack.enter_async_context(Outbox(tmp_path / "o.db", sealer))
        publisher = Publisher(outbox, NODE)
        link = await stack.enter_async_context(
            MqttLink(LinkSettings(broker.url), NODE, workers=[publisher.run])
        )
        await link.wait_connected(timeout=10)
        for i in range(total):
            await outbox.enqueue("tx" if i % 3 else "audit", "t", {"i": i})
        await until(lambda: sum(len(set(c.envelopes())) for c in consumers) >= total, timeout=30)
        await until(lambda: outbox.backlog() == 0, timeout=10)
    logs = [c.envelopes() for c in consumers]
    assert all(logs), "every consumer of the group took a share"
    assert sum(len(log) for log in logs) >= total
    # One consumer alone sees holes (only holes) in the streams it shares with the others.
    alone = [{p.kind for p in verify_lines(log, ring).problems} for log in logs]
    assert {"gap"} in alone and all(kinds <= {"gap"} for kinds in alone), alone
    merged = verify_logs(logs, ring)
    assert merged.ok, merged.format_report()
    assert merged.merged and sum(s.envelopes for s in merged.streams.values()) == total

    # The CLI: several files are one merged input; exit 0, and a hole is still a hole.
    jwk = tmp_path / "node.jwk"
    jwk.write_text(json.dumps(node_key.public_jwk))
    files = []
    for i, log in enumerate(logs):
        path = tmp_path / f"consumer-{i}.jsonl"
        path.write_bytes(b"".join(raw + b"\n" for raw in log))
        files.append(str(path))
    ok = run_verify("--key", str(jwk), *files)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "merged input" in ok.stdout and ok.stdout.rstrip().endswith("OK")

    # One file holding the logs one after another: arrival order is meaningless, --merged says so.
    concatenated = tmp_path / "all.jsonl"
    concatenated.write_bytes(b"".join(Path(f).read_bytes() for f in files))
    unordered = run_verify("--key", str(jwk), "--json", str(concatenated))
    assert unordered.returncode == 1
    assert {p["kind"] for p in json.loads(unordered.stdout)["problems"]} == {"reorder"}
    assert run_verify("--key", str(jwk), "--merged", str(concatenated)).returncode == 0

    # Duplicates across consumers (at-least-once) are counted, not errors; a lost one is a gap.
    with_duplicates = run_verify("--key", str(jwk), "--json", *files, files[0])
    report = json.loads(with_duplicates.stdout)
    assert with_duplicates.returncode == 0 and sum(s["duplicates"] for s in report["streams"]) > 0
    lossy = tmp_path / "lossy.jsonl"
    spans = {(s.node, s.stream): (s.first_seq, s.last_seq) for s in merged.streams.values()}

    def inside(raw: bytes) -> bool:  # neither the first nor the last of its stream
        payload = payload_of(raw)
        first, last = spans[(str(payload["node"]), str(payload["stream"]))]
        return first != payload["seq"] != last

    dropped = next(raw for raw in logs[1] if inside(raw))
    lossy.write_bytes(b"".join(raw + b"\n" for raw in logs[1] if raw != dropped))
    holed = run_verify("--key", str(jwk), "--json", files[0], str(lossy), files[2])
    assert holed.returncode == 1
    assert {p["kind"] for p in json.loads(holed.stdout)["problems"]} == {"gap"}


def test_verify_cli_refuses_stdin_twice_and_missing_files(tmp_path: Path, node_key: NodeKey) -> None:
    jwk = tmp_path / "node.jwk"
    jwk.write_text(json.dumps(node_key.public_jwk))
    twice = run_verify("--key", str(jwk), "-", "-")
    assert twice.returncode == 2 and "once" in twice.stderr
    missing = run_verify("--key", str(jwk), str(tmp_path / "a.jsonl"), str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    assert len(missing.stderr.splitlines()) == 1
