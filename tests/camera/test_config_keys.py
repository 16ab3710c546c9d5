"""The camera config keys: defaults, accepted values, and values refused with a clear error."""

from __future__ import annotations

import msgspec
import pytest

from gateway.config import HttpCameraDevice, V4l2Device


def v4l2(**keys: object) -> V4l2Device:
    return msgspec.convert({"driver": "v4l2", **keys}, V4l2Device)


def http(**keys: object) -> HttpCameraDevice:
    return msgspec.convert({"driver": "http", "url": "http://127.0.0.1/s.jpg", **keys}, HttpCameraDevice)


def test_v4l2_defaults_ask_the_device() -> None:
    cfg = v4l2()
    assert (cfg.input_format, cfg.width, cfg.height, cfg.skip_frames) == ("auto", 640, 480, 5)
    assert v4l2(input_format="yuyv422", skip_frames=0).input_format == "yuyv422"


@pytest.mark.parametrize(
    ("keys", "match"),
    [
        ({"input_format": "mjpeg -i /etc/passwd"}, "input_format"),
        ({"width": 0}, "width"),
        ({"skip_frames": -1}, "skip_frames"),
        ({"skip_frames": 301}, "skip_frames"),
    ],
)
def test_v4l2_bad_values(keys: dict[str, object], match: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=match):
        v4l2(**keys)


def test_http_auth_and_stream_keys() -> None:
    assert (http().auth, http().stream) == ("digest", "first_frame")
    assert (http(auth="auto", stream="refuse").auth, http(stream="refuse").stream) == ("auto", "refuse")
    with pytest.raises(msgspec.ValidationError, match="auth"):
        http(auth="ntlm")
    with pytest.raises(msgspec.ValidationError, match="stream"):
        http(stream="all")
