"""`edge-gateway diag` against a real daemon, a real broker (up, down, TLS) and real files."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from pathlib import Path

import msgspec
import pytest
from aiohttp import web

from gateway.ops import BUILD_DATE
from gateway.ops.diag import (
    CheckResult,
    DaemonUnreachable,
    DiagReport,
    Verdict,
    check_clock,
    check_daemon,
    check_disk,
    check_systemd,
    diagnose,
    disk_verdict,
    fetch_status,
    outbox_verdict,
    parse_properties,
    run_diag,
    systemd_verdict,
)
from gateway.status import OutboxClassStats, OutboxStats
from gateway.uplink.envelope import Sealer
from gateway.uplink.keys import NodeKey
from gateway.uplink.outbox import Outbox
from tests.ops.certs import make_pki
from tests.support.daemon import REPO, running_daemon, write_config
from tests.support.mosquitto import BrokerFactory, BrokerTls, free_port


def by_name(report: DiagReport) -> dict[str, CheckResult]:
    return {c.name: c for c in report.checks}


def devices_config(broker: str) -> str:
    return f"""
[uplink]
broker = "{broker}"

[devices.idcard]
driver = "samv"
port = "/nonexistent/ttyUSB9"

[devices.simcard]
driver = "samv"
port = "sim://idcard"
"""


async def diag_subprocess(*args: str) -> tuple[int, str, str]:
    """`python -m gateway.ops.diag ...` as ops would run it: real exit code and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.ops.diag",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_diag_with_running_daemon_then_stopped(state_dir: Path) -> None:
    closed = free_port()
    config = write_config(state_dir, devices_config(f"mqtt://127.0.0.1:{closed}"))
    key_path = state_dir / "keys" / "node.ed25519"

    async with running_daemon(config) as daemon:
        report = await diagnose(str(config))
        checks = by_name(report)
        assert checks["config"].status is Verdict.PASS
        assert checks["daemon"].status is Verdict.PASS, checks["daemon"].detail
        assert "edge-test" in checks["daemon"].detail

        missing = checks["device:idcard"]
        assert missing.status is Verdict.FAIL
        assert missing.data["state"] == "no_device"
        assert "/nonexistent/ttyUSB9" in missing.detail
        assert missing.fix and "/nonexistent/ttyUSB9" in missing.fix
        sim = checks["device:simcard"]
        assert sim.status is Verdict.PASS, sim.detail
        assert "simulated" in sim.detail

        broker = checks["broker"]
        assert broker.status is Verdict.FAIL
        assert f"127.0.0.1:{closed}" in broker.detail
        assert broker.fix and "broker" in broker.fix
        assert checks["outbox"].status is Verdict.PASS
        assert checks["outbox"].data["source"] == "daemon"
        assert checks["key"].status is Verdict.PASS
        assert report.exit_code == 1

        # The key loosened while the daemon runs: the daemon keeps going, diag says fail and how.
        key_path.chmod(0o644)
        key_report = await diagnose(str(config), only=["key"])
        assert [c.name for c in key_report.checks] == ["key"]
        key = key_report.checks[0]
        assert key.status is Verdict.FAIL
        assert "0644" in key.detail
        assert key.fix == f"`chmod 600 {key_path}`"
        assert key_report.exit_code == 1

        code, out, err = await diag_subprocess("-c", str(config), "--json")
        assert code == 1, err
        document = json.loads(out)
        assert document["exit_code"] == 1
        statuses = {c["name"]: c["status"] for c in document["checks"]}
        assert statuses["key"] == "fail"
        assert statuses["device:idcard"] == "fail"
        assert statuses["device:simcard"] == "pass"
        assert statuses["broker"] == "fail"
        assert statuses["daemon"] == "pass"
        assert daemon.proc.returncode is None

    key_path.chmod(0o600)
    # Put something in the outbox file the daemon left, so the read-only path has figures to show.
    outbox = Outbox(state_dir / "outbox.sqlite3", Sealer(NodeKey.generate("edge-test"), "edge-test"))
    await outbox.start()
    for n in range(3):
        await outbox.enqueue("tx", "service_request", {"n": n})
    await outbox.close()

    report = await diagnose(str(config))
    checks = by_name(report)
    daemon_check = checks["daemon"]
    assert daemon_check.status is Verdict.FAIL
    assert "api.sock" in daemon_check.detail
    assert daemon_check.fix and "systemctl start" in daemon_check.fix
    # The rest still ran, directly.
    assert checks["config"].status is Verdict.PASS
    assert checks["key"].status is Verdict.PASS
    assert checks["disk"].status in (Verdict.PASS, Verdict.WARN)
    assert checks["clock"].status is Verdict.PASS
    assert checks["device:idcard"].status is Verdict.FAIL
    assert "does not exist" in checks["device:idcard"].detail
    assert checks["device:simcard"].status is Verdict.PASS
    assert checks["device:simcard"].data["source"] == "direct"
    assert checks["broker"].status is Verdict.FAIL
    outbox_check = checks["outbox"]
    assert outbox_check.data["source"] == "file"
    assert outbox_check.data["classes"]["tx"]["count"] == 3
    assert "tx 3" in outbox_check.detail
    assert report.exit_code == 1


async def test_table_output_and_exit_code(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(state_dir, devices_config(f"mqtt://127.0.0.1:{free_port()}"))
    code = await asyncio.to_thread(run_diag, str(config), as_json=False, only=None)
    out = capsys.readouterr().out
    assert code == 1
    lines = out.splitlines()
    assert any(line.startswith("FAIL") and "daemon" in line for line in lines)
    assert any(line.startswith("PASS") and "device:simcard" in line for line in lines)
    assert any(line.strip().startswith("fix: ") and "ttyUSB9" in line for line in lines)
    assert lines[-1].startswith("10 checks:")


async def test_invalid_config_is_exit_2_and_shown(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = state_dir / "bad.toml"
    bad.write_text('[node]\nid = "edge-1"\ncolour = "red"\n')
    code = await asyncio.to_thread(run_diag, str(bad), as_json=True, only=None)
    document = json.loads(capsys.readouterr().out)
    assert code == 2
    assert document["exit_code"] == 2
    config_check = document["checks"][0]
    assert config_check["name"] == "config"
    assert config_check["status"] == "fail"
    assert "node.colour: unknown key" in config_check["detail"]


async def test_unknown_check_name_is_usage_error(state_dir: Path) -> None:
    config = write_config(state_dir)
    code, _out, err = await diag_subprocess("-c", str(config), "--only", "frobnicate")
    assert code == 2
    assert "unknown check 'frobnicate'" in err
    code, _out, err = await diag_subprocess("-c", str(config), "--only", "device:nosuch")
    assert code == 2
    assert "no device named nosuch" in err


async def test_broker_reachable(state_dir: Path, make_broker: BrokerFactory) -> None:
    broker = make_broker()
    config = write_config(state_dir, f'[uplink]\nbroker = "{broker.url}"\n')
    report = await diagnose(str(config), only=["broker"])
    check = report.checks[0]
    assert check.status is Verdict.PASS, check.detail
    assert "MQTT v5 connect ok" in check.detail
    assert report.exit_code == 0


async def test_broker_tls_expiring_certificate_warns(state_dir: Path, make_broker: BrokerFactory) -> None:
    pki = make_pki(state_dir / "pki", server_days=10)
    broker = make_broker(tls=BrokerTls(pki.ca_file, pki.server_cert, pki.server_key))
    config = write_config(
        state_dir,
        f"""
[uplink]
broker = "mqtts://127.0.0.1:{broker.port}"
ca_file = "{pki.ca_file}"
client_cert = "{pki.client_cert}"
client_key = "{pki.client_key}"
""",
    )
    report = await diagnose(str(config), only=["broker"])
    check = report.checks[0]
    assert check.status is Verdict.WARN, check.detail
    assert "broker certificate expires in" in check.detail
    assert check.data["steps"]["tls"]["subject"] == "CN=broker"
    assert check.data["steps"]["mqtt"]["connect_s"] >= 0
    assert report.exit_code == 0


async def test_broker_tls_wrong_ca_fails(state_dir: Path, make_broker: BrokerFactory) -> None:
    served = make_pki(state_dir / "served")
    other = make_pki(state_dir / "other")
    broker = make_broker(tls=BrokerTls(served.ca_file, served.server_cert, served.server_key))
    config = write_config(
        state_dir,
        f"""
[uplink]
broker = "mqtts://127.0.0.1:{broker.port}"
ca_file = "{other.ca_file}"
client_cert = "{other.client_cert}"
client_key = "{other.client_key}"
""",
    )
    report = await diagnose(str(config), only=["broker"])
    check = report.checks[0]
    assert check.status is Verdict.FAIL
    assert "does not verify" in check.detail
    assert check.fix and "ca_file" in check.fix


async def test_clock_before_build_date_fails() -> None:
    async def synced() -> bool | None:
        return True

    early = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)
    check = await check_clock(now=early, synchronised=synced)
    assert check.status is Verdict.FAIL
    assert str(BUILD_DATE) in check.detail
    assert check.fix and "timedatectl" in check.fix

    async def unsynced() -> bool | None:
        return False

    later = dt.datetime.combine(BUILD_DATE, dt.time(12), tzinfo=dt.UTC) + dt.timedelta(days=1)
    check = await check_clock(now=later, synchronised=unsynced)
    assert check.status is Verdict.WARN
    assert "not NTP-synchronised" in check.detail


def test_disk_thresholds(tmp_path: Path) -> None:
    assert disk_verdict(0.5, 0.5) is Verdict.PASS
    assert disk_verdict(0.09, 0.5) is Verdict.WARN
    assert disk_verdict(0.5, 0.05) is Verdict.WARN
    assert disk_verdict(0.019, None) is Verdict.FAIL
    assert disk_verdict(0.5, 0.01) is Verdict.FAIL
    check = check_disk(tmp_path / "not" / "yet")
    assert "does not exist yet" in check.detail
    assert 0 < check.data["free_fraction"] <= 1


def test_outbox_verdicts() -> None:
    stats = OutboxStats(
        classes={
            "tx": OutboxClassStats(count=2, bytes=900, oldest_age_s=7200.0),
            "telemetry": OutboxClassStats(count=5, bytes=100, oldest_age_s=30.0),
        },
        count=7,
        bytes=1000,
    )
    verdict, detail, fix = outbox_verdict(stats, 1 << 30)
    assert verdict is Verdict.WARN
    assert "tx 2" in detail and "oldest 2.0 h" in detail
    assert fix and "broker" in fix
    verdict, _detail, fix = outbox_verdict(msgspec.structs.replace(stats, bytes=990), 1000)
    assert verdict is Verdict.FAIL
    assert fix and "full" in fix
    verdict, detail, _fix = outbox_verdict(OutboxStats(classes={}, count=0, bytes=0), 1 << 30)
    assert verdict is Verdict.PASS
    assert detail.startswith("empty")


async def test_outbox_file_unreadable_fails(state_dir: Path) -> None:
    config = write_config(state_dir)
    (state_dir / "outbox.sqlite3").write_bytes(b"this is not a database" * 100)
    report = await diagnose(str(config), only=["outbox"])
    check = report.checks[0]
    assert check.status is Verdict.FAIL
    assert check.fix and "restart" in check.fix
    assert "cannot read" in check.detail


SYSTEMCTL_ACTIVE = """LoadState=loaded
ActiveState=active
SubState=running
Result=success
WatchdogUSec=30s
NRestarts=0
MainPID=812
"""


def test_systemd_verdicts() -> None:
    props = parse_properties(SYSTEMCTL_ACTIVE)
    assert systemd_verdict(props).status is Verdict.PASS
    assert "watchdog 30s" in systemd_verdict(props).detail
    assert systemd_verdict({**props, "WatchdogUSec": "0"}).status is Verdict.WARN
    assert systemd_verdict({**props, "NRestarts": "3"}).status is Verdict.WARN
    failed = systemd_verdict({**props, "ActiveState": "failed", "Result": "watchdog"})
    assert failed.status is Verdict.FAIL
    assert "watchdog" in failed.detail
    assert failed.fix and "journalctl" in failed.fix
    assert systemd_verdict({"LoadState": "not-found"}).status is Verdict.SKIP


async def test_systemd_skipped_without_systemd(tmp_path: Path) -> None:
    check = await check_systemd(systemd_dir=tmp_path / "no-systemd")
    assert check.status is Verdict.SKIP
    assert "systemd is not running" in check.detail


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"hello": "world"}', "missing required field"),
        (b"[1, 2, 3]", "Expected `object`"),
        (
            b'{"node": "n", "version": "1", "config": "c", "started_at": "soon", "listening": []}',
            "started_at",
        ),
    ],
)
async def test_a_status_that_is_not_a_gateways_fails_the_daemon_check(
    tmp_path: Path, body: bytes, named: str
) -> None:
    """Another program on the socket (or a damaged answer): the daemon check fails and says what
    did not fit, and the checks that read the status fall back to the files."""
    socket_path = tmp_path / "api.sock"

    async def status(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/status", status)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.UnixSite(runner, str(socket_path))
    await site.start()
    try:
        with pytest.raises(DaemonUnreachable) as caught:
            await fetch_status(socket_path, timeout=5)
    finally:
        await runner.cleanup()
    assert "not a gateway's status" in str(caught.value) and named in str(caught.value)
    assert caught.value.fix == "is another program on this socket?"
    check = check_daemon(socket_path, None, caught.value, now=0.0)
    assert check.status is Verdict.FAIL and "not a gateway's status" in check.detail
