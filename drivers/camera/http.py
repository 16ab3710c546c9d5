"""IP camera snapshot (`http` driver): GET the snapshot URL with Basic or Digest auth via aiohttp."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Literal

import aiohttp
import structlog

from drivers.base import DeviceState, DeviceStatus, Listener, StatusTracker
from drivers.camera import jpeg
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

log = structlog.get_logger(__name__)

_CHUNK = 64 * 1024


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
        auth: Literal["basic", "digest"] = "digest",
        timeout: float = 5.0,
        max_bytes: int = 5_000_000,
    ) -> None:
        if auth not in ("basic", "digest"):
            raise ValueError("auth is 'basic' or 'digest'")
        self.name = name
        self.url = url
        self._username = username
        self._password = password
        self._auth = auth
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
        timeout = aiohttp.ClientTimeout(total=None)
        if self._username is None:
            return aiohttp.ClientSession(timeout=timeout)
        if self._auth == "basic":
            header = aiohttp.encode_basic_auth(self._username, self._password or "")
            return aiohttp.ClientSession(timeout=timeout, headers={"Authorization": header})
        digest = aiohttp.DigestAuthMiddleware(self._username, self._password or "")
        return aiohttp.ClientSession(timeout=timeout, middlewares=(digest,))

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
            async with session.get(self.url) as response:
                if response.status in (401, 403):
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
                return bytes(body)
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
