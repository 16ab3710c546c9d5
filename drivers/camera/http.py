"""IP camera (`http` driver): GET a snapshot URL, or one frame of an MJPEG stream, with Basic or Digest.

Authentication reads every challenge of a 401 and answers the strongest (see `auth.py`): a
camera that offers Basic in its first WWW-Authenticate header and Digest in the second gets
Digest. An `image/jpeg` answer is a snapshot; a `multipart/x-mixed-replace` answer is an MJPEG
stream, from which one frame is taken within the byte limit (or refused, per `stream`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Literal

import aiohttp
import structlog
from yarl import URL

from drivers.base import DeviceState, DeviceStatus, Listener, StatusTracker
from drivers.camera import jpeg
from drivers.camera.auth import (
    AuthMode,
    Challenge,
    basic_authorization,
    choose,
    digest_authorization,
    parse_challenges,
)
from drivers.camera.errors import (
    CameraAuthError,
    CameraError,
    CameraTimeout,
    CameraUnreachable,
    CaptureFailed,
    FrameTooLarge,
    InvalidFrame,
)
from drivers.camera.jpeg import Frame
from drivers.camera.mjpeg import FirstFrame, stream_boundary

log = structlog.get_logger(__name__)

_CHUNK = 64 * 1024
StreamPolicy = Literal["first_frame", "refuse"]


class HttpCamera:
    """A camera behind a snapshot URL (what ONVIF GetSnapshotUri returns)."""

    driver = "http"

    def __init__(
        self,
        name: str,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        auth: AuthMode = "digest",
        stream: StreamPolicy = "first_frame",
        timeout: float = 5.0,
        max_bytes: int = 5_000_000,
    ) -> None:
        if auth not in ("auto", "basic", "digest"):
            raise ValueError("auth is 'auto', 'basic' or 'digest'")
        if stream not in ("first_frame", "refuse"):
            raise ValueError("stream is 'first_frame' or 'refuse'")
        self.name = name
        self.url = url
        self._username = username
        self._password = password
        self._auth: AuthMode = auth
        self._stream: StreamPolicy = stream
        self._challenge: Challenge | None = None
        self._nc = 0
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._tracker = StatusTracker(name, DeviceState.OFFLINE)
        self._session: aiohttp.ClientSession | None = None
        self._first_probe: asyncio.Task[DeviceStatus] | None = None
        self._closed = False

    @property
    def status(self) -> DeviceStatus:
        return self._tracker.status

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        return self._tracker.subscribe(listener)

    def __repr__(self) -> str:
        return f"HttpCamera(name={self.name!r}, url={self.url!r}, auth={self._auth!r})"

    def _make_session(self) -> aiohttp.ClientSession:
        # Timeouts are enforced per capture with asyncio.timeout, so aiohttp's own stay off.
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))

    def _authorization(self) -> str | None:
        """The Authorization header for the next request, if credentials and a scheme are known."""
        if self._username is None:
            return None
        password = self._password or ""
        if self._auth == "basic" and self._challenge is None:
            return basic_authorization(self._username, password)  # preemptive, as configured
        if self._challenge is None:
            return None
        if self._challenge.scheme == "basic":
            return basic_authorization(self._username, password)
        self._nc += 1
        return digest_authorization(
            self._challenge,
            username=self._username,
            password=password,
            method="GET",
            uri=URL(self.url).raw_path_qs,
            nc=self._nc,
        )

    def _answer_challenges(self, response: aiohttp.ClientResponse) -> None:
        """Pick the strongest challenge of a 401 to answer next; CameraAuthError when none fits."""
        offered = parse_challenges(response.headers.getall("WWW-Authenticate", []))
        chosen = choose(offered, self._auth)
        if chosen is None:
            schemes = ", ".join(c.scheme for c in offered) or "none"
            raise CameraAuthError(
                f"camera offers no authentication scheme we may use under auth = {self._auth!r} "
                f"(offered: {schemes})",
                device=self.name,
                code=401,
            )
        self._challenge = chosen
        self._nc = 0

    async def start(self) -> None:
        """Open the HTTP client and probe once in the background, so the state soon says."""
        self._closed = False
        if self._session is None:
            self._session = self._make_session()
        self._tracker.set(DeviceState.OFFLINE, "not checked yet")
        if self._first_probe is None:
            self._first_probe = asyncio.create_task(self.probe(), name=f"probe-{self.name}")

    async def close(self) -> None:
        """Close the HTTP client and its connections."""
        self._closed = True
        probe, self._first_probe = self._first_probe, None
        if probe is not None:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        self._tracker.set(DeviceState.OFFLINE, "closed")

    async def probe(self, *, timeout: float | None = None) -> DeviceStatus:
        """Take a snapshot and throw it away: the only health check every camera supports."""
        with contextlib.suppress(CameraError):
            await self.capture(timeout=timeout)
        return self.status

    async def capture(self, *, timeout: float | None = None) -> Frame:
        """One JPEG snapshot, checked whole, within the timeout and byte limit."""
        if self._closed:
            raise CameraUnreachable("camera closed", device=self.name, state=DeviceState.OFFLINE)
        if self._session is None:
            self._session = self._make_session()
        limit = self._timeout if timeout is None else timeout
        started = time.monotonic()
        try:
            async with asyncio.timeout(limit):
                body = await self._fetch(self._session)
            width, height = jpeg.inspect(body)
        except TimeoutError:
            self._failed(DeviceState.OFFLINE, "no snapshot in time")
            raise CameraTimeout(f"no snapshot within {limit:g}s from the camera", device=self.name) from None
        except CameraAuthError:
            self._failed(DeviceState.HARDWARE_ERROR, "authentication failed: check credentials")
            raise
        except CameraUnreachable as err:
            self._failed(DeviceState.OFFLINE, str(err))
            raise
        except InvalidFrame as err:
            err.device = self.name
            self._tracker.record_error(str(err))
            log.warning("camera_bad_frame", device=self.name, error=str(err))
            raise
        except CameraError as err:
            self._tracker.record_error(str(err))
            raise
        self._tracker.set(DeviceState.ONLINE, "ready")
        self._tracker.record_success()
        log.debug(
            "camera_capture",
            device=self.name,
            bytes=len(body),
            ms=round((time.monotonic() - started) * 1000),
        )
        return Frame(body, width, height, time.time())

    def _failed(self, state: DeviceState, reason: str) -> None:
        self._tracker.set(state, reason)
        self._tracker.record_error(reason)
        log.warning("camera_capture_failed", device=self.name, reason=reason)

    async def _fetch(self, session: aiohttp.ClientSession) -> bytes:
        try:
            for attempt in range(2):
                headers = {}
                if (authorization := self._authorization()) is not None:
                    headers["Authorization"] = authorization
                async with session.get(self.url, headers=headers) as response:
                    if response.status == 401 and self._username is not None and attempt == 0:
                        self._answer_challenges(response)
                        continue
                    if response.status in (401, 403):
                        self._challenge = None
                        raise CameraAuthError(
                            f"camera refused the credentials (HTTP {response.status})",
                            device=self.name,
                            code=response.status,
                        )
                    if response.status != 200:
                        raise CaptureFailed(
                            f"camera answered HTTP {response.status}",
                            device=self.name,
                            code=response.status,
                        )
                    return await self._read_frame(response)
            raise CameraAuthError("camera kept asking for credentials", device=self.name, code=401)
        except aiohttp.ClientPayloadError as err:
            raise CaptureFailed(
                f"snapshot transfer cut short ({err})", device=self.name, code="payload"
            ) from err
        except aiohttp.ClientResponseError as err:
            raise CaptureFailed(
                f"bad HTTP answer ({err.message})", device=self.name, code=err.status
            ) from err
        except aiohttp.ClientError as err:
            raise CameraUnreachable(
                f"camera unreachable ({type(err).__name__}: {err})",
                device=self.name,
                state=DeviceState.OFFLINE,
            ) from err

    async def _read_frame(self, response: aiohttp.ClientResponse) -> bytes:
        """The body of a snapshot, or the first frame of an MJPEG stream; never the whole stream."""
        content_type = response.headers.get("Content-Type", "")
        kind = content_type.split(";")[0].strip().lower()
        if kind.startswith("multipart/"):
            if self._stream == "refuse":
                response.close()
                raise CaptureFailed(
                    f"the URL is an MJPEG stream ({kind}), not a snapshot: "
                    "configure the camera's snapshot URL, or stream = 'first_frame'",
                    device=self.name,
                    code="stream",
                )
            return await self._first_frame(response, content_type)
        declared = response.content_length
        if declared is not None and declared > self._max_bytes:
            response.close()
            raise FrameTooLarge(
                f"snapshot of {declared} bytes exceeds the {self._max_bytes}-byte limit",
                device=self.name,
                limit=self._max_bytes,
            )
        body = bytearray()
        async for chunk in response.content.iter_chunked(_CHUNK):
            body += chunk
            if len(body) > self._max_bytes:
                # Stop reading: drop the connection rather than drain an endless body.
                response.close()
                raise FrameTooLarge(
                    f"snapshot exceeds the {self._max_bytes}-byte limit; reading stopped",
                    device=self.name,
                    limit=self._max_bytes,
                )
        if kind and not kind.startswith("image/") and not body.startswith(jpeg.SOI):
            raise InvalidFrame(f"not a JPEG: no SOI marker (the camera sent {kind})", device=self.name)
        return bytes(body)

    async def _first_frame(self, response: aiohttp.ClientResponse, content_type: str) -> bytes:
        try:
            parser = FirstFrame(stream_boundary(content_type), max_bytes=self._max_bytes)
            while chunk := await response.content.readany():
                if (frame := parser.feed(chunk)) is not None:
                    return frame
        except CameraError as err:
            err.device = self.name
            raise
        finally:
            # An MJPEG stream never ends by itself: drop the connection once we have our frame.
            response.close()
        raise CaptureFailed("MJPEG stream ended before a whole frame", device=self.name, code="stream")
