"""HTTP snapshot camera against the simulated camera (a real aiohttp server on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from drivers.base import DeviceState
from drivers.camera import (
    CameraAuthError,
    CameraTimeout,
    CameraUnreachable,
    CaptureFailed,
    FrameTooLarge,
    HttpCamera,
    InvalidFrame,
)
from drivers.camera.simulator import CameraFault, CameraSimulator

USER, PASSWORD = "operator", "s3cret-Pa55"


async def wait_online(camera: HttpCamera) -> None:
    async with asyncio.timeout(5):
        while camera.status.state is not DeviceState.ONLINE:
            await asyncio.sleep(0.01)


@pytest.fixture
async def sim() -> AsyncIterator[CameraSimulator]:
    async with CameraSimulator(username=USER, password=PASSWORD) as simulator:
        yield simulator


@pytest.fixture
async def camera(sim: CameraSimulator) -> AsyncIterator[HttpCamera]:
    cam = HttpCamera("camera", sim.url, username=USER, password=PASSWORD, timeout=5)
    await cam.start()
    await wait_online(cam)  # start's background probe has captured once
    yield cam
    await cam.close()


async def test_digest_auth_capture(sim: CameraSimulator, camera: HttpCamera) -> None:
    served = sim.frames_served
    first = await camera.capture()
    second = await camera.capture()
    assert (first.width, first.height) == (320, 240)
    assert first.jpeg.startswith(b"\xff\xd8") and first.jpeg.endswith(b"\xff\xd9")
    assert first.jpeg != second.jpeg
    assert second.captured_at >= first.captured_at
    assert sim.frames_served == served + 2
    assert sim.unauthorized >= 1  # the challenge really happened
    assert camera.status.state is DeviceState.ONLINE


async def test_basic_auth_capture() -> None:
    async with CameraSimulator(username=USER, password=PASSWORD, auth="basic") as sim:
        cam = HttpCamera("camera", sim.url, username=USER, password=PASSWORD, auth="basic")
        await cam.start()
        try:
            frame = await cam.capture(timeout=5)
        finally:
            await cam.close()
    assert (frame.width, frame.height) == (320, 240)


@pytest.mark.parametrize(("username", "password"), [(USER, "wrong"), ("intruder", PASSWORD), (None, None)])
async def test_wrong_credentials_are_a_clear_error(
    sim: CameraSimulator, username: str | None, password: str | None
) -> None:
    cam = HttpCamera("camera", sim.url, username=username, password=password)
    await cam.start()
    try:
        with pytest.raises(CameraAuthError, match="credentials") as info:
            await cam.capture(timeout=5)
    finally:
        status = cam.status
        await cam.close()
    assert info.value.code == 401
    assert status.state is DeviceState.HARDWARE_ERROR
    assert sim.frames_served == 0


async def test_password_changed_on_the_camera(sim: CameraSimulator, camera: HttpCamera) -> None:
    await camera.capture()
    sim.fault = CameraFault.WRONG_CREDENTIALS
    with pytest.raises(CameraAuthError):
        await camera.capture()
    sim.fault = CameraFault.NONE
    await camera.capture()
    assert camera.status.state is DeviceState.ONLINE


async def test_slow_camera_times_out(sim: CameraSimulator, camera: HttpCamera) -> None:
    sim.fault = CameraFault.SLOW
    with pytest.raises(CameraTimeout) as info:
        await camera.capture(timeout=0.3)
    assert isinstance(info.value, TimeoutError)
    assert camera.status.state is DeviceState.OFFLINE
    sim.fault = CameraFault.NONE
    assert (await camera.capture()).width == 320


@pytest.mark.parametrize(
    ("fault", "match"),
    [(CameraFault.TRUNCATED, "no EOI"), (CameraFault.NOT_JPEG, "no SOI")],
)
async def test_broken_bodies_are_rejected(
    sim: CameraSimulator, camera: HttpCamera, fault: CameraFault, match: str
) -> None:
    sim.fault = fault
    with pytest.raises(InvalidFrame, match=match) as info:
        await camera.capture()
    assert info.value.device == "camera"
    assert camera.status.last_error is not None


async def test_endless_body_is_cut_off_at_the_limit(sim: CameraSimulator) -> None:
    cam = HttpCamera("camera", sim.url, username=USER, password=PASSWORD, max_bytes=200_000)
    await cam.start()
    try:
        sim.fault = CameraFault.OVERSIZE
        # The body never ends: only stopping at the limit lets this return before the timeout.
        with pytest.raises(FrameTooLarge) as info:
            await cam.capture(timeout=10)
        assert info.value.limit == 200_000
        sim.fault = CameraFault.NONE
        assert (await cam.capture()).height == 240
    finally:
        await cam.close()


async def test_declared_oversize_is_refused_before_reading(sim: CameraSimulator) -> None:
    cam = HttpCamera("camera", sim.url, username=USER, password=PASSWORD, max_bytes=1024)
    await cam.start()
    try:
        with pytest.raises(FrameTooLarge, match="exceeds the 1024-byte limit"):
            await cam.capture()
    finally:
        await cam.close()


async def test_http_error_status(sim: CameraSimulator, camera: HttpCamera) -> None:
    sim.fault = CameraFault.SERVER_ERROR
    with pytest.raises(CaptureFailed, match="HTTP 500") as info:
        await camera.capture()
    assert info.value.code == 500


async def test_unreachable_camera_is_offline() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cam = HttpCamera("camera", f"http://127.0.0.1:{port}/snapshot.jpg")
    await cam.start()
    try:
        with pytest.raises(CameraUnreachable) as info:
            await cam.capture(timeout=5)
        assert info.value.state is DeviceState.OFFLINE
        assert (await cam.probe(timeout=5)).state is DeviceState.OFFLINE
    finally:
        await cam.close()


async def test_start_probes_in_the_background(sim: CameraSimulator) -> None:
    cam = HttpCamera("camera", sim.url, username=USER, password=PASSWORD)
    await cam.start()
    try:
        await wait_online(cam)
        assert sim.frames_served == 1
    finally:
        await cam.close()


async def test_probe_and_close(sim: CameraSimulator, camera: HttpCamera) -> None:
    sim.fault = CameraFault.SERVER_ERROR
    assert (await camera.probe(timeout=5)).last_error == "camera answered HTTP 500"
    await camera.close()
    with pytest.raises(CameraUnreachable, match="closed"):
        await camera.capture()
