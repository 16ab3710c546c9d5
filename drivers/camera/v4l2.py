"""USB/UVC camera (`v4l2` driver): one frame per capture from an `ffmpeg` subprocess.

ffmpeg rather than linuxpy: a subprocess can be killed on timeout whatever the kernel driver
does (a wedged UVC ioctl cannot block the event loop or a thread forever), the device is open
only during a capture (no handle held between users, LED off), and re-encoding to MJPEG gives a
complete JPEG from every camera, including YUYV-only ones and MJPEG streams whose frames omit
the Huffman tables. The cost, about 0.1-0.3 s of process start per capture, is small next to a
person facing the camera; linuxpy would also be one more dependency to ship. The input
arguments are configurable, so tests read `-f lavfi -i testsrc` through the same code path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import time
from collections.abc import Callable

import structlog

from drivers.base import DeviceState, DeviceStatus, Listener, StatusTracker
from drivers.camera import jpeg
from drivers.camera.errors import (
    CameraError,
    CameraNotFound,
    CameraTimeout,
    CaptureFailed,
    FrameTooLarge,
    InvalidFrame,
)
from drivers.camera.jpeg import Frame

log = structlog.get_logger(__name__)

_CHUNK = 64 * 1024
_STDERR_KEEP = 4096
FFMPEG_MISSING = "ffmpeg not installed (apt-get install -y ffmpeg)"


class V4l2Camera:
    """A V4L2 camera read through ffmpeg; `ffmpeg_input` replaces the `-f v4l2 ... -i DEV` part."""

    driver = "v4l2"

    def __init__(
        self,
        name: str,
        device: str = "/dev/video0",
        *,
        ffmpeg_input: list[str] | None = None,
        timeout: float = 5.0,
        max_bytes: int = 5_000_000,
        ffmpeg: str = "ffmpeg",
    ) -> None:
        self.name = name
        self.device = device
        self._uses_device = ffmpeg_input is None
        self._input = (
            list(ffmpeg_input)
            if ffmpeg_input is not None
            else ["-f", "v4l2", "-input_format", "mjpeg", "-i", device]
        )
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._ffmpeg = ffmpeg
        self._tracker = StatusTracker(name, DeviceState.OFFLINE)
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def status(self) -> DeviceStatus:
        return self._tracker.status

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        return self._tracker.subscribe(listener)

    async def start(self) -> None:
        """Check that ffmpeg and the device node exist; never waits on the camera."""
        self._closed = False
        with contextlib.suppress(CameraNotFound):  # the state says so; start never fails on it
            self._check_present()

    async def close(self) -> None:
        self._closed = True
        self._tracker.set(DeviceState.OFFLINE, "closed")

    async def probe(self, *, timeout: float | None = None) -> DeviceStatus:
        """Presence of ffmpeg and the node (a capture would light the camera for nothing)."""
        if not self._closed:
            with contextlib.suppress(CameraError):
                self._check_present()
        return self.status

    def _check_present(self) -> str:
        """The ffmpeg path; sets no_device and raises CameraNotFound when anything is missing."""
        binary = shutil.which(self._ffmpeg)
        if binary is None:
            self._tracker.set(DeviceState.NO_DEVICE, FFMPEG_MISSING)
            raise CameraNotFound(FFMPEG_MISSING, device=self.name, state=DeviceState.NO_DEVICE)
        if self._uses_device:
            try:
                mode = os.stat(self.device).st_mode
            except OSError:
                reason = f"device node {self.device} missing (camera unplugged?)"
                self._tracker.set(DeviceState.NO_DEVICE, reason)
                raise CameraNotFound(reason, device=self.name, state=DeviceState.NO_DEVICE) from None
            if not stat.S_ISCHR(mode):
                reason = f"{self.device} is not a character device"
                self._tracker.set(DeviceState.NO_DEVICE, reason)
                raise CameraNotFound(reason, device=self.name, state=DeviceState.NO_DEVICE)
        if self._tracker.status.state is not DeviceState.ONLINE:
            self._tracker.set(DeviceState.ONLINE, "ready")
        return binary

    async def capture(self, *, timeout: float | None = None) -> Frame:
        """One JPEG frame, checked whole, within the timeout and byte limit."""
        if self._closed:
            raise CameraNotFound("camera closed", device=self.name, state=DeviceState.OFFLINE)
        limit = self._timeout if timeout is None else timeout
        started = time.monotonic()
        try:
            async with asyncio.timeout(limit):
                # A V4L2 device serves one reader at a time.
                async with self._lock:
                    binary = self._check_present()
                    body = await self._run_ffmpeg(binary)
            width, height = jpeg.inspect(body)
        except TimeoutError:
            self._tracker.record_error("capture timed out")
            raise CameraTimeout(f"no frame within {limit:g}s", device=self.name) from None
        except InvalidFrame as err:
            err.device = self.name
            self._tracker.record_error(str(err))
            raise
        except CameraError as err:
            self._tracker.record_error(str(err))
            raise
        self._tracker.record_success()
        log.debug(
            "camera_capture",
            device=self.name,
            bytes=len(body),
            ms=round((time.monotonic() - started) * 1000),
        )
        return Frame(body, width, height, time.time())

    async def _run_ffmpeg(self, binary: str) -> bytes:
        argv = [
            binary,
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            *self._input,
            "-frames:v",
            "1",
            "-c:v",
            "mjpeg",
            "-q:v",
            "3",
            "-f",
            "image2pipe",
            "-",
        ]
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None and process.stderr is not None
        stderr_task = asyncio.create_task(self._read_tail(process.stderr))
        try:
            body = await self._read_limited(process.stdout)
            errors = await stderr_task
            code = await process.wait()
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
            if not stderr_task.done():
                stderr_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stderr_task
        if code != 0:
            detail = errors.decode(errors="replace").strip().splitlines()
            raise CaptureFailed(
                f"ffmpeg exited with {code}: {detail[-1] if detail else 'no message'}",
                device=self.name,
                code=code,
            )
        return body

    async def _read_limited(self, stream: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while chunk := await stream.read(_CHUNK):
            body += chunk
            if len(body) > self._max_bytes:
                raise FrameTooLarge(
                    f"frame exceeds the {self._max_bytes}-byte limit; reading stopped",
                    device=self.name,
                    limit=self._max_bytes,
                )
        return bytes(body)

    @staticmethod
    async def _read_tail(stream: asyncio.StreamReader) -> bytes:
        tail = b""
        while chunk := await stream.read(_CHUNK):
            tail = (tail + chunk)[-_STDERR_KEEP:]
        return tail
