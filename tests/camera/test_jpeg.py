"""JPEG checks and the simulator's pure-Python encoder, verified by decoding with ffmpeg."""

from __future__ import annotations

import pytest

from drivers.camera import Frame, InvalidFrame, jpeg
from drivers.camera.simulator import CameraSimulator
from tests.camera.conftest import decode_rgb

RED, GREEN = jpeg.rgb_to_ycbcr(255, 0, 0), jpeg.rgb_to_ycbcr(0, 255, 0)


def test_encoded_tiles_decode_to_the_drawn_colours(ffmpeg: str) -> None:
    data = jpeg.encode_tiles(32, 16, lambda bx, by: RED if bx < 2 else GREEN)
    assert jpeg.inspect(data) == (32, 16)
    pixels = decode_rgb(ffmpeg, data)
    assert len(pixels) == 32 * 16 * 3

    def pixel(x: int, y: int) -> tuple[int, ...]:
        i = (y * 32 + x) * 3
        return tuple(pixels[i : i + 3])

    for (x, y), expected in {(3, 3): (255, 0, 0), (28, 12): (0, 255, 0)}.items():
        got = pixel(x, y)
        assert all(abs(a - b) <= 6 for a, b in zip(got, expected, strict=True)), (got, expected)


def test_byte_stuffing_survives_decoding(ffmpeg: str) -> None:
    # Alternating extremes give large DC differences, which produce 0xFF bytes in the scan.
    data = jpeg.encode_tiles(
        256,
        8,
        lambda bx, by: (255, 0, 255) if bx % 2 else (0, 255, 0),
    )
    scan = data[data.index(b"\xff\xda") + 14 : -2]
    assert b"\xff\x00" in scan
    assert len(decode_rgb(ffmpeg, data)) == 256 * 8 * 3


def test_comment_segment_keeps_the_image_valid(ffmpeg: str) -> None:
    base = jpeg.encode_tiles(16, 16, lambda bx, by: RED)
    stamped = jpeg.with_comment(base, b"frame=7")
    assert b"frame=7" in stamped
    assert jpeg.inspect(stamped) == (16, 16)
    assert decode_rgb(ffmpeg, stamped) == decode_rgb(ffmpeg, base)


def test_simulator_frames_are_real_and_change(ffmpeg: str) -> None:
    sim = CameraSimulator(width=320, height=240)
    first, second = sim.frame(0), sim.frame(1)
    assert jpeg.inspect(first) == (320, 240)
    assert decode_rgb(ffmpeg, first) != decode_rgb(ffmpeg, second)
    assert sim.frame(32) != first  # same picture, new stamp


def _sof(width: int, height: int) -> bytes:
    return b"\xff\xc0\x00\x11\x08" + height.to_bytes(2, "big") + width.to_bytes(2, "big") + bytes(10)


SOS = b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "no SOI"),
        (b"<html>Video loss</html>", "no SOI"),
        (b"\xff\xd8" + _sof(320, 240) + SOS + b"\x12\x34", "no EOI"),
        (b"\xff\xd8" + _sof(0, 240) + SOS + b"\x00\xff\xd9", "zero size"),
        (b"\xff\xd8" + _sof(320, 0) + SOS + b"\x00\xff\xd9", "zero size"),
        (b"\xff\xd8" + SOS + b"\x00\xff\xd9", "scan before"),
        (b"\xff\xd8\x00\x00\xff\xd9", "expected a marker"),
        (b"\xff\xd8\xff\xe0\x01\x00\xff\xd9", "length"),
        (b"\xff\xd8\xff\xd9", "without a frame header"),
    ],
)
def test_inspect_rejects_what_is_not_a_whole_jpeg(data: bytes, match: str) -> None:
    with pytest.raises(InvalidFrame, match=match):
        jpeg.inspect(data)


def test_inspect_reads_progressive_headers_and_allows_padding() -> None:
    progressive = b"\xff\xd8" + _sof(640, 480).replace(b"\xff\xc0", b"\xff\xc2") + SOS + b"\xff\xd9"
    assert jpeg.inspect(progressive + b"\x00\x00\r\n") == (640, 480)


def test_frame_repr_leaves_the_image_out() -> None:
    frame = Frame(b"\xff\xd8secret-face\xff\xd9", 320, 240, 1700000000.0)
    assert "secret" not in repr(frame)
    assert repr(frame) == "Frame(width=320, height=240, bytes=15, captured_at=1700000000.000)"
