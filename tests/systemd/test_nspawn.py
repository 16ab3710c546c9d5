"""A fresh install under a real systemd: Debian 12 booted in systemd-nspawn, installed from a
wheelhouse exactly as docs/install.md says, then driven as a kiosk, a technician and a hang would.

Slow (about 2.5 minutes warm, plus about a minute to debootstrap the cached root the first time):
marked `slow`, run by `make check` / .ci/run. Needs root, debootstrap and systemd-nspawn
(scripts/system-deps.sh installs them). The tests run in order on one box; each leaves the
service running with the kiosk config unless it says otherwise.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shlex
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO, need
from .nspawn import Box, booted, cached_root, until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CONF = "/etc/edge-gateway/gateway.toml"
SOCK = "/run/edge-gateway/api.sock"
CHECKOUT = "/root/edge-gateway"
WHEELS = "/root/wheels"
KIOSK_USER = "kiosk-app"
UNIT = "edge-gateway.service"
SOCKET = "edge-gateway.socket"
# Where an uninstall may leave traces by design: the kept user and group, and volatile state.
SNAPSHOT_PRUNE = (
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/tmp",
    "/var/tmp",
    "/var/log",
    "/var/cache",
    "/var/lib/systemd",
    CHECKOUT,
    WHEELS,
)
KEPT_ACCOUNT_FILES = re.compile(r"^/etc/(passwd|group|shadow|gshadow)-$|^/etc/\.pwd\.lock$")


def recipe_block() -> str:
    """The wheelhouse commands of docs/install.md, the block after its `wheelhouse recipe` marker."""
    text = (REPO / "docs/install.md").read_text()
    after = text.split("<!-- wheelhouse recipe", 1)[1]
    match = re.search(r"```sh\n(.*?)```", after, re.S)
    assert match, "docs/install.md: no ```sh block after the wheelhouse recipe marker"
    return match.group(1)


def copy_checkout(target: Path) -> None:
    """The release checkout as a technician would carry it: the tree without VCS and caches."""
    skip = {".git", ".venv", "build", "dist", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if any(part in skip or part.endswith(".egg-info") for part in parts):
            return None
        return info

    target.mkdir(parents=True)
    archive = target.parent / "checkout.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(REPO, arcname=".", filter=keep)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="tar")
    archive.unlink()


class FaceHandler(BaseHTTPRequestHandler):
    """The vendor face-compare service: POST /compare with base64 probe and reference, a match."""

    calls = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            request = json.loads(body)
            base64.b64decode(request["probe"], validate=True)
            base64.b64decode(request["reference"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            self.send_response(400)
            self.end_headers()
            return
        FaceHandler.calls += 1
        answer = json.dumps({"score": 0.93, "liveness": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads the calls, not the access log."""


@dataclass
class Site:
    """The booted, installed box and what the test learned while setting it up."""

    box: Box
    install: subprocess.CompletedProcess[str]
    before: set[str]
    face_port: int
    timings: dict[str, float]


def kiosk_config(face_port: int, max_sessions: int = 200) -> str:
    """The technician's edit: simulated devices, the local face service, one device the unit's
    device policy refuses (/dev/net/tun: misc class, not in DeviceAllow=)."""
    return f"""
[node]
id = "edge-nspawn-01"
state_dir = "/var/lib/edge-gateway"
auto_init_key = false

[api]
socket = "{SOCK}"
socket_mode = "0660"
max_sessions = {max_sessions}

[log]
level = "info"

[uplink]
key_file = "/var/lib/edge-gateway/keys/node.ed25519"

[auth.face]
verifier = "http"
url = "http://127.0.0.1:{face_port}/compare"
threshold = 0.8
require_liveness = true

[devices.idcard]
driver = "samv"
port = "sim://idcard"
baudrate = 115200

[devices.printer]
driver = "escpos"
port = "sim://printer"
baudrate = 115200
sim_print_time_s = 0.2

[devices.camera]
driver = "http"
url = "sim://camera"

[devices.tun]
driver = "escpos"
port = "/dev/net/tun"
"""


def snapshot(box: Box) -> set[str]:
    """Every path on the container's root file system outside the volatile trees."""
    prune = " -o ".join(f"-path {shlex.quote(p)}" for p in SNAPSHOT_PRUNE)
    out = box.sh(f"find / -xdev \\( {prune} \\) -prune -o -print", timeout=120).stdout
    return set(out.splitlines())


def api(box: Box, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    """One request over the API socket from the kiosk app's account (group kiosk), with curl."""
    args = ["curl", "-s", "-o", "/tmp/kiosk-answer", "-w", "%{http_code}", "--max-time", "60"]
    args += ["--unix-socket", SOCK, "-X", method, "-H", "Content-Type: application/json"]
    if token:
        args += ["-H", f"Authorization: Bearer {token}"]
    if body is not None:
        args += ["-d", json.dumps(body)]
    args.append(f"http://localhost{path}")
    result = box.sh(
        f"runuser -u {KIOSK_USER} -- {shlex.join(args)}; echo; "
        "cat /tmp/kiosk-answer; rm -f /tmp/kiosk-answer",
        timeout=90,
    )
    code, _, text = result.stdout.partition("\n")
    return int(code), json.loads(text) if text.strip() else None


def active(box: Box, unit: str) -> str:
    return box.sh(f"systemctl is-active {unit}", check=False).stdout.strip()


def daemon_lines(box: Box, *filters: str, cursor: str | None = None) -> list[dict[str, Any]]:
    """What the daemon itself wrote to the journal (not systemd's lines about it), parsed."""
    entries = box.journal(f"_SYSTEMD_UNIT={UNIT}", "_TRANSPORT=stdout", *filters, cursor=cursor)
    return [
        {"priority": int(e["PRIORITY"]), **json.loads(e["MESSAGE"])}
        for e in entries
        if e["MESSAGE"].startswith("{")
    ]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Boot the cached Debian 12 root, build the wheelhouse by the docs' recipe, install."""
    if os.geteuid() != 0:
        pytest.fail("the nspawn install test needs root (it boots a container): run it as root, as CI does")
    for tool, package in (("debootstrap", "debootstrap"), ("systemd-nspawn", "systemd-container")):
        need(tool, package)
    timings: dict[str, float] = {}
    base = tmp_path_factory.mktemp("nspawn")

    started = time.monotonic()
    root, made = cached_root()
    timings["debootstrap" if made else "cached root"] = time.monotonic() - started

    started = time.monotonic()
    checkout = base / "edge-gateway"
    copy_checkout(checkout)
    home = base / "home"
    home.mkdir()
    # The connected Debian 12 machine: Debian's python3 first on PATH, a fresh home for the venv.
    env = {**os.environ, "HOME": str(home), "PATH": f"/usr/bin:/bin:{os.environ.get('PATH', '')}"}
    env.pop("PYTHONPATH", None)
    recipe = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", recipe_block()],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert recipe.returncode == 0, recipe.stdout + recipe.stderr
    wheels = checkout / "wheels"
    timings["wheelhouse"] = time.monotonic() - started
    # The checkout travels without the build the recipe left in it.
    subprocess.run(["rm", "-rf", str(checkout / "build"), *map(str, checkout.glob("*.egg-info"))], check=True)
    wheelhouse = base / "wheels"
    wheels.rename(wheelhouse)

    server = ThreadingHTTPServer(("127.0.0.1", 0), FaceHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    name = f"egw-test-{os.getpid()}"
    started = time.monotonic()
    try:
        with booted(root, name, {checkout: CHECKOUT, wheelhouse: WHEELS}, base / "nspawn.log") as box:
            timings["boot"] = time.monotonic() - started
            # The kiosk front-end's account, made before the snapshot: it is not ours to remove.
            box.sh(f"useradd --no-create-home --shell /usr/sbin/nologin {KIOSK_USER}")
            before = snapshot(box)
            started = time.monotonic()
            command = f"cd {CHECKOUT} && ./scripts/install.sh --wheels {WHEELS}"
            install = box.sh(command, check=False, timeout=600)
            timings["install.sh"] = time.monotonic() - started
            box.sh(f"usermod -aG kiosk {KIOSK_USER}")
            yield Site(box, install, before, server.server_address[1], timings)
    finally:
        server.shutdown()
        server.server_close()
        # Shown with -s (and kept in the captured output otherwise): where the minutes go.
        print("\nnspawn timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))


def test_install_ends_with_the_service_running_and_says_what_is_left(site: Site) -> None:
    box, out = site.box, site.install.stdout
    assert site.install.returncode == 0, f"{out}\n{site.install.stderr}"
    assert "==> done: the service runs" in out
    left = out.split("==> left to do", 1)[1]
    assert "/etc/edge-gateway/cloud.jwk" in left
    assert "uplink.broker, ca_file, client_cert and client_key" in left
    assert "keys show --public" in left
    assert (active(box, SOCKET), active(box, UNIT)) == ("active", "active")
    # Degraded, clearly: the example's devices are not plugged in here.
    code, health = api(box, "GET", "/v1/health")
    assert (code, health["status"]) == (200, "degraded")
    assert set(health["checks"]["devices"]["down"]) == {"idcard", "printer", "cardreader", "camera"}
    # diag shows the same list: the uplink to connect, and a config the daemon accepts.
    diag = f"/opt/edge-gateway/venv/bin/edge-gateway diag -c {CONF} --json --only config broker"
    report = json.loads(box.sh(diag, check=False).stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["config"]["status"] == "pass"
    assert checks["broker"]["status"] == "warn"
    assert "cloud_keys" in checks["broker"]["fix"]
    # Nothing of the install outside its own places: no pip cache, a complete venv.
    assert box.sh("test -e /root/.cache/pip", check=False).returncode == 1
    assert box.sh("test -e /opt/edge-gateway/venv/.edge-gateway-complete", check=False).returncode == 0


def test_the_live_unit_allows_the_kiosk_device_classes(site: Site) -> None:
    allowed = site.box.show(UNIT, "DeviceAllow", "DevicePolicy", "LimitNOFILE", "RestartPreventExitStatus")
    # systemctl show repeats the key per entry; the dict keeps the last, so ask for the raw list too.
    raw = site.box.sh(f"systemctl show {UNIT} -p DeviceAllow").stdout
    for device_class in ("char-ttyS", "char-ttyUSB", "char-ttyACM", "char-video4linux"):
        assert f"DeviceAllow={device_class} rw" in raw
    assert allowed["DevicePolicy"] == "closed"
    assert allowed["LimitNOFILE"] == "16384"
    assert allowed["RestartPreventExitStatus"] == "2"


def test_stop_exits_0_and_leaves_the_socket_listening(site: Site) -> None:
    box = site.box
    box.sh(f"systemctl stop {UNIT}")
    props = box.show(UNIT, "ExecMainStatus", "Result", "ActiveState")
    assert props == {"ExecMainStatus": "0", "Result": "success", "ActiveState": "inactive"}
    assert active(box, SOCKET) == "active"


def test_first_connection_starts_the_service_and_a_kiosk_visit_works(site: Site) -> None:
    box = site.box
    box.write(CONF, kiosk_config(site.face_port))
    # /dev/net/tun: mode 0666 here, so only the unit's device policy can refuse it (EPERM).
    box.sh("chmod 0666 /dev/net/tun")
    assert (active(box, SOCKET), active(box, UNIT)) == ("active", "inactive")

    code, health = api(box, "GET", "/v1/health")
    assert code == 200, health
    assert active(box, UNIT) == "active"
    # Only group kiosk reaches the socket.
    refused = box.sh(
        f"runuser -u nobody -- curl -s --unix-socket {SOCK} http://localhost/v1/health", check=False
    )
    assert refused.returncode == 7, refused

    code, session = api(box, "POST", "/v1/sessions", {"kind": "citizen"})
    assert code == 201, session
    sid, token = session["id"], session["token"]
    code, idcard = api(box, "POST", f"/v1/sessions/{sid}/factors/idcard", token=token)
    assert code == 200, idcard
    assert idcard["assurance"]["level"] == "single"
    code, face = api(box, "POST", f"/v1/sessions/{sid}/factors/face", token=token)
    assert code == 200, face
    assert face["assurance"]["level"] == "two_factor"
    assert FaceHandler.calls >= 1
    code, tx = api(
        box,
        "POST",
        f"/v1/sessions/{sid}/transactions",
        {"service": "residence-certificate", "data": {"copies": 1}},
        token=token,
    )
    assert code in (200, 201, 202), tx
    assert tx["state"] == "queued"
    receipt = {"lines": ["Residence certificate"]}
    code, job = api(box, "POST", f"/v1/sessions/{sid}/print", receipt, token=token)
    assert code == 202, job

    def job_done() -> dict[str, Any] | None:
        status, body = api(box, "GET", f"/v1/sessions/{sid}/jobs/{job['job']}", token=token)
        assert status == 200, body
        return body if body["state"] in ("done", "failed", "expired", "cancelled") else None

    assert until(job_done, 60, "the receipt to print")["state"] == "done"
    code, _ = api(box, "DELETE", f"/v1/sessions/{sid}", token=token)
    assert code == 204

    # The device the unit's policy refuses: EPERM, and the reason names the policy and the class.
    code, devices = api(box, "GET", "/v1/devices")
    tun = next(d for d in devices["devices"] if d["name"] == "tun")
    assert "Operation not permitted" in tun["reason"], tun
    assert "device policy" in tun["reason"]
    assert "DeviceAllow=char-misc rw" in tun["reason"]


def test_warnings_reach_the_journal_at_their_priority(site: Site) -> None:
    box = site.box
    cursor = box.cursor()
    box.sh(f"systemctl reload {UNIT}")
    until(lambda: "reloaded" in box.show(UNIT, "StatusText")["StatusText"], 30, "the reload")
    shown = box.sh(f"journalctl --no-pager -b -u {UNIT} -p warning -o cat").stdout
    events = [json.loads(line)["event"] for line in shown.splitlines() if line.startswith("{")]
    assert "reloaded" in events, shown
    assert "ready" not in events  # an info line: the priority is per line, not all raised
    reloaded = until(
        lambda: [line for line in daemon_lines(box, cursor=cursor) if line["event"] == "reloaded"],
        30,
        f"the reloaded line in the journal after {cursor}: {box.journal(f'_SYSTEMD_UNIT={UNIT}')[-3:]}",
    )
    assert reloaded[0]["priority"] == 4
    assert all(line["priority"] == 6 for line in daemon_lines(box) if line["level"] == "info")


def test_reload_applies_a_live_key(site: Site) -> None:
    box = site.box
    pid = box.show(UNIT, "MainPID")["MainPID"]
    box.write(CONF, kiosk_config(site.face_port, max_sessions=150))
    box.sh(f"systemctl reload {UNIT}")
    until(lambda: "1 applied" in box.show(UNIT, "StatusText")["StatusText"], 30, "the reload to apply")
    code, status = api(box, "GET", "/v1/status")
    assert code == 200
    assert status["sessions"]["max"] == 150
    assert box.show(UNIT, "MainPID")["MainPID"] == pid


def test_a_broken_config_on_reload_is_refused_and_the_service_stays_up(site: Site) -> None:
    box = site.box
    pid = box.show(UNIT, "MainPID")["MainPID"]
    cursor = box.cursor()
    box.write(CONF, "[api]\nmax_sessions = 'lots'\n")
    try:
        box.sh(f"systemctl reload {UNIT}")
        rejected = until(
            lambda: [line for line in daemon_lines(box, cursor=cursor) if line["event"] == "reload_rejected"],
            30,
            "reload_rejected in the journal",
        )
        assert rejected[0]["priority"] == 3
        assert "api.max_sessions" in rejected[0]["error"]
        assert active(box, UNIT) == "active"
        assert box.show(UNIT, "MainPID")["MainPID"] == pid
        code, status = api(box, "GET", "/v1/status")
        assert (code, status["sessions"]["max"]) == (200, 150)
    finally:
        box.write(CONF, kiosk_config(site.face_port, max_sessions=150))


def test_the_watchdog_restarts_a_hung_daemon_and_a_waiting_request_is_answered(site: Site) -> None:
    box = site.box
    before = box.show(UNIT, "MainPID", "NRestarts")
    assert before["NRestarts"] == "0"
    code, old = api(box, "GET", "/v1/status")
    assert code == 200
    box.sh(f"kill -STOP {before['MainPID']}")
    # A kiosk request during the hang: it waits in the socket's queue for the next process.
    box.sh(
        f"runuser -u {KIOSK_USER} -- curl -s --max-time 120 --unix-socket {SOCK} "
        "http://localhost/v1/status > /tmp/during-hang.json 2>&1 &"
    )
    until(lambda: box.show(UNIT, "NRestarts")["NRestarts"] == "1", 90, "a watchdog restart")
    until(lambda: active(box, UNIT) == "active", 30, "the restarted service")
    assert box.show(UNIT, "MainPID")["MainPID"] != before["MainPID"]
    answered = until(
        lambda: box.sh("cat /tmp/during-hang.json").stdout.strip() or None,
        60,
        "the request sent during the hang",
    )
    assert json.loads(answered)["started_at"] > old["started_at"]
    watchdog = box.journal("_PID=1", f"UNIT={UNIT}")
    assert any("Watchdog timeout" in e["MESSAGE"] for e in watchdog)


def test_a_broken_config_at_start_is_one_line_and_no_restart_loop(site: Site) -> None:
    box = site.box
    broken = kiosk_config(site.face_port).replace(
        "[uplink]\n", '[uplink]\ncloud_keys = ["/etc/edge-gateway/cloud.jwk"]\n'
    )
    box.write(CONF, broken)
    try:
        failed = box.sh(f"systemctl restart {UNIT}", check=False)
        assert failed.returncode != 0
        props = box.show(UNIT, "ActiveState", "ExecMainStatus", "Result", "InvocationID", "NRestarts")
        outcome = (props["ActiveState"], props["ExecMainStatus"], props["Result"], props["NRestarts"])
        # NRestarts counts automatic restarts since the manual one: none.
        assert outcome == ("failed", "2", "exit-code", "0")
        time.sleep(12)  # over twice RestartSec=5s: a restart loop would have started by now
        after = box.show(UNIT, "ActiveState", "NRestarts", "InvocationID")
        same = {"ActiveState": "failed", "NRestarts": "0", "InvocationID": props["InvocationID"]}
        assert after == same
        lines = box.journal(f"_SYSTEMD_INVOCATION_ID={props['InvocationID']}", "_TRANSPORT=stdout")
        assert len(lines) == 1, lines
        assert lines[0]["PRIORITY"] == "3"
        record = json.loads(lines[0]["MESSAGE"])
        assert record["event"] == "startup_failed"
        assert (record["key"], record["path"]) == ("uplink.cloud_keys", "/etc/edge-gateway/cloud.jwk")
        assert "copy the cloud's public key" in record["fix"]

        # A file that is there but unusable ends the same way: a key the daemon cannot read.
        box.write("/etc/edge-gateway/cloud.jwk", '{"kty": "OKP"}', mode="0600", group="root")
        assert box.sh(f"systemctl restart {UNIT}", check=False).returncode != 0
        props = box.show(UNIT, "ExecMainStatus", "InvocationID", "NRestarts")
        assert (props["ExecMainStatus"], props["NRestarts"]) == ("2", "0")
        lines = box.journal(f"_SYSTEMD_INVOCATION_ID={props['InvocationID']}", "_TRANSPORT=stdout")
        assert len(lines) == 1, lines
        record = json.loads(lines[0]["MESSAGE"])
        assert record["key"] == "uplink.cloud_keys"
        assert "not readable by uid" in record["error"]
        assert "chgrp edge-gateway /etc/edge-gateway/cloud.jwk" in record["fix"]
    finally:
        box.sh("rm -f /etc/edge-gateway/cloud.jwk")
        box.write(CONF, kiosk_config(site.face_port))
    box.sh(f"systemctl restart {UNIT}")
    assert active(box, UNIT) == "active"


def test_installing_again_keeps_the_config_and_restarts_the_daemon(site: Site) -> None:
    box = site.box
    pid = box.show(UNIT, "MainPID")["MainPID"]
    config = box.sh(f"cat {CONF}").stdout
    again = box.sh(f"cd {CHECKOUT} && ./scripts/install.sh --wheels {WHEELS}", check=False, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "venv exists, upgrading edge-gateway in it" in again.stdout
    assert "restarted the running daemon on the new code" in again.stdout
    assert box.sh(f"cat {CONF}").stdout == config
    assert active(box, UNIT) == "active"
    assert box.show(UNIT, "MainPID")["MainPID"] != pid
    code, status = api(box, "GET", "/v1/status")
    assert (code, status["node"]) == (200, "edge-nspawn-01")


def test_an_install_whose_service_cannot_start_shows_the_line_and_the_fix(site: Site) -> None:
    box = site.box
    broken = kiosk_config(site.face_port).replace(
        "[uplink]\n", '[uplink]\ncloud_keys = ["/etc/edge-gateway/cloud.jwk"]\n'
    )
    box.write(CONF, broken)
    try:
        result = box.sh(f"cd {CHECKOUT} && ./scripts/install.sh --wheels {WHEELS}", check=False, timeout=600)
        assert result.returncode == 1, result.stdout + result.stderr
        shown = [line.strip() for line in result.stdout.splitlines() if '"startup_failed"' in line]
        assert len(shown) == 1, result.stdout
        assert json.loads(shown[0])["key"] == "uplink.cloud_keys"
        left = result.stdout.split("==> left to do", 1)[1]
        assert "fix uplink.cloud_keys: /etc/edge-gateway/cloud.jwk: the cloud's public key is missing" in left
        assert "edge-gateway.service did not start" in result.stderr
        assert "Traceback" not in result.stdout + result.stderr
    finally:
        box.write(CONF, kiosk_config(site.face_port))
    box.sh(f"systemctl restart {UNIT}")
    assert active(box, UNIT) == "active"


def test_uninstall_and_purge_leave_nothing_behind(site: Site) -> None:
    box = site.box
    assert active(box, UNIT) == "active"
    cursor = box.cursor()
    # A kiosk app keeps connecting while the technician uninstalls: with the socket stopped
    # first, none of its connections may start the service again.
    box.sh(
        f"(for i in $(seq 1 400); do runuser -u {KIOSK_USER} -- curl -s --max-time 2 "
        f"--unix-socket {SOCK} http://localhost/v1/health > /dev/null; sleep 0.05; done) "
        "> /dev/null 2>&1 & echo $! > /tmp/kiosk-loop"
    )
    time.sleep(1)
    try:
        result = box.sh(f"cd {CHECKOUT} && ./scripts/uninstall.sh --purge", check=False, timeout=120)
    finally:
        box.sh("kill $(cat /tmp/kiosk-loop) 2>/dev/null; rm -f /tmp/kiosk-loop", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    started_again = [
        e["MESSAGE"]
        for e in box.journal("_PID=1", cursor=cursor)
        if e.get("UNIT") == UNIT and e["MESSAGE"].startswith(("Starting", "Started"))
    ]
    assert started_again == []
    assert box.show(UNIT, "LoadState")["LoadState"] == "not-found"
    assert box.show(SOCKET, "LoadState")["LoadState"] == "not-found"
    assert box.sh("test -e /run/edge-gateway", check=False).returncode == 1
    assert box.sh("pgrep -u edge-gateway", check=False).returncode == 1

    after = snapshot(box)
    added = {p for p in after - site.before if not KEPT_ACCOUNT_FILES.match(p)}
    assert added == set()
    assert site.before - after == set()
    # Kept on purpose (docs/install.md): the service user and the kiosk group.
    assert box.sh("id -u edge-gateway && getent group kiosk", check=False).returncode == 0
