"""scripts/install.sh and uninstall.sh in a throwaway root: the layout they promise, and back."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

from .conftest import REPO, SITE_CONFIG, Installed, run_script

UNIT_DIR = "etc/systemd/system"


def passwd(root: Path, name: str) -> dict[str, list[str]]:
    """Entries of root's /etc/passwd or /etc/group, keyed by name."""
    lines = (root / "etc" / name).read_text().splitlines()
    return {line.split(":")[0]: line.split(":") for line in lines}


def mode_owner(path: Path) -> tuple[int, int, int]:
    """Permission bits, uid and gid of a path (not following symlinks)."""
    st = path.lstat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def test_install_lays_out_users_directories_units_and_config(installed: Installed) -> None:
    root = installed.root
    users, groups = passwd(root, "passwd"), passwd(root, "group")
    uid, gid = int(users["edge-gateway"][2]), int(users["edge-gateway"][3])
    assert int(groups["edge-gateway"][2]) == gid
    assert users["edge-gateway"][5] == "/var/lib/edge-gateway"
    assert users["edge-gateway"][6].endswith("nologin")
    assert "kiosk" in groups
    for device_group in ("dialout", "video"):
        assert "edge-gateway" in groups[device_group][3].split(",")

    assert mode_owner(root / "etc/edge-gateway") == (0o750, 0, gid)
    assert mode_owner(root / "etc/edge-gateway/gateway.toml") == (0o640, 0, gid)
    assert (root / "etc/edge-gateway/gateway.toml").read_text() == SITE_CONFIG
    assert mode_owner(root / "var/lib/edge-gateway") == (0o700, uid, gid)
    assert mode_owner(root / "var/lib/edge-gateway/keys") == (0o700, uid, gid)
    assert mode_owner(root / "run/edge-gateway") == (0o751, uid, gid)

    for name, source in (
        (f"{UNIT_DIR}/edge-gateway.service", "systemd/edge-gateway.service"),
        (f"{UNIT_DIR}/edge-gateway.socket", "systemd/edge-gateway.socket"),
        ("etc/sysusers.d/edge-gateway.conf", "systemd/edge-gateway.sysusers"),
        ("etc/tmpfiles.d/edge-gateway.conf", "systemd/edge-gateway.tmpfiles"),
        ("etc/modules-load.d/edge-gateway.conf", "systemd/edge-gateway.modules-load"),
        ("opt/edge-gateway/doc/install.md", "docs/install.md"),
    ):
        assert (root / name).read_bytes() == (REPO / source).read_bytes(), name
        assert mode_owner(root / name) == (0o644, 0, 0), name
    # Enabled offline: the [Install] symlinks exist under the root only.
    wants = {
        "multi-user.target.wants/edge-gateway.service": "/etc/systemd/system/edge-gateway.service",
        "sockets.target.wants/edge-gateway.socket": "/etc/systemd/system/edge-gateway.socket",
    }
    for link, target in wants.items():
        assert str((root / UNIT_DIR / link).readlink()) == target


def test_install_builds_the_venv_the_unit_runs(installed: Installed) -> None:
    venv = installed.root / "opt/edge-gateway/venv"
    assert (venv / "bin/edge-gateway").is_file()
    probe = (
        "import importlib.metadata as m, gateway, drivers, smartcard; "
        "d = m.distribution('edge-gateway'); "
        "print(d.version, [e.value for e in d.entry_points if e.name == 'edge-gateway'])"
    )
    result = subprocess.run(
        [str(venv / "bin/python"), "-c", probe],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("['gateway.cli:main']")
    # The venv is not the checkout: an editable install would break once the checkout moves.
    assert str(REPO) not in (venv / "bin/edge-gateway").read_text()


def other_read(path: Path) -> int:
    """The permission bits "others" need to use a file (read) or directory (list and enter)."""
    return 0o005 if path.is_dir() else 0o004


def test_the_service_user_can_read_the_venv(installed: Installed) -> None:
    """install.sh ran under umask 077; the venv must still be readable by user edge-gateway."""
    unreadable = [
        path
        for path in (installed.root / "opt/edge-gateway").rglob("*")
        if not path.is_symlink() and path.stat().st_mode & (need := other_read(path)) != need
    ]
    assert unreadable == []


def test_install_prints_the_live_only_steps_instead_of_running_them(installed: Installed) -> None:
    would = [line for line in installed.output.splitlines() if "would run on the live system" in line]
    assert any(
        "runuser -u edge-gateway -- /opt/edge-gateway/venv/bin/edge-gateway keys init "
        "-c /etc/edge-gateway/gateway.toml" in line
        for line in would
    )
    assert any("systemctl enable --now edge-gateway.socket edge-gateway.service" in line for line in would)


def test_second_install_keeps_the_config(installed: Installed, tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text('[node]\nid = "must-not-replace"\n')
    result = run_script("install.sh", "--root", str(installed.root), "--config", str(other))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (installed.root / "etc/edge-gateway/gateway.toml").read_text() == SITE_CONFIG
    assert "exists, left as it is" in result.stdout
    users = passwd(installed.root, "passwd")
    assert list(users).count("edge-gateway") == 1


def test_install_without_a_config_fails_before_changing_anything(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = run_script("install.sh", "--root", str(root), "--config", str(tmp_path / "missing.toml"))
    assert result.returncode == 1
    assert "no config to install" in result.stderr
    assert list(root.iterdir()) == []


def test_uninstall_keeps_config_and_state_unless_purged(installed: Installed, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(installed.root, root, symlinks=True)
    (root / "var/lib/edge-gateway/keys/node.ed25519").write_bytes(b"key")

    result = run_script("uninstall.sh", "--root", str(root))
    assert result.returncode == 0, result.stdout + result.stderr
    for gone in (
        f"{UNIT_DIR}/edge-gateway.service",
        f"{UNIT_DIR}/edge-gateway.socket",
        f"{UNIT_DIR}/multi-user.target.wants/edge-gateway.service",
        f"{UNIT_DIR}/sockets.target.wants/edge-gateway.socket",
        "etc/sysusers.d/edge-gateway.conf",
        "etc/tmpfiles.d/edge-gateway.conf",
        "etc/modules-load.d/edge-gateway.conf",
        "opt/edge-gateway",
        "run/edge-gateway",
    ):
        assert not (root / gone).exists() and not (root / gone).is_symlink(), gone
    assert (root / "etc/edge-gateway/gateway.toml").read_text() == SITE_CONFIG
    assert (root / "var/lib/edge-gateway/keys/node.ed25519").read_bytes() == b"key"
    assert "edge-gateway" in passwd(root, "passwd")

    again = run_script("uninstall.sh", "--root", str(root))
    assert again.returncode == 0, again.stdout + again.stderr

    purged = run_script("uninstall.sh", "--root", str(root), "--purge")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert not (root / "etc/edge-gateway").exists()
    assert not (root / "var/lib/edge-gateway").exists()


def test_a_wheelhouse_without_the_build_backend_is_refused_before_changing_anything(tmp_path: Path) -> None:
    root, wheels = tmp_path / "root", tmp_path / "wheels"
    wheels.mkdir()
    result = run_script("install.sh", "--root", str(root), "--wheels", str(wheels))
    assert result.returncode == 1
    assert f"wheelhouse {wheels} has no setuptools wheel" in result.stderr
    assert list(root.iterdir()) == []

    (wheels / "setuptools-80.0.0-py3-none-any.whl").write_bytes(b"")
    result = run_script("install.sh", "--root", str(root), "--pcsc", "--wheels", str(wheels))
    assert result.returncode == 1
    assert "has no pyscard wheel (--pcsc)" in result.stderr
    assert list(root.iterdir()) == []


def test_a_failed_venv_build_is_removed_and_a_leftover_one_rebuilt(tmp_path: Path) -> None:
    root, wheels = tmp_path / "root", tmp_path / "wheels"
    wheels.mkdir()
    # Passes the early check, but is no wheel: pip fails half-way through the venv.
    (wheels / "setuptools-80.0.0-py3-none-any.whl").write_bytes(b"not a zip")
    config = tmp_path / "site.toml"
    config.write_text(SITE_CONFIG)
    failed = run_script("install.sh", "--root", str(root), "--config", str(config), "--wheels", str(wheels))
    assert failed.returncode == 1
    assert "pip could not install edge-gateway" in failed.stderr
    assert "removed the unfinished venv" in failed.stderr
    assert not (root / "opt/edge-gateway/venv").exists()

    # A venv left by an older, interrupted run (no completion marker) is built again.
    leftover = root / "opt/edge-gateway/venv/bin"
    leftover.mkdir(parents=True)
    (leftover / "python").symlink_to("/usr/bin/python3")
    again = run_script("install.sh", "--root", str(root), "--config", str(config))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "left unfinished by an earlier run; building it again" in again.stdout
    assert (root / "opt/edge-gateway/venv/.edge-gateway-complete").is_file()
    assert (root / "opt/edge-gateway/venv/bin/edge-gateway").is_file()


def test_uninstall_stops_the_socket_before_the_service(installed: Installed, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(installed.root, root, symlinks=True)
    result = run_script("uninstall.sh", "--root", str(root))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "systemctl disable --now edge-gateway.socket edge-gateway.service" in result.stdout
