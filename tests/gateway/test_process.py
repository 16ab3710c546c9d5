"""The daemon as a process: start, serve, stop cleanly, refuse a taken socket, reload on SIGHUP."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from pathlib import Path

from tests.support.daemon import running_daemon, short_tmpdir, spawn_daemon, unix_session, write_config


async def test_health_answers_and_sigterm_exits_zero(state_dir: Path) -> None:
    config = write_config(state_dir)
    dp = await spawn_daemon(config)
    try:
        assert dp.socket_path.is_socket()
        assert oct(dp.socket_path.stat().st_mode & 0o777) == "0o660"
        async with unix_session(dp.socket_path) as http:
            resp = await http.get("/v1/health")
            assert resp.status == 200
            assert resp.content_type == "application/json"
            body = await resp.json()
            assert body["status"] in ("ok", "degraded")
            assert "checks" in body
    finally:
        started = time.monotonic()
        code = await dp.stop(timeout=5)
    assert code == 0
    assert time.monotonic() - started < 5
    assert "Traceback" not in dp.output
    assert not dp.socket_path.exists(), "socket file removed on clean stop"


async def test_curl_as_a_user_would(state_dir: Path) -> None:
    config = write_config(state_dir)
    async with running_daemon(config) as dp:
        proc = await asyncio.create_subprocess_exec(
            "curl",
            "-sS",
            "-w",
            "\n%{http_code}",
            "--unix-socket",
            str(dp.socket_path),
            "http://localhost/v1/health",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        body, code = out.decode().rsplit("\n", 1)
        assert code == "200"
        assert json.loads(body)["status"] in ("ok", "degraded")


async def test_second_instance_refuses_and_first_keeps_serving(state_dir: Path) -> None:
    config = write_config(state_dir)
    async with running_daemon(config) as first:
        second = await spawn_daemon(config, wait_ready=False)
        code = await second.wait_exit(timeout=20)
        assert code != 0
        assert "already listening" in second.output
        assert "Traceback" not in second.output
        async with unix_session(first.socket_path) as http:
            assert (await http.get("/v1/health")).status == 200


async def test_stale_socket_file_is_cleaned_up(state_dir: Path) -> None:
    config = write_config(state_dir)
    stale = state_dir / "api.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(stale))
    leftover.close()  # bound but nobody listening: what a killed daemon leaves behind
    assert stale.is_socket()
    async with running_daemon(config) as dp, unix_session(dp.socket_path) as http:
        assert (await http.get("/v1/health")).status == 200
    assert "stale_socket_removed" in dp.output


async def test_sighup_with_bad_config_keeps_old_and_good_reload_applies(state_dir: Path) -> None:
    config = write_config(state_dir)
    async with running_daemon(config) as dp:
        good_text = config.read_text()
        config.write_text(good_text + "\n[bogus]\n")
        dp.signal(signal.SIGHUP)
        await dp.wait_for_output("reload_rejected")
        async with unix_session(dp.socket_path) as http:
            assert (await http.get("/v1/health")).status == 200
        config.write_text(
            good_text.replace('level = "debug"', 'level = "warning"').replace(
                'id = "edge-test"', 'id = "edge-renamed"'
            )
        )
        dp.signal(signal.SIGHUP)
        line = await dp.wait_for_output('"event": "reloaded"')
        record = json.loads(line)
        assert "log.level" in record["applied"]
        assert "node.id" in record["needs_restart"]
        async with unix_session(dp.socket_path) as http:
            status = await (await http.get("/v1/status")).json()
            assert status["node"] == "edge-test", "node.id needs a restart; it did not change live"
    assert dp.proc.returncode == 0


async def test_socket_path_printed_for_embedded_default(tmp_path: Path) -> None:
    state_home = short_tmpdir()
    env = {"XDG_STATE_HOME": str(state_home), "EDGE_GATEWAY_CONFIG": "", "HOME": str(tmp_path)}
    dp = await spawn_daemon(None, args=["run"], env=env)
    try:
        expected = state_home / "edge-gateway" / "api.sock"
        assert dp.socket_path == expected
        assert "curl --unix-socket" in dp.output
        async with unix_session(dp.socket_path) as http:
            assert (await http.get("/v1/health")).status == 200
            for _ in range(100):
                devices = (await (await http.get("/v1/devices")).json())["devices"]
                if all(d["state"] == "online" for d in devices):
                    break
                await asyncio.sleep(0.1)
            # Two kiosks with their own reader and camera, sharing a pool of two printers.
            assert {d["name"]: d["state"] for d in devices} == {
                "idcard_k1": "online",
                "idcard_k2": "online",
                "camera_k1": "online",
                "camera_k2": "online",
                "printer_a": "online",
                "printer_b": "online",
            }
            assert all(d["simulated"] for d in devices)
            stations = (await (await http.get("/v1/stations")).json())["stations"]
            assert [s["name"] for s in stations] == ["k1", "k2"]
            assert stations[0]["devices"]["printer"]["pool"] == "hall_printers"
    finally:
        assert await dp.stop() == 0


async def test_missing_device_makes_health_degraded(state_dir: Path) -> None:
    extra = '[devices.printer]\ndriver = "escpos"\nport = "/dev/ttyNOPE-test"\n'
    config = write_config(state_dir, extra)
    async with running_daemon(config) as dp, unix_session(dp.socket_path) as http:
        health = await (await http.get("/v1/health")).json()
        assert health["status"] == "degraded"
        assert health["checks"]["devices"]["down"] == {"printer": "no_device"}
        devices = (await (await http.get("/v1/devices")).json())["devices"]
        assert devices[0]["state"] == "no_device"
        assert "ttyNOPE" in devices[0]["reason"]


async def test_key_readable_by_others_refuses_to_start(state_dir: Path) -> None:
    config = write_config(state_dir)
    first = await spawn_daemon(config)  # auto_init_key makes the key
    assert await first.stop() == 0
    key = state_dir / "keys" / "node.ed25519"
    key.chmod(0o644)
    dp = await spawn_daemon(config, wait_ready=False)
    code = await dp.wait_exit(timeout=20)
    assert code != 0
    assert str(key) in dp.output
    assert f"chmod 600 {key}" in dp.output
    assert "Traceback" not in dp.output


async def test_missing_key_without_auto_init_is_refused(state_dir: Path) -> None:
    config = write_config(state_dir)
    config.write_text(config.read_text().replace("auto_init_key = true", "auto_init_key = false"))
    dp = await spawn_daemon(config, wait_ready=False)
    assert await dp.wait_exit(timeout=20) != 0
    assert "edge-gateway keys init" in dp.output


async def test_sigterm_lets_an_in_flight_request_finish(state_dir: Path) -> None:
    config = write_config(state_dir, '[devices.idcard]\ndriver = "samv"\nport = "sim://idcard"\n')
    dp = await spawn_daemon(config)
    async with unix_session(dp.socket_path) as http:
        body = await (await http.post("/v1/sessions")).json()
        auth = {"Authorization": f"Bearer {body['token']}"}
        # A card read takes a while (the simulated card is presented after ~0.3 s).
        read = asyncio.create_task(http.post(f"/v1/sessions/{body['id']}/factors/idcard", headers=auth))
        await asyncio.sleep(0.1)
        dp.signal(signal.SIGTERM)
        resp = await asyncio.wait_for(read, 10)
        assert resp.status == 200, await resp.text()
    assert await dp.wait_exit(timeout=10) == 0
    assert "Traceback" not in dp.output
