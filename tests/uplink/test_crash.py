"""kill -9 the producing process at random moments: nothing acknowledged is ever lost."""

from __future__ import annotations

from pathlib import Path

from gateway.uplink.keys import KeyRing, init_key
from tests.support.mosquitto import BrokerFactory
from tests.uplink.crash import run_kill_rounds
from tests.uplink.helpers import Collector

NODE = "edge-crash"


async def test_sigkill_rounds_lose_nothing_acknowledged(tmp_path: Path, make_broker: BrokerFactory) -> None:
    broker = make_broker()
    key_path = tmp_path / "keys" / "node.ed25519"
    ring = KeyRing.from_jwks([init_key(key_path, NODE).public_jwk])
    async with Collector("127.0.0.1", broker.port) as cloud:
        report = await run_kill_rounds(
            tmp_path, broker_url=broker.url, cloud=cloud, key_path=key_path, ring=ring, node=NODE, rounds=20
        )
    print(report.summary())
    assert report.rounds == 20
    assert report.acknowledged > 100, report.summary()
    assert report.lost == [], report.summary()
    assert report.conflicts == [], "a resend must be the same bytes"
    assert report.reused == [], "a seq is never handed out twice"
    assert report.verify is not None
    assert report.verify.ok, report.verify.format_report()
    assert report.delivered >= report.acknowledged


async def test_sigkill_rounds_with_lost_wal_tails_never_reuse_a_seq(
    tmp_path: Path, make_broker: BrokerFactory
) -> None:
    broker = make_broker()
    key_path = tmp_path / "keys" / "node.ed25519"
    ring = KeyRing.from_jwks([init_key(key_path, NODE).public_jwk])
    async with Collector("127.0.0.1", broker.port) as cloud:
        report = await run_kill_rounds(
            tmp_path,
            broker_url=broker.url,
            cloud=cloud,
            key_path=key_path,
            ring=ring,
            node=NODE,
            rounds=8,
            seed=7,
            cut_commits=5,
            run_s=(0.3, 0.6),
        )
    print(report.summary())
    assert report.cuts > 0 and report.commits_cut >= report.cuts, report.summary()
    assert report.reused == [], "a seq is never handed out twice, even after a lost WAL tail"
    assert report.conflicts == [], "no seq reaches the cloud with two different payloads"
    assert report.unreported_lost == [], "every lost message is within a reported gap"
    assert report.verify is not None
    for problem in report.verify.problems:
        assert problem.kind == "gap", problem
        assert (problem.stream, problem.seq) in report.reported, problem
