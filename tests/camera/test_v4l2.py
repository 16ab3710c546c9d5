"""V4L2 camera through the real ffmpeg capture path, with lavfi's testsrc in place of /dev/video0."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from drivers.base import DeviceState
from drivers.camera import CameraNotFound, CameraTimeout, CaptureFailed, FrameTooLarge, V4l2Camera, jpeg
from tests.camera.conftest import decode_rgb

TESTSRC = ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=5"]


async def test_captures_a_frame_through_ffmpeg(ffmpeg: str) -> None:
    cam = V4l2Camera("camera", ffmpeg_input=TESTSRC, timeout=20)
    await cam.start()
    try:
        assert cam.status.state is DeviceState.ONLINE
        frame = await cam.capture()
    finally:
        await cam.close()
    assert (frame.width, frame.height) == (320, 240)
    assert jpeg.inspect(frame.jpeg) == (320, 240)
    assert len(decode_rgb(ffmpeg, frame.jpeg)) == 320 * 240 * 3
    assert cam.status.last_success_at is not None


async def test_missing_device_node_is_no_device(tmp_path: Path, ffmpeg: str) -> None:
    node = tmp_path / "video7"
    cam = V4l2Camera("camera", str(node))
    await cam.start()
    assert cam.status.state is DeviceState.NO_DEVICE
    assert str(node) in cam.status.reason
    with pytest.raises(CameraNotFound, match="missing") as info:
        await cam.capture(timeout=5)
    assert info.value.state is DeviceState.NO_DEVICE
    node.write_bytes(b"")  # present, but not a character device
    with pytest.raises(CameraNotFound, match="not a character device"):
        await cam.capture(timeout=5)
    assert (await cam.probe()).state is DeviceState.NO_DEVICE
    await cam.close()


async def test_missing_ffmpeg_is_no_device() -> None:
    cam = V4l2Camera("camera", ffmpeg_input=TESTSRC, ffmpeg="ffmpeg-not-installed-here")
    await cam.start()
    assert cam.status.state is DeviceState.NO_DEVICE
    assert "apt-get install -y ffmpeg" in cam.status.reason
    await cam.close()


async def test_ffmpeg_failure_is_reported(ffmpeg: str) -> None:
    cam = V4l2Camera("camera", ffmpeg_input=["-f", "lavfi", "-i", "nosuchsource"])
    await cam.start()
    with pytest.raises(CaptureFailed, match="ffmpeg exited") as info:
        await cam.capture(timeout=20)
    assert info.value.code != 0
    await cam.close()


async def test_frame_over_the_limit_stops_reading(ffmpeg: str) -> None:
    cam = V4l2Camera("camera", ffmpeg_input=TESTSRC, max_bytes=2048, timeout=20)
    await cam.start()
    with pytest.raises(FrameTooLarge) as info:
        await cam.capture()
    assert info.value.limit == 2048
    await cam.close()


def ffmpeg_children() -> list[int]:
    """Our own child processes that are ffmpeg (zombies included: they would be unreaped)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == os.getpid() and name == "ffmpeg":
            found.append(int(entry.name))
    return found


async def test_capture_timeout_kills_ffmpeg(ffmpeg: str) -> None:
    # -re paces input in real time, so 10 s of skipped video cannot arrive in 0.3 s.
    slow = ["-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=5", "-ss", "10"]
    cam = V4l2Camera("camera", ffmpeg_input=slow)
    await cam.start()
    with pytest.raises(CameraTimeout) as info:
        await cam.capture(timeout=0.3)
    assert isinstance(info.value, TimeoutError)
    assert ffmpeg_children() == []
    await cam.close()
