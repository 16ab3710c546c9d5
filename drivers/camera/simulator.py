"""A simulated IP camera: real JPEG snapshots over HTTP on 127.0.0.1, Digest or Basic auth, faults.

`auth="basic+digest"` challenges as cameras that offer both do: a Basic WWW-Authenticate header
first, a Digest one second, and accepts either answer. `stream_path` serves an MJPEG stream
(`multipart/x-mixed-replace`, each part with Content-Type and Content-Length) until the client
goes away.

Frames come from the pure-Python tile encoder in `jpeg.py` (colour bars, a moving block and the
frame counter in binary), so no ffmpeg or data file is needed at run time; each response also
carries a COM segment with the frame number and time, as real cameras stamp them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import enum
import functools
import hashlib
import hmac
import secrets
import time

from aiohttp import web

from drivers.camera.jpeg import Colour, encode_tiles, rgb_to_ycbcr, with_comment

_BARS = [
    rgb_to_ycbcr(*rgb)
    for rgb in (
        (192, 192, 192),
        (192, 192, 0),
        (0, 192, 192),
        (0, 192, 0),
        (192, 0, 192),
        (192, 0, 0),
        (0, 0, 192),
        (16, 16, 16),
    )
]
_WHITE = rgb_to_ycbcr(235, 235, 235)
_BLACK = rgb_to_ycbcr(16, 16, 16)
_GREY = rgb_to_ycbcr(64, 64, 64)
_DISTINCT_FRAMES = 32  # the picture repeats after this many frames; the COM stamp does not


@functools.lru_cache(maxsize=4 * _DISTINCT_FRAMES)
def _picture(width: int, height: int, step: int) -> bytes:
    """Frame `step` of the test picture (colour bars, a moving block, the step in binary): the same
    for every simulated camera of that size, so a node with many cameras encodes each once (the
    pure-Python encoder takes ~8 ms a frame, time the event loop of a daemon running simulators
    would otherwise lose on every camera's first 32 captures)."""
    cols, rows = width // 8, height // 8
    bar_rows = rows * 2 // 3
    mover = (step * max(1, cols // _DISTINCT_FRAMES)) % cols

    def tile(bx: int, by: int) -> Colour:
        if by < bar_rows:
            return _WHITE if bx == mover else _BARS[bx * len(_BARS) // cols]
        if by == rows - 2 and bx < 5:
            return _WHITE if step >> (4 - bx) & 1 else _BLACK
        return _GREY

    return encode_tiles(cols * 8, rows * 8, tile)


class CameraFault(enum.StrEnum):
    """Misbehaviour on demand for tests."""

    NONE = "none"
    SLOW = "slow"  # answer only after `slow_delay` seconds
    TRUNCATED = "truncated"  # a JPEG cut in half (no EOI), with a matching Content-Length
    NOT_JPEG = "not_jpeg"  # 200 with an HTML page, as some cameras do on errors
    OVERSIZE = "oversize"  # a chunked body that never ends
    WRONG_CREDENTIALS = "wrong_credentials"  # as if someone changed the camera's password
    SERVER_ERROR = "server_error"  # 500


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _parse_auth_params(value: str) -> dict[str, str]:
    params: dict[str, str] = {}
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i] in " ,":
            i += 1
        eq = value.find("=", i)
        if eq < 0:
            break
        key = value[i:eq].strip().lower()
        i = eq + 1
        if i < n and value[i] == '"':
            end = value.find('"', i + 1)
            if end < 0:
                break
            params[key] = value[i + 1 : end]
            i = end + 1
        else:
            end = value.find(",", i)
            end = n if end < 0 else end
            params[key] = value[i:end].strip()
            i = end
    return params


class CameraSimulator:
    """Serves GET `path` with a fresh JPEG per request; `fault` changes behaviour at once."""

    realm = "edge-gateway simulated camera"

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        auth: str = "digest",
        width: int = 320,
        height: int = 240,
        path: str = "/snapshot.jpg",
        stream_path: str = "/video.mjpg",
        stream_fps: float = 10.0,
        host: str = "127.0.0.1",
        port: int = 0,
        slow_delay: float = 30.0,
    ) -> None:
        if auth not in ("digest", "basic", "basic+digest"):
            raise ValueError("auth is 'digest', 'basic' or 'basic+digest'")
        self.username = username
        self.password = password
        self.auth = auth
        self.width = width
        self.height = height
        self.path = path
        self.stream_path = stream_path
        self.stream_fps = stream_fps
        self.stream_url = ""
        self.streams_open = 0
        self.authorized_with: list[str] = []
        self.host = host
        self.port = port
        self.slow_delay = slow_delay
        self.fault = CameraFault.NONE
        # Who stands in front of the simulated camera: stamped into each frame's COM segment for
        # the simulated face comparison (the sample ID card shows person "A").
        self.person = "A"
        self.frames_served = 0
        self.unauthorized = 0
        self._nonces: collections.deque[str] = collections.deque(maxlen=256)
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.url = ""

    async def start(self) -> str:
        """Listen on host:port (0 = a free port) and return the snapshot URL."""
        app = web.Application()
        app.router.add_get(self.path, self._snapshot)
        app.router.add_get(self.stream_path, self._stream)
        self._stopping = asyncio.Event()
        # Handlers end promptly on stop (a slow fault waits on _stopping), so keep this short.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.url = f"http://{self.host}:{self.port}{self.path}"
        self.stream_url = f"http://{self.host}:{self.port}{self.stream_path}"
        return self.url

    async def stop(self) -> None:
        """Close the listener and every open connection."""
        runner, self._runner = self._runner, None
        self._stopping.set()
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> CameraSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- frames ---

    def frame(self, number: int) -> bytes:
        """The JPEG for frame `number`, stamped with a COM segment."""
        base = _picture(self.width, self.height, number % _DISTINCT_FRAMES)
        stamp = f"edge-gateway-sim frame={number} t={time.time():.3f} person={self.person}"
        return with_comment(base, stamp.encode())

    # --- HTTP ---

    def _challenge(self) -> web.Response:
        self.unauthorized += 1
        response = web.Response(status=401, text="401")
        if self.auth in ("basic", "basic+digest"):
            response.headers.add("WWW-Authenticate", f'Basic realm="{self.realm}"')
        if self.auth in ("digest", "basic+digest"):
            nonce = secrets.token_hex(16)
            self._nonces.append(nonce)
            response.headers.add(
                "WWW-Authenticate",
                f'Digest realm="{self.realm}", qop="auth", algorithm=MD5, '
                f'nonce="{nonce}", opaque="{secrets.token_hex(8)}"',
            )
        return response

    def _authorized(self, request: web.Request) -> bool:
        if self.username is None:
            return True
        if self.fault is CameraFault.WRONG_CREDENTIALS:
            return False
        header = request.headers.get("Authorization", "")
        scheme, _, rest = header.partition(" ")
        ok = self._check(request, scheme.lower(), rest)
        if ok:
            self.authorized_with.append(scheme.lower())
        return ok

    def _check(self, request: web.Request, scheme: str, rest: str) -> bool:
        if scheme == "basic":
            if self.auth not in ("basic", "basic+digest"):
                return False
            try:
                user, _, password = base64.b64decode(rest.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return hmac.compare_digest(f"{user}:{password}", f"{self.username}:{self.password}")
        if scheme != "digest" or self.auth not in ("digest", "basic+digest"):
            return False
        p = _parse_auth_params(rest)
        required = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
        if any(k not in p for k in required) or p["nonce"] not in self._nonces:
            return False
        if p["username"] != self.username or p["realm"] != self.realm or p["qop"] != "auth":
            return False
        if p["uri"] != request.path_qs:
            return False
        ha1 = _md5(f"{self.username}:{self.realm}:{self.password or ''}")
        ha2 = _md5(f"{request.method}:{p['uri']}")
        expected = _md5(f"{ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:{p['qop']}:{ha2}")
        return hmac.compare_digest(expected, p["response"])

    async def _snapshot(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._challenge()
        fault = self.fault
        if fault is CameraFault.SLOW:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.slow_delay)
        if fault is CameraFault.SERVER_ERROR:
            return web.Response(status=500, text="encoder busy")
        if fault is CameraFault.NOT_JPEG:
            return web.Response(text="<html><body>Video loss</body></html>", content_type="text/html")
        jpeg = self.frame(self.frames_served)
        self.frames_served += 1
        if fault is CameraFault.TRUNCATED:
            return web.Response(body=jpeg[: len(jpeg) // 2], content_type="image/jpeg")
        if fault is CameraFault.OVERSIZE:
            return await self._endless(request, jpeg)
        return web.Response(body=jpeg, content_type="image/jpeg")

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._challenge()
        boundary = "edgegatewayframe"
        response = web.StreamResponse(
            headers={"Content-Type": f"multipart/x-mixed-replace; boundary={boundary}"}
        )
        await response.prepare(request)
        self.streams_open += 1
        # Ends when the client has its frame and closes; a bounded loop all the same.
        deadline = time.monotonic() + 60.0
        try:
            while time.monotonic() < deadline and not self._stopping.is_set():
                jpeg = self.frame(self.frames_served)
                self.frames_served += 1
                head = (
                    f"--{boundary}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                ).encode()
                await response.write(head + jpeg + b"\r\n")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 1 / self.stream_fps)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            self.streams_open -= 1
        return response

    async def _endless(self, request: web.Request, jpeg: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        filler = jpeg[:-2] + bytes(64 * 1024)
        # Ends when the client stops reading and closes; a bounded loop all the same.
        deadline = time.monotonic() + 60.0
        try:
            while time.monotonic() < deadline and not self._stopping.is_set():
                await response.write(filler)
        except (ConnectionError, RuntimeError):
            pass
        return response
