"""A real full disk for tests: a small tmpfs (needs root, as CI runs) and a ballast file to fill it."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_tmpfs(size: str = "8m") -> Iterator[Path]:
    """Mount a tmpfs of `size` on a short temp path; skipped where mounting is not allowed."""
    where = Path(tempfile.mkdtemp(prefix="egwfs-", dir="/tmp"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        shutil.rmtree(where, ignore_errors=True)


class Ballast:
    """Fills a file system to ENOSPC with one file, and gives the space back."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "ballast"

    def fill(self) -> int:
        """Write until the disk is full; returns the bytes written."""
        written = 0
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (65536, 4096, 512, 1):
                chunk = b"\0" * size
                while True:
                    try:
                        written += os.write(fd, chunk)
                    except OSError as err:
                        if err.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
