"""Fixtures for the packaging tests: the repository, host tools, and one install.sh run."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SITE_CONFIG = '[node]\nid = "edge-test-01"\nstate_dir = "/var/lib/edge-gateway"\n'


@dataclass(frozen=True)
class Installed:
    """A root laid out by install.sh, and what the script printed."""

    root: Path
    output: str


def need(tool: str, package: str) -> str:
    """Path of a host tool; fail (not skip) with how to install it when it is missing."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not found: install it with `apt-get install -y {package}`")
    return path


def run_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one of scripts/*.sh; creating the venv and pip make install.sh take ~10 s.

    Under a hardened umask (077), as a technician's root shell may have: the scripts must not
    depend on a friendly one.
    """
    for tool in ("systemd-sysusers", "systemd-tmpfiles", "systemctl"):
        need(tool, "systemd")
    return subprocess.run(
        ["bash", "-c", 'umask 077 && exec bash "$0" "$@"', str(REPO / "scripts" / name), *args],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )


@pytest.fixture(scope="session")
def repo() -> Path:
    """The checkout under test."""
    return REPO


@pytest.fixture(scope="session")
def systemd_analyze() -> str:
    """The systemd-analyze binary."""
    return need("systemd-analyze", "systemd")


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """One `install.sh --pcsc` into a fresh root, shared by the tests that only read it."""
    base = tmp_path_factory.mktemp("install")
    config = base / "site.toml"
    config.write_text(SITE_CONFIG)
    root = base / "root"
    result = run_script("install.sh", "--root", str(root), "--pcsc", "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    return Installed(root, result.stdout)
