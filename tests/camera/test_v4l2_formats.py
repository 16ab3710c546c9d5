"""Format discovery and the YUYV path: real `-list_formats` outputs quoted from public sources,
raw yuyv422 frames made by ffmpeg's lavfi source, encoded to JPEG by the real ffmpeg."""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.camera import CaptureFailed, V4l2Camera, jpeg
from drivers.camera.formats import InputChoice, SizeRange, choose_input, parse_list_formats
from tests.camera.conftest import decode_rgb

# mpromonet/v4l2rtspserver issue 177 (ffmpeg 4.x; a camera with MJPEG and YUYV).
BOTH = """\
[video4linux2,v4l2 @ 0x105d1c0] Compressed:       mjpeg :          Motion-JPEG : 2592x1944 1280x960 1024x768 640x480 1280x720 1600x1200 2048x1536 800x600 1920x1080
[video4linux2,v4l2 @ 0x105d1c0] Raw       :     yuyv422 :           YUYV 4:2:2 : 2592x1944 1280x960 1024x768 640x480 1280x720 1600x1200 2048x1536 800x600 1920x1080
"""  # noqa: E501 (quoted verbatim)
# mras2an.webnode.fr, "v4l" (old ffmpeg's R/C form; a Logitech UVC camera with H.264 ffmpeg
# could not name).
OLD_FORM = """\
[video4linux2 @ 0x160f8c0] R : yuyv422 : YUV 4:2:2 (YUYV) : 640x480 160x90 160x120 176x144 320x180 320x240 352x288 432x240 640x360 800x448 800x600 864x480 960x720 1024x576 1280x720 1600x896 1920x1080 2304x1296 2304x1536

[video4linux2 @ 0x160f8c0] C : Unsupported : H.264 : 640x480 160x90 160x120 176x144 320x180 320x240 352x288 432x240 640x360 800x448 800x600 864x480 960x720 1024x576 1280x720 1600x896 1920x1080

[video4linux2 @ 0x160f8c0] C : mjpeg : MJPEG : 640x480 160x90 160x120 176x144 320x180 320x240 352x288 432x240 640x360 800x448 800x600 864x480 960x720 1024x576 1280x720 1600x896 1920x1080

/dev/video0: Immediate exit requested
"""  # noqa: E501 (quoted verbatim)
# A FaceTime HD driver guide: a YUYV-only camera with stepwise sizes (no MJPEG at all).
YUYV_ONLY = """\
Raw       :     yuyv422 :           YUYV 4:2:2 : {320-1280, 8}x{240-720, 2}
Raw       : Unsupported :           YVYU 4:2:2 : {320-1280, 8}x{240-720, 2}
"""
H264_ONLY_UNNAMED = "[video4linux2,v4l2 @ 0x1] Compressed: Unsupported :                H.264 : 1920x1080\n"


def test_parses_current_ffmpeg_lines() -> None:
    formats = parse_list_formats(BOTH)
    assert [(f.name, f.compressed, f.description) for f in formats] == [
        ("mjpeg", True, "Motion-JPEG"),
        ("yuyv422", False, "YUYV 4:2:2"),
    ]
    assert formats[1].sizes[0] == (2592, 1944) and len(formats[1].sizes) == 9
    assert choose_input(formats, 640, 480) == InputChoice("mjpeg", (640, 480), True)
    # 1000x700 is not offered: the nearest smaller size.
    assert choose_input(formats, 1000, 700) == InputChoice("mjpeg", (800, 600), True)


def test_parses_old_ffmpeg_lines_and_skips_unsupported() -> None:
    formats = parse_list_formats(OLD_FORM)
    assert [(f.name, f.compressed) for f in formats] == [
        ("yuyv422", False),
        ("Unsupported", True),
        ("mjpeg", True),
    ]
    assert formats[0].description == "YUV 4:2:2 (YUYV)"
    assert choose_input(formats, 1920, 1080) == InputChoice("mjpeg", (1920, 1080), True)


def test_yuyv_only_camera_gets_raw_capture_at_a_stepwise_size() -> None:
    formats = parse_list_formats(YUYV_ONLY)
    assert formats[0].ranges == (SizeRange(320, 1280, 8, 240, 720, 2),)
    assert choose_input(formats, 640, 480) == InputChoice("yuyv422", (640, 480), False)
    # 1920x1080 is beyond the range: its largest size.
    assert choose_input(formats, 1920, 1080) == InputChoice("yuyv422", (1280, 720), False)


def test_nothing_usable_is_a_clear_error() -> None:
    assert choose_input(parse_list_formats(H264_ONLY_UNNAMED), 640, 480) is None
    cam = V4l2Camera("camera", "/dev/video9")
    with pytest.raises(CaptureFailed, match=r"offers no format ffmpeg can capture \(offered: Unsupported"):
        cam.pick_input(H264_ONLY_UNNAMED)
    with pytest.raises(CaptureFailed, match="offered: nothing; ffmpeg said: /dev/video9: Permission denied"):
        cam.pick_input("[video4linux2,v4l2 @ 0x1] Cannot open video device\n/dev/video9: Permission denied\n")


# --- the encode path with real ffmpeg ---------------------------------------------------------


RAW_OUT = ("-f", "rawvideo", "-pix_fmt", "yuyv422")
MJPEG_OUT = ("-c:v", "mjpeg", "-f", "mjpeg")


def make_raw(ffmpeg: str, path: Path, source: str, frames: int) -> None:
    subprocess.run(
        [ffmpeg, "-v", "error", "-f", "lavfi", "-i", source, "-frames:v", str(frames), *RAW_OUT, str(path)],
        check=True,
        timeout=60,
    )


def raw_input(path: Path, size: str = "320x240") -> list[str]:
    return ["-f", "rawvideo", "-pix_fmt", "yuyv422", "-video_size", size, "-i", str(path)]


def mean(pixels: bytes) -> float:
    return statistics.fmean(pixels)


async def test_raw_yuyv422_frames_are_encoded_to_jpeg(ffmpeg: str, tmp_path: Path) -> None:
    raw = tmp_path / "frames.yuyv"
    make_raw(ffmpeg, raw, "testsrc=size=320x240:rate=5", 3)
    assert raw.stat().st_size == 320 * 240 * 2 * 3  # YUYV: 2 bytes a pixel
    cam = V4l2Camera("camera", ffmpeg_input=raw_input(raw), skip_frames=0, timeout=20)
    await cam.start()
    frame = await cam.capture()
    await cam.close()
    assert jpeg.inspect(frame.jpeg) == (320, 240)
    got = decode_rgb(ffmpeg, frame.jpeg)
    reference = subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            *raw_input(raw),
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    assert len(got) == len(reference) == 320 * 240 * 3
    assert statistics.fmean(abs(a - b) for a, b in zip(got, reference, strict=True)) < 6


async def test_dark_first_frames_are_skipped(ffmpeg: str, tmp_path: Path) -> None:
    # Frames brighten as auto-exposure settles: frame k has luma 16 + 25k.
    raw = tmp_path / "settling.yuyv"
    raw.write_bytes(b"".join(bytes([16 + 25 * k, 128]) * (64 * 48) for k in range(8)))
    levels = {}
    for skip in (0, 4):
        cam = V4l2Camera("camera", ffmpeg_input=raw_input(raw, "64x48"), skip_frames=skip, timeout=20)
        levels[skip] = mean(decode_rgb(ffmpeg, (await cam.capture()).jpeg))
        await cam.close()
    # Full-range RGB of limited-range luma Y: (Y - 16) * 255 / 219.
    assert levels[0] == pytest.approx(0, abs=4)
    assert levels[4] == pytest.approx(100 * 255 / 219, abs=4)


def test_bad_sizes_and_skip_are_refused() -> None:
    for kwargs in ({"width": 0}, {"height": -1}, {"skip_frames": -1}, {"skip_frames": 1000}):
        with pytest.raises(ValueError):
            V4l2Camera("camera", **kwargs)  # type: ignore[arg-type]


# --- discovery end to end, the device side played by recorded answers -------------------------


@pytest.fixture
def fake_camera(ffmpeg: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """An `ffmpeg` in front of a camera that is not there (see fake_v4l2_ffmpeg.py)."""
    raw, mjpeg = tmp_path / "frames.yuyv", tmp_path / "frames.mjpeg"
    make_raw(ffmpeg, raw, "testsrc=size=320x240:rate=5", 8)
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=5",
            "-frames:v",
            "8",
            *MJPEG_OUT,
            str(mjpeg),
        ],
        check=True,
        timeout=60,
    )
    wrapper = tmp_path / "ffmpeg"
    script = Path(__file__).with_name("fake_v4l2_ffmpeg.py")
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    wrapper.chmod(0o755)
    log = tmp_path / "argv.log"
    for key, value in {
        "REAL_FFMPEG": ffmpeg,
        "RAW_YUYV": str(raw),
        "RAW_SIZE": "320x240",
        "MJPEG": str(mjpeg),
        "ARGV_LOG": str(log),
        "LISTING": str(tmp_path / "listing.txt"),
    }.items():
        monkeypatch.setenv(key, value)
    return str(wrapper), tmp_path


@pytest.mark.parametrize(
    ("listing", "expected", "size"),
    [
        (YUYV_ONLY, "-input_format yuyv422 -video_size 320x240", (320, 240)),
        # 320x240 is not among this camera's sizes: the nearest one it has.
        (BOTH, "-input_format mjpeg -video_size 640x480", (640, 480)),
    ],
)
async def test_auto_asks_the_device_then_captures(
    fake_camera: tuple[str, Path], listing: str, expected: str, size: tuple[int, int]
) -> None:
    wrapper, where = fake_camera
    (where / "listing.txt").write_text(listing)
    cam = V4l2Camera("camera", "/dev/null", ffmpeg=wrapper, width=320, height=240, skip_frames=2, timeout=30)
    await cam.start()
    first = await cam.capture()
    await cam.capture()
    await cam.close()
    assert jpeg.inspect(first.jpeg) == (320, 240)
    calls = (where / "argv.log").read_text().splitlines()
    assert len(calls) == 3 and "-list_formats all -i /dev/null" in calls[0]  # asked once, cached
    assert all(f"-f v4l2 {expected} -i /dev/null" in c and "select=gte(n\\,2)" in c for c in calls[1:])
    assert cam.choice is not None and cam.choice.size == size


async def test_configured_format_skips_discovery(fake_camera: tuple[str, Path]) -> None:
    wrapper, where = fake_camera
    cam = V4l2Camera("camera", "/dev/null", ffmpeg=wrapper, input_format="yuyv422", width=320, height=240)
    frame = await cam.capture(timeout=30)
    assert frame.width == 320
    assert "-list_formats" not in (where / "argv.log").read_text()


async def test_device_offering_nothing_usable(fake_camera: tuple[str, Path]) -> None:
    wrapper, where = fake_camera
    (where / "listing.txt").write_text(H264_ONLY_UNNAMED)
    cam = V4l2Camera("camera", "/dev/null", ffmpeg=wrapper)
    with pytest.raises(CaptureFailed, match="offers no format") as info:
        await cam.capture(timeout=30)
    assert info.value.code == "no_format" and cam.choice is None
    assert cam.status.last_error is not None and "offers no format" in cam.status.last_error


@given(st.text(max_size=2000))
def test_listing_parser_never_raises(text: str) -> None:
    for fmt in parse_list_formats(text):
        assert fmt.name and not any(c.isspace() for c in fmt.name)
    choose_input(parse_list_formats(text), 640, 480)


def test_listing_lines_mixed_with_noise() -> None:
    noisy = (
        "ffmpeg version 5.1\n  built with gcc\n"
        + BOTH
        + "[in#0 @ 0x1] Error opening input: Immediate exit requested\n"
    )
    assert [f.name for f in parse_list_formats(noisy)] == ["mjpeg", "yuyv422"]
    emulated = (
        "[video4linux2,v4l2 @ 0x1] Raw       :     yuv420p :     Planar YUV 4:2:0 : Emulated : 640x480\n"
    )
    (fmt,) = parse_list_formats(emulated)
    assert fmt.emulated and fmt.sizes == ((640, 480),) and fmt.description == "Planar YUV 4:2:0"
