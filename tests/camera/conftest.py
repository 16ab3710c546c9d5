"""Camera fixtures: ffmpeg (required, with an install hint) and decoding helpers."""

from __future__ import annotations

import shutil
import subprocess

import pytest


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        pytest.fail("ffmpeg is not installed: run `apt-get install -y ffmpeg`", pytrace=False)
    return path


def decode_rgb(ffmpeg: str, data: bytes) -> bytes:
    """Decode a JPEG with ffmpeg into raw RGB24 pixels; fails the test if ffmpeg cannot."""
    result = subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-xerror",
            "-f",
            "image2pipe",
            "-c:v",
            "mjpeg",
            "-i",
            "-",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        input=data,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert not result.stderr, result.stderr.decode(errors="replace")
    return result.stdout
