"""`edge-gateway run` as systemd starts it: a start-up problem is one JSON line and exit 2, and
under a journal stream every line carries its syslog priority (`<N>`) in front of the JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.ops.diag import Verdict, check_config
from gateway.startup import EXIT_CONFIG
from tests.support.daemon import short_tmpdir, write_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def state() -> Iterator[Path]:
    """A short state directory (the config puts the API socket in it)."""
    path = short_tmpdir()
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False, timeout=30)


def run_gateway(config: Path, *, journal: bool = False, timeout: float = 60) -> tuple[int, str]:
    """Run `edge-gateway run -c config` to its exit; its exit status and everything it wrote.

    With `journal`, stdout and stderr are one pipe whose device:inode is in JOURNAL_STREAM, the
    way systemd hands a service its journal stream.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "INVOCATION_ID")}
    env["PYTHONPATH"] = str(REPO)
    read_end, write_end = os.pipe()
    if journal:
        st = os.fstat(write_end)
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(config)],
            stdout=write_end,
            stderr=write_end,
            env=env,
            cwd=REPO,
        )
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as out:
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        return code, out.read().decode()


def gateway_config(state: Path, extra: str = "") -> Path:
    """The tests' config at the production log level (info; debug adds asyncio's own lines)."""
    config = write_config(state, extra)
    config.write_text(config.read_text().replace('level = "debug"', 'level = "info"'))
    return config


def only_line(output: str) -> dict[str, object]:
    """The one line the daemon wrote, parsed; fails when there is not exactly one JSON line."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    record: dict[str, object] = json.loads(lines[0])
    return record


def test_a_missing_cloud_key_is_one_line_and_exit_2(state: Path) -> None:
    missing = state / "cloud.jwk"
    config = gateway_config(state, f'[uplink]\ncloud_keys = ["{missing}"]\n')
    code, output = run_gateway(config)
    assert code == EXIT_CONFIG
    record = only_line(output)
    assert record["event"] == "startup_failed"
    assert record["level"] == "error"
    assert record["key"] == "uplink.cloud_keys"
    assert record["path"] == str(missing)
    assert "missing" in str(record["error"])
    assert f"copy the cloud's public key (JWK) to {missing}" in str(record["fix"])
    assert not (state / "api.sock").exists()


def test_a_cloud_key_that_is_not_a_jwk_names_the_key(state: Path) -> None:
    bad = state / "cloud.jwk"
    bad.write_text("-----BEGIN PUBLIC KEY-----\n")
    config = gateway_config(state, f'[uplink]\ncloud_keys = ["{bad}"]\n')
    code, output = run_gateway(config)
    assert code == EXIT_CONFIG
    record = only_line(output)
    assert (record["key"], record["path"]) == ("uplink.cloud_keys", str(bad))
    assert "not a usable Ed25519 public JWK" in str(record["error"])


def test_missing_broker_tls_files_name_the_key(state: Path) -> None:
    ca = state / "ca.pem"
    extra = f'[uplink]\nbroker = "mqtts://127.0.0.1:8883"\nca_file = "{ca}"\n'
    code, output = run_gateway(gateway_config(state, extra))
    assert code == EXIT_CONFIG
    record = only_line(output)
    assert (record["key"], record["path"]) == ("uplink.ca_file", str(ca))
    assert "broker's CA certificate" in str(record["error"])

    ca.write_text("not a certificate\n")
    code, output = run_gateway(gateway_config(state, extra))
    assert code == EXIT_CONFIG
    assert "not a PEM CA certificate" in str(only_line(output)["error"])


def test_an_invalid_config_is_one_json_line_naming_the_key(state: Path) -> None:
    config = state / "gateway.toml"
    config.write_text("[api]\nmax_sessions = 'lots'\n")
    code, output = run_gateway(config)
    assert code == EXIT_CONFIG
    record = only_line(output)
    assert record["event"] == "startup_failed"
    assert record["key"] == "api.max_sessions"
    assert f"edge-gateway config check -c {config}" in str(record["fix"])


def test_a_missing_node_key_without_auto_init_is_exit_2(state: Path) -> None:
    config = gateway_config(state)
    config.write_text(config.read_text().replace("auto_init_key = true", "auto_init_key = false"))
    code, output = run_gateway(config)
    assert code == EXIT_CONFIG
    record = only_line(output)
    assert record["key"] == "uplink.key_file"
    assert "keys init" in str(record["fix"])


def test_under_a_journal_stream_the_failure_line_is_priority_3(state: Path) -> None:
    config = gateway_config(state, f'[uplink]\ncloud_keys = ["{state / "nope.jwk"}"]\n')
    code, output = run_gateway(config, journal=True)
    assert code == EXIT_CONFIG
    line = output.strip()
    assert line.startswith("<3>{"), output
    assert json.loads(line[3:])["key"] == "uplink.cloud_keys"


def test_running_daemon_lines_carry_their_level_only_under_the_journal(state: Path) -> None:
    """info is <6>, a SIGHUP's `reloaded` warning <4>, a refused reload's error <3>; off the
    journal the same lines are bare JSON."""
    config = gateway_config(state, '[devices.idcard]\ndriver = "samv"\nport = "sim://idcard"\n')
    for journal in (True, False):
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        env["PYTHONPATH"] = str(REPO)
        read_end, write_end = os.pipe()
        if journal:
            st = os.fstat(write_end)
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(config)],
            stdout=write_end,
            stderr=write_end,
            env=env,
            cwd=REPO,
        )
        os.close(write_end)
        good = config.read_text()
        with os.fdopen(read_end, "rb") as out:
            lines: list[str] = []

            def until(event: str, out: object = out, lines: list[str] = lines) -> None:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    raw = out.readline()  # type: ignore[attr-defined]
                    assert raw, "".join(lines)
                    lines.append(raw.decode())
                    if f'"event": "{event}"' in lines[-1]:
                        return
                raise AssertionError(f"no {event}: {''.join(lines)}")

            try:
                until("ready")
                proc.send_signal(signal.SIGHUP)
                until("reloaded")
                config.write_text("[api]\nmax_sessions = 'lots'\n")
                proc.send_signal(signal.SIGHUP)
                until("reload_rejected")
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=30) == 0
            finally:
                config.write_text(good)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        records = {}
        for line in lines:
            prefix, brace, body = line.partition("{")
            if not brace:
                continue  # the plain "listening on" banner for a human at a terminal
            records[json.loads(brace + body)["event"]] = prefix
        expected = {"ready": "<6>", "reloaded": "<4>", "reload_rejected": "<3>"}
        if not journal:
            expected = dict.fromkeys(expected, "")
        assert {event: records.get(event) for event in expected} == expected, "".join(lines)


def test_diag_config_check_fails_on_the_files_the_daemon_would_refuse(state: Path) -> None:
    missing = state / "cloud.jwk"
    config = gateway_config(state, f'[uplink]\ncloud_keys = ["{missing}"]\n')
    result, loaded = check_config(str(config))
    assert loaded is not None
    assert result.status is Verdict.FAIL
    assert f"uplink.cloud_keys: {missing}" in result.detail
    assert result.fix is not None and str(missing) in result.fix
