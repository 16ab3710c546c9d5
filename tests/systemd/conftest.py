"""Fixtures for the packaging tests: the repository's paths and the host tools they drive."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def need(tool: str, package: str) -> str:
    """Path of a host tool; fail (not skip) with how to install it when it is missing."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not found: install it with `apt-get install -y {package}`")
    return path


@pytest.fixture(scope="session")
def repo() -> Path:
    """The checkout under test."""
    return REPO


@pytest.fixture(scope="session")
def systemd_analyze() -> str:
    """The systemd-analyze binary."""
    return need("systemd-analyze", "systemd")
