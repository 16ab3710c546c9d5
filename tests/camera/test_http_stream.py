"""IP cameras that offer Basic before Digest, MJPEG stream URLs, and hostile HTTP servers.

Real aiohttp servers on 127.0.0.1: the simulated camera (two challenges, an MJPEG stream) and
small hostile apps defined here (no boundary, endless parts, oversized parts, wrong types).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from drivers.camera import (
    CameraAuthError,
    CameraError,
    CaptureFailed,
    FrameTooLarge,
    HttpCamera,
    InvalidFrame,
)
from drivers.camera.mjpeg import FirstFrame, stream_boundary
from drivers.camera.simulator import CameraSimulator

USER, PASSWORD = "operator", "s3cret-Pa55"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def capture(url: str, **kwargs: object) -> tuple[int, int]:
    cam = HttpCamera("camera", url, **kwargs)  # type: ignore[arg-type]
    try:
        frame = await cam.capture(timeout=10)
    finally:
        await cam.close()
    return frame.width, frame.height


@pytest.fixture
async def both() -> AsyncIterator[CameraSimulator]:
    async with CameraSimulator(username=USER, password=PASSWORD, auth="basic+digest") as sim:
        yield sim


async def test_aiohttp_digest_middleware_alone_is_refused(both: CameraSimulator) -> None:
    # The bug this driver works around: the middleware reads only the first (Basic) header.
    digest = aiohttp.DigestAuthMiddleware(USER, PASSWORD)
    async with aiohttp.ClientSession(middlewares=(digest,)) as session, session.get(both.url) as response:
        assert response.status == 401
        assert response.headers.getall("WWW-Authenticate")[0].startswith("Basic")


@pytest.mark.parametrize("mode", ["auto", "digest"])
async def test_basic_first_digest_second_is_answered_with_digest(both: CameraSimulator, mode: str) -> None:
    cam = HttpCamera("camera", both.url, username=USER, password=PASSWORD, auth=mode)  # type: ignore[arg-type]
    try:
        for _ in range(3):
            assert (await cam.capture(timeout=5)).width == 320
    finally:
        await cam.close()
    assert both.authorized_with == ["digest"] * 3
    assert both.unauthorized == 1  # the nonce is reused with a growing nc, not re-challenged


async def test_digest_only_mode_refuses_a_basic_only_camera() -> None:
    async with CameraSimulator(username=USER, password=PASSWORD, auth="basic") as sim:
        with pytest.raises(CameraAuthError, match=r"offered: basic") as info:
            await capture(sim.url, username=USER, password=PASSWORD, auth="digest")
        assert sim.frames_served == 0 and sim.authorized_with == []
        assert info.value.code == 401
        assert await capture(sim.url, username=USER, password=PASSWORD, auth="auto") == (320, 240)
        assert sim.authorized_with == ["basic"]


async def test_wrong_password_with_two_challenges(both: CameraSimulator) -> None:
    with pytest.raises(CameraAuthError, match="refused the credentials"):
        await capture(both.url, username=USER, password="wrong", auth="auto")
    assert both.frames_served == 0


async def test_one_frame_from_the_mjpeg_stream(both: CameraSimulator) -> None:
    assert await capture(both.stream_url, username=USER, password=PASSWORD) == (320, 240)
    async with asyncio.timeout(5):
        while both.streams_open:  # we hung up: the camera's stream ended
            await asyncio.sleep(0.01)
    assert both.frames_served <= 2


async def test_stream_refused_when_configured(both: CameraSimulator) -> None:
    with pytest.raises(CaptureFailed, match=r"MJPEG stream.*snapshot URL") as info:
        await capture(both.stream_url, username=USER, password=PASSWORD, stream="refuse")
    assert info.value.code == "stream"


# --- hostile servers -------------------------------------------------------------------------


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_get("/x", handler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/x"

    yield start
    for runner in runners:
        await runner.cleanup()


def streaming(content_type: str, chunks: Callable[[], AsyncIterator[bytes]]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        try:
            async for chunk in chunks():
                await response.write(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return response

    return handler


async def endless(prefix: bytes = b"", filler: bytes = b"\xab" * 4096) -> AsyncIterator[bytes]:
    yield prefix
    for _ in range(100_000):  # far past any limit; the client must stop first
        yield filler
        await asyncio.sleep(0)


async def test_multipart_without_boundary_parameter(serve: Callable[[Handler], Awaitable[str]]) -> None:
    url = await serve(streaming("multipart/x-mixed-replace", lambda: endless()))
    with pytest.raises(CaptureFailed, match="boundary"):
        await capture(url)


async def test_endless_stream_that_never_shows_its_boundary(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    url = await serve(streaming("multipart/x-mixed-replace; boundary=frame", lambda: endless()))
    with pytest.raises(CaptureFailed, match="no boundary line") as info:
        await capture(url)
    assert info.value.code == "no_boundary"


async def test_part_without_length_that_never_ends(serve: Callable[[Handler], Awaitable[str]]) -> None:
    head = b"--frame\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8"
    url = await serve(streaming("multipart/x-mixed-replace; boundary=frame", lambda: endless(head)))
    with pytest.raises(FrameTooLarge, match="reading stopped") as info:
        await capture(url, max_bytes=100_000)
    assert info.value.limit == 100_000 and info.value.device == "camera"


async def test_part_declaring_an_oversized_length(serve: Callable[[Handler], Awaitable[str]]) -> None:
    head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 999999999\r\n\r\n"
    url = await serve(streaming("multipart/x-mixed-replace; boundary=frame", lambda: endless(head)))
    with pytest.raises(FrameTooLarge, match="999999999 bytes exceeds"):
        await capture(url, max_bytes=100_000)


async def test_parts_of_the_wrong_type(serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def parts() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"--frame\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello\r\n"

    url = await serve(streaming("multipart/x-mixed-replace; boundary=frame", parts))
    with pytest.raises(CaptureFailed, match=r"no image/jpeg part .*text/plain"):
        await capture(url)


async def test_wrong_top_level_content_type(serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": "no video"})

    url = await serve(handler)
    with pytest.raises(InvalidFrame, match="application/json"):
        await capture(url)


async def test_stream_that_ends_mid_frame(serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def cut() -> AsyncIterator[bytes]:
        yield b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\n\xff\xd8\x00"

    url = await serve(streaming("multipart/x-mixed-replace; boundary=frame", cut))
    with pytest.raises(CaptureFailed, match="ended before a whole frame"):
        await capture(url)


async def test_stream_part_that_is_not_a_jpeg(serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def junk() -> AsyncIterator[bytes]:
        yield b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 4\r\n\r\nJUNK\r\n"
        await asyncio.sleep(30)

    url = await serve(streaming("multipart/x-mixed-replace; boundary=frame", junk))
    with pytest.raises(InvalidFrame, match="no SOI"):
        await capture(url)


@pytest.mark.parametrize("header", [None, "Negotiate", 'Digest realm="x"', "Basic"])
async def test_401_we_cannot_answer(serve: Callable[[Handler], Awaitable[str]], header: str | None) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=401, headers={"WWW-Authenticate": header} if header else {})

    url = await serve(handler)
    with pytest.raises(CameraAuthError) as info:
        await capture(url, username=USER, password=PASSWORD, auth="digest")
    assert info.value.code == 401


# --- the frame parser on its own --------------------------------------------------------------


def test_parser_byte_by_byte_with_lf_framing_and_doubled_boundary() -> None:
    body = b"\xff\xd8jpeg bytes \r\n--not-it \xff\xd9"
    stream = b"preamble\n----cam\nContent-Type: image/jpeg\n\n" + body + b"\n----cam\n"
    parser = FirstFrame(stream_boundary('multipart/x-mixed-replace;boundary="--cam"'), max_bytes=1000)
    got = None
    for i in range(len(stream)):
        got = parser.feed(stream[i : i + 1])
        if got is not None:
            break
    assert got == body


def test_parser_skips_a_leading_non_image_part_and_takes_parts_without_headers() -> None:
    parser = FirstFrame("b", max_bytes=1000)
    stream = b"--b\r\nContent-Type: text/plain\r\n\r\nmeta\r\n--b\r\n\r\n\xff\xd8x\xff\xd9\r\n--b\r\n"
    assert parser.feed(stream) == b"\xff\xd8x\xff\xd9"


@pytest.mark.parametrize("length", ["-1", "ten"])
def test_parser_rejects_bad_lengths(length: str) -> None:
    parser = FirstFrame("b", max_bytes=1000)
    with pytest.raises(CaptureFailed, match="Content-Length"):
        parser.feed(f"--b\r\nContent-Length: {length}\r\n\r\n".encode())


@given(st.lists(st.binary(max_size=3000), max_size=20), st.sampled_from(["b", "--b", "frame"]))
def test_parser_on_junk_fails_only_with_camera_errors_and_stays_bounded(
    chunks: list[bytes], boundary: str
) -> None:
    parser = FirstFrame(boundary, max_bytes=4096)
    try:
        for chunk in chunks:
            if parser.feed(chunk) is not None:
                return
            assert parser.buffered <= 64 * 1024 + 3000
    except CameraError:
        pass


def test_parser_rejects_endless_headers() -> None:
    parser = FirstFrame("b", max_bytes=1000)
    with pytest.raises(CaptureFailed, match="headers too long"):
        parser.feed(b"--b\r\n" + b"X-Pad: " + b"a" * 10_000)
