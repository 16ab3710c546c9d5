"""USB/UVC camera (`v4l2` driver): one frame per capture from an `ffmpeg` subprocess.

ffmpeg rather than linuxpy: a subprocess can be killed on timeout whatever the kernel driver
does (a wedged UVC ioctl cannot block the event loop or a thread forever), the device is open
only during a capture (no handle held between users, LED off), and re-encoding to MJPEG gives a
complete JPEG from every camera, including YUYV-only ones and MJPEG streams whose frames omit
the Huffman tables. The cost, about 0.1-0.3 s of process start per capture, is small next to a
person facing the camera; linuxpy would also be one more dependency to ship. The input
arguments are configurable, so tests read `-f lavfi -i testsrc` through the same code path.

Not every camera offers MJPEG: with `input_format = "auto"` the driver first asks the device
what it offers (`ffmpeg -f v4l2 -list_formats all`, parsed in formats.py), takes MJPEG when
there is one and raw YUYV (encoded to JPEG here) otherwise, at the offered size nearest the
configured one. The first `skip_frames` frames are dropped (`select=gte(n,N)`): right after
the device opens, auto-exposure has not settled and they come out dark.
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
from drivers.camera.formats import InputChoice, choose_input, parse_list_formats
from drivers.camera.jpeg import Frame

log = structlog.get_logger(__name__)

_CHUNK = 64 * 1024
_STDERR_KEEP = 4096
_LIST_KEEP = 64 * 1024
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
        input_format: str = "auto",
        width: int = 640,
        height: int = 480,
        skip_frames: int = 5,
        timeout: float = 5.0,
        max_bytes: int = 5_000_000,
        ffmpeg: str = "ffmpeg",
    ) -> None:
        if width <= 0 or height <= 0 or not 0 <= skip_frames <= 300:
            raise ValueError("width and height are positive, skip_frames is 0..300")
        self.name = name
        self.device = device
        self._uses_device = ffmpeg_input is None
        self._fixed_input = list(ffmpeg_input) if ffmpeg_input is not None else None
        self._input_format = input_format
        self._size = (width, height)
        self._skip = skip_frames
        self.choice: InputChoice | None = None
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
                    body = await self._run_ffmpeg(binary, await self._input_args(binary))
            width, height = jpeg.inspect(body)
        except TimeoutError:
            self._tracker.record_error("capture timed out")
            raise CameraTimeout(f"no frame within {limit:g}s", device=self.name) from None
        except InvalidFrame as err:
            err.device = self.name
            self._tracker.record_error(str(err))
            raise
        except CameraError as err:
            # Ask the device again next time: it may have been swapped for another model.
            self.choice = None
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

    async def _input_args(self, binary: str) -> list[str]:
        """The ffmpeg input part: fixed (tests), configured, or chosen from what the device offers."""
        if self._fixed_input is not None:
            return self._fixed_input
        if self._input_format != "auto":
            self.choice = InputChoice(self._input_format, self._size, self._input_format == "mjpeg")
        elif self.choice is None:
            self.choice = await self._discover(binary)
        args = ["-f", "v4l2", "-input_format", self.choice.input_format]
        if self.choice.size is not None:
            args += ["-video_size", "{}x{}".format(*self.choice.size)]
        return [*args, "-i", self.device]

    async def _discover(self, binary: str) -> InputChoice:
        """Ask the device for its formats (VIDIOC_ENUM_FMT through ffmpeg) and pick one."""
        process = await asyncio.create_subprocess_exec(
            binary,
            "-hide_banner",
            "-nostdin",
            "-f",
            "v4l2",
            "-list_formats",
            "all",
            "-i",
            self.device,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stderr is not None
        try:
            listing = await self._read_tail(process.stderr, keep=_LIST_KEEP)
            await process.wait()  # ffmpeg exits non-zero here by design ("Immediate exit requested")
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        return self.pick_input(listing.decode(errors="replace"))

    def pick_input(self, listing: str) -> InputChoice:
        """The input to use given `-list_formats all` output; CaptureFailed when nothing fits."""
        formats = parse_list_formats(listing)
        choice = choose_input(formats, *self._size)
        if choice is None:
            lines = [line.strip() for line in listing.splitlines() if line.strip()]
            said = f"nothing; ffmpeg said: {lines[-1][:200]}" if lines else "nothing"
            offered = ", ".join(f"{f.name} ({f.description})" for f in formats) or said
            raise CaptureFailed(
                f"{self.device} offers no format ffmpeg can capture (offered: {offered})",
                device=self.name,
                code="no_format",
            )
        log.info(
            "camera_input_chosen",
            device=self.name,
            input_format=choice.input_format,
            size="{}x{}".format(*choice.size) if choice.size else "default",
            offered=[f.name for f in formats],
        )
        return choice

    async def _run_ffmpeg(self, binary: str, input_args: list[str]) -> bytes:
        # Dark frames while auto-exposure settles: drop the first N, keep the next one.
        skip = ["-vf", f"select=gte(n\\,{self._skip})"] if self._skip else []
        argv = [
            binary,
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            *input_args,
            *skip,
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
    async def _read_tail(stream: asyncio.StreamReader, *, keep: int = _STDERR_KEEP) -> bytes:
        tail = b""
        while chunk := await stream.read(_CHUNK):
            tail = (tail + chunk)[-keep:]
        return tail
