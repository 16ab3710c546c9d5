"""Camera errors: one root with precise subclasses carrying what went wrong."""

from __future__ import annotations

from drivers.base import DeviceRejected, DeviceTimeout, DeviceUnavailable, DriverError, FrameError


class CameraError(DriverError):
    """Root of every error the camera drivers raise."""


class CameraNotFound(CameraError, DeviceUnavailable):
    """No camera to capture from: missing device node, ffmpeg absent."""


class CameraUnreachable(CameraError, DeviceUnavailable):
    """The IP camera does not accept connections."""


class CameraTimeout(CameraError, DeviceTimeout):
    """No complete frame within the capture timeout."""


class CameraAuthError(CameraError, DeviceRejected):
    """The IP camera refused our credentials (HTTP 401/403)."""


class CaptureFailed(CameraError, DeviceRejected):
    """The camera answered but gave no frame: HTTP error status, ffmpeg failure, cut transfer."""


class InvalidFrame(CameraError, FrameError):
    """The bytes are not one whole JPEG (no SOI/EOI, no frame header, zero size)."""


class FrameTooLarge(InvalidFrame):
    """The frame exceeded the byte limit; reading stopped there."""

    def __init__(self, message: str, *, device: str | None = None, limit: int = 0) -> None:
        super().__init__(message, device=device)
        self.limit = limit
