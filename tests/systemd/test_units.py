"""The unit files: clean under systemd-analyze verify, exposure <= 2.0, consistent with each other."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from .unitfile import last, parse_unit, tmpfiles_entries

UNITS = ("edge-gateway.service", "edge-gateway.socket")
MAX_EXPOSURE = 2.0


def verify_root(repo: Path, root: Path, *, stub_binaries: bool = True) -> list[str]:
    """A throwaway root holding systemd's own units, ours, and stubs at our Exec*= paths."""
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "usr/bin").mkdir()
    (root / "bin").symlink_to("usr/bin")
    unit_dir = root / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    for name in UNITS:
        shutil.copy(repo / "systemd" / name, unit_dir / name)
    service = parse_unit(repo / "systemd/edge-gateway.service")["Service"]
    if stub_binaries:
        for key in ("ExecStart", "ExecReload"):
            binary = root / service[key][-1].split()[0].lstrip("/")
            binary.parent.mkdir(parents=True, exist_ok=True)
            binary.write_text("#!/bin/sh\nexit 0\n")
            binary.chmod(0o755)
    return [f"/etc/systemd/system/{name}" for name in UNITS]


def run_verify(systemd_analyze: str, root: Path, units: list[str]) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify on the units inside `root`, nothing from the host."""
    return subprocess.run(
        [systemd_analyze, "verify", "--man=no", "--generators=no", f"--root={root}", *units],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_units_verify_without_any_warning(repo: Path, systemd_analyze: str, tmp_path: Path) -> None:
    units = verify_root(repo, tmp_path)
    result = run_verify(systemd_analyze, tmp_path, units)
    # verify exits 0 on many warnings (e.g. unknown keys): any output at all is a failure.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_verify_check_reports_a_missing_executable(repo: Path, systemd_analyze: str, tmp_path: Path) -> None:
    """The harness above is not blind: without the stubs verify names the missing binary."""
    units = verify_root(repo, tmp_path, stub_binaries=False)
    result = run_verify(systemd_analyze, tmp_path, units)
    assert "/opt/edge-gateway/venv/bin/edge-gateway is not executable" in result.stderr


def test_security_exposure_is_at_most_2(repo: Path, systemd_analyze: str) -> None:
    result = subprocess.run(
        [
            systemd_analyze,
            "security",
            "--offline=true",
            "--threshold=20",
            "--no-pager",
            str(repo / "systemd/edge-gateway.service"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SYSTEMD_COLORS": "0"},
    )
    match = re.search(r"Overall exposure level for edge-gateway\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, result.stdout
    # --threshold=20 makes systemd-analyze itself fail above 2.0.
    assert result.returncode == 0, result.stderr


def test_socket_directory_and_service_agree(repo: Path) -> None:
    """Socket, RuntimeDirectory= and tmpfiles.d must agree, or a start re-chowns the socket."""
    service = parse_unit(repo / "systemd/edge-gateway.service")
    socket = parse_unit(repo / "systemd/edge-gateway.socket")
    tmpfiles = tmpfiles_entries(repo / "systemd/edge-gateway.tmpfiles")
    user = last(service, "Service", "User")

    assert last(socket, "Socket", "ListenStream") == "/run/edge-gateway/api.sock"
    assert (last(socket, "Socket", "SocketUser"), last(socket, "Socket", "SocketGroup")) == (
        user,
        "kiosk",
    )
    assert last(socket, "Socket", "SocketMode") == "0660"
    assert last(service, "Service", "RuntimeDirectoryPreserve") == "yes"
    runtime = "/run/" + last(service, "Service", "RuntimeDirectory")
    assert tmpfiles[runtime] == (
        "d",
        last(service, "Service", "RuntimeDirectoryMode"),
        user,
        last(service, "Service", "Group"),
    )
    assert tmpfiles["/var/lib/" + last(service, "Service", "StateDirectory")] == (
        "d",
        last(service, "Service", "StateDirectoryMode"),
        user,
        user,
    )
    config_dir = "/etc/" + last(service, "Service", "ConfigurationDirectory")
    assert tmpfiles[config_dir] == (
        "d",
        last(service, "Service", "ConfigurationDirectoryMode"),
        "root",
        user,
    )
    assert "edge-gateway.socket" in service["Unit"]["Requires"]
    assert last(service, "Service", "Type") == "notify"
    assert last(service, "Service", "WatchdogSec") == "30"


# The kernel driver that registers each device class named in DeviceAllow=.
CLASS_DRIVERS = {
    "char-ttyUSB": "usbserial",
    "char-ttyACM": "cdc_acm",
    "char-video4linux": "videodev",
}
# Classes whose driver is built into the kernel, so always in /proc/devices: the 8250 UART core
# behind on-board COM ports (CONFIG_SERIAL_8250=y in Debian's and the upstream x86 defconfigs).
BUILT_IN_CLASSES = {"char-ttyS"}


def test_every_allowed_device_class_has_its_driver_preloaded(repo: Path) -> None:
    """DeviceAllow=char-X only works if X is in /proc/devices when the service starts."""
    service = parse_unit(repo / "systemd/edge-gateway.service")["Service"]
    classes = {entry.split()[0] for entry in service["DeviceAllow"] if entry.startswith("char-")}
    modules = {
        line.strip()
        for line in (repo / "systemd/edge-gateway.modules-load").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert classes == set(CLASS_DRIVERS) | BUILT_IN_CLASSES
    assert {CLASS_DRIVERS[name] for name in classes - BUILT_IN_CLASSES} <= modules


def test_the_serial_and_camera_classes_a_kiosk_uses_are_allowed(repo: Path) -> None:
    """On-board COM ports (ttyS), USB serial adapters, CDC-ACM readers and cameras, read-write."""
    service = parse_unit(repo / "systemd/edge-gateway.service")["Service"]
    allowed = dict(entry.split() for entry in service["DeviceAllow"])
    for name in ("char-ttyS", "char-ttyUSB", "char-ttyACM", "char-video4linux"):
        assert allowed.get(name) == "rw", name
    assert last({"Service": service}, "Service", "DevicePolicy") == "closed"


def test_config_failures_do_not_restart_but_crashes_do(repo: Path) -> None:
    """Exit status 2 (config or a file it names) is final; anything else restarts forever."""
    from gateway.startup import EXIT_CONFIG, EXIT_FAILURE

    service = parse_unit(repo / "systemd/edge-gateway.service")
    assert last(service, "Service", "Restart") == "on-failure"
    prevent = last(service, "Service", "RestartPreventExitStatus").split()
    assert str(EXIT_CONFIG) in prevent
    assert str(EXIT_FAILURE) not in prevent
    assert last(service, "Unit", "StartLimitIntervalSec") == "0"


def test_log_levels_reach_the_journal_and_files_are_limited(repo: Path) -> None:
    service = parse_unit(repo / "systemd/edge-gateway.service")
    assert last(service, "Service", "SyslogLevelPrefix") == "yes"
    assert last(service, "Service", "StandardOutput") == "journal"
    assert last(service, "Service", "StandardError") == "journal"
    assert 8192 <= int(last(service, "Service", "LimitNOFILE")) <= 65536
