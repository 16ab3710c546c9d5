"""Camera drivers: `v4l2` (ffmpeg subprocess) and `http` (IP camera snapshot URL)."""

from drivers.camera.errors import (
    CameraAuthError,
    CameraError,
    CameraNotFound,
    CameraTimeout,
    CameraUnreachable,
    CaptureFailed,
    FrameTooLarge,
    InvalidFrame,
)
from drivers.camera.http import HttpCamera
from drivers.camera.jpeg import Frame
from drivers.camera.v4l2 import V4l2Camera

__all__ = [
    "CameraAuthError",
    "CameraError",
    "CameraNotFound",
    "CameraTimeout",
    "CameraUnreachable",
    "CaptureFailed",
    "Frame",
    "FrameTooLarge",
    "HttpCamera",
    "InvalidFrame",
    "V4l2Camera",
]
